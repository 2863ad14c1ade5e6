"""An OpAMP agent over WebSocket that waits for offers the server pushes, for the tests:
the websockets library (PyPI) carries the frames, and the protobuf classes that
opentelemetry-opamp-client ships encode and decode them.

    ws_push_agent.py WS_URL TOKEN UID_HEX PUSHES

Sends its full state (it accepts packages and reports their statuses, linux/amd64), then
sends nothing until the server pushes an offer. For each one it prints a JSON line and
reports the offered versions Installed, as an agent that installed them would; after
PUSHES offers, and the answer to its last report, it says goodbye. Every frame it receives is printed, marked "pushed" when
the agent had sent nothing it was still waiting an answer to.
"""

import asyncio
import json
import sys
import time

import websockets
from opentelemetry._opamp.proto import anyvalue_pb2, opamp_pb2


def kv(key, value):
    return anyvalue_pb2.KeyValue(key=key, value=anyvalue_pb2.AnyValue(string_value=value))


async def main():
    url, token, uid, pushes = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3]), int(sys.argv[4])
    caps = (
        opamp_pb2.AgentCapabilities_ReportsStatus
        | opamp_pb2.AgentCapabilities_AcceptsPackages
        | opamp_pb2.AgentCapabilities_ReportsPackageStatuses
    )
    description = opamp_pb2.AgentDescription(
        identifying_attributes=[kv("service.name", "ws-push")],
        non_identifying_attributes=[kv("os.type", "linux"), kv("host.arch", "amd64")],
    )
    async with websockets.connect(
        url, additional_headers={"Authorization": "Bearer " + token}
    ) as ws:
        seq = 0
        awaiting = 0

        async def send(**fields):
            nonlocal seq, awaiting
            message = opamp_pb2.AgentToServer(
                instance_uid=uid, sequence_num=seq, capabilities=caps, **fields
            )
            seq += 1
            awaiting += 1
            await ws.send(b"\x00" + message.SerializeToString())

        await send(agent_description=description)
        received = 0
        while received < pushes or awaiting:
            frame = await asyncio.wait_for(ws.recv(), timeout=60)
            pushed = awaiting == 0
            awaiting = max(0, awaiting - 1)
            answer = opamp_pb2.ServerToAgent()
            answer.ParseFromString(frame[1:])
            line = {
                "pushed": pushed,
                "at": time.time(),
                "header": frame[0],
                "instance_uid": answer.instance_uid.hex(),
                "offered": None,
            }
            if answer.HasField("packages_available"):
                available = answer.packages_available
                line["offered"] = {name: p.version for name, p in available.packages.items()}
                line["all_hash"] = available.all_packages_hash.hex()
            print(json.dumps(line), flush=True)
            if not pushed or line["offered"] is None:
                continue
            received += 1
            statuses = opamp_pb2.PackageStatuses(
                server_provided_all_packages_hash=available.all_packages_hash
            )
            for name, p in available.packages.items():
                statuses.packages[name].CopyFrom(
                    opamp_pb2.PackageStatus(
                        name=name,
                        agent_has_version=p.version,
                        agent_has_hash=p.hash,
                        server_offered_version=p.version,
                        server_offered_hash=p.hash,
                        status=opamp_pb2.PackageStatusEnum_Installed,
                    )
                )
            await send(package_statuses=statuses)
        await send(agent_disconnect=opamp_pb2.AgentDisconnect())
        await asyncio.wait_for(ws.recv(), timeout=60)


asyncio.run(main())
