"""An agent built on opentelemetry-opamp-client (OpenTelemetry's Python OpAMP client), for
the tests: its OpAMPClient builds and encodes every message, and its generated protobuf
classes decode the server's answers, so neither direction of the wire format is ours.

    python_agent.py ENDPOINT TOKEN SERVICE_NAME

Sends the full state, then a heartbeat (after a pause), then a disconnect, and prints one
JSON line per answer: the instance uid, capabilities, flags, and any error_response.
"""

import json
import sys
import time

from opentelemetry._opamp.client import OpAMPClient
from opentelemetry._opamp.proto import opamp_pb2


def show(step, client, answer):
    print(
        json.dumps(
            {
                "step": step,
                "sent_uid": client._instance_uid.hex(),
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


def main():
    endpoint, token, service = sys.argv[1:4]
    capabilities = (
        opamp_pb2.AgentCapabilities.AgentCapabilities_ReportsStatus
        | opamp_pb2.AgentCapabilities.AgentCapabilities_AcceptsPackages
        | opamp_pb2.AgentCapabilities.AgentCapabilities_ReportsPackageStatuses
    )
    client = OpAMPClient(
        endpoint=endpoint,
        headers={"Authorization": "Bearer " + token},
        agent_identifying_attributes={"service.name": service, "service.instance.id": "i-1"},
        agent_non_identifying_attributes={"os.type": "linux", "host.arch": "amd64"},
        capabilities=capabilities,
    )
    show("full_state", client, client.send(client.build_full_state_message()))
    time.sleep(1.2)
    show("heartbeat", client, client.send(client.build_heartbeat_message()))
    show("disconnect", client, client.send(client.build_agent_disconnect_message()))


if __name__ == "__main__":
    main()
