"""schemathesis hooks for scripts/api-contract.sh (loaded through SCHEMATHESIS_HOOKS).

tus sends its bytes as application/offset+octet-stream, and OpAMP its messages as
application/x-protobuf: generate both as schemathesis does for application/octet-stream
(arbitrary bytes, which the server must refuse cleanly or decode).
"""

import schemathesis

schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
schemathesis.serializer.alias("application/x-protobuf", "application/octet-stream")
