"""An OpAMP agent over the WebSocket transport, for the tests: the websockets library
(PyPI) carries the frames, and the protobuf classes opentelemetry-opamp-client ships
encode and decode them, so neither the framing nor the encoding is agentpkg's.

    ws_agent.py WS_URL TOKEN UID_HEX

Each binary frame is the OpAMP header (a varint, 0) and then the message. Sends its full
state, a heartbeat and a disconnect, and prints what it got back as JSON lines; a frame
that breaks the framing is sent last when asked ("bad"), and what came back is printed.
"""

import asyncio
import json
import sys

import websockets
from opentelemetry._opamp.proto import anyvalue_pb2, opamp_pb2


def kv(key, value):
    return anyvalue_pb2.KeyValue(key=key, value=anyvalue_pb2.AnyValue(string_value=value))


async def main():
    url, token, uid = sys.argv[1:4]
    bad = len(sys.argv) > 4 and sys.argv[4] == "bad"
    caps = opamp_pb2.AgentCapabilities_ReportsStatus
    description = opamp_pb2.AgentDescription(
        identifying_attributes=[kv("service.name", "ws-agent")],
        non_identifying_attributes=[kv("os.type", "linux"), kv("host.arch", "amd64")],
    )
    async with websockets.connect(
        url, additional_headers={"Authorization": "Bearer " + token}
    ) as ws:
        seq = 0

        async def exchange(step, **fields):
            nonlocal seq
            message = opamp_pb2.AgentToServer(
                instance_uid=bytes.fromhex(uid), sequence_num=seq, capabilities=caps, **fields
            )
            seq += 1
            await ws.send(b"\x00" + message.SerializeToString())
            frame = await ws.recv()
            answer = opamp_pb2.ServerToAgent()
            answer.ParseFromString(frame[1:])
            print(
                json.dumps(
                    {
                        "step": step,
                        "header": frame[0],
                        "instance_uid": answer.instance_uid.hex(),
                        "capabilities": answer.capabilities,
                        "flags": answer.flags,
                        "error": answer.error_response.error_message
                        if answer.HasField("error_response")
                        else None,
                    }
                ),
                flush=True,
            )

        await exchange("full_state", agent_description=description)
        await exchange("heartbeat")
        if bad:
            await ws.send(b"\x00\xff\xff\xff not protobuf")
            try:
                frame = await ws.recv()
                print(json.dumps({"step": "bad", "answer": frame.hex()}), flush=True)
            except websockets.ConnectionClosed as closed:
                print(json.dumps({"step": "bad", "closed": closed.rcvd.code if closed.rcvd else None}), flush=True)
            return
        await exchange("disconnect", agent_disconnect=opamp_pb2.AgentDisconnect())


asyncio.run(main())
