"""Drives tuspy (the tus project's Python client) against the registry, for the tests.

    tuspy_client.py start  ENDPOINT TOKEN FILE METADATA_JSON   # upload chunk by chunk
    tuspy_client.py resume URL      TOKEN FILE                 # continue a stored upload

`start` prints `url <upload URL>` once the upload exists, then `offset <n>` after each
chunk (8 MiB), so that a test can kill it part-way. `resume` asks the server where the
upload stands and sends the rest; it prints `done <offset>`.
"""

import json
import sys

from tusclient import client

CHUNK = 8 * 1024 * 1024


def main():
    mode, target, token, path = sys.argv[1:5]
    headers = {"Authorization": "Bearer " + token}
    if mode == "start":
        tus = client.TusClient(target, headers=headers)
        metadata = json.loads(sys.argv[5])
        uploader = tus.uploader(path, chunk_size=CHUNK, metadata=metadata, retries=0)
        uploader.set_url(uploader.create_url())
        print("url", uploader.url, flush=True)
        uploader.offset = 0
        size = uploader.get_file_size()
        while uploader.offset < size:
            uploader.upload_chunk()
            print("offset", uploader.offset, flush=True)
    elif mode == "resume":
        tus = client.TusClient(target.rsplit("/", 1)[0], headers=headers)
        uploader = tus.uploader(path, chunk_size=CHUNK, url=target, retries=0)
        print("resumed", uploader.offset, flush=True)
        uploader.upload()
        print("done", uploader.offset, flush=True)
    else:
        raise SystemExit("unknown mode " + mode)


if __name__ == "__main__":
    main()
