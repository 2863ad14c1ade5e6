"""Many scripted OpAMP agents in one process, for the rollout tests; messages built and
answers read with the protobuf classes opentelemetry-opamp-client ships.

    many_agents.py ENDPOINT TOKEN COUNT STATE_FILE MODE

Agent i has the instance uid of i (16 bytes), service.name "fleet", linux/amd64; what each
has installed and was last offered is kept in STATE_FILE between runs. Each agent sends its
full state with its package statuses; when offered a new top-level package it reports
Installed, or, with MODE "fail:K", InstallFailed for all but the first K agents offered
one in this run. Prints {uid: version offered in this run, or null}.
"""

import json
import os
import sys

import requests
from opentelemetry._opamp.proto import anyvalue_pb2, opamp_pb2

CAPS = (
    opamp_pb2.AgentCapabilities_ReportsStatus
    | opamp_pb2.AgentCapabilities_AcceptsPackages
    | opamp_pb2.AgentCapabilities_ReportsPackageStatuses
)


def kv(key, value):
    return anyvalue_pb2.KeyValue(key=key, value=anyvalue_pb2.AnyValue(string_value=value))


def main():
    endpoint, token, count, state_file, mode = sys.argv[1:6]
    succeed = int(mode.split(":")[1]) if mode.startswith("fail:") else None
    state = json.load(open(state_file)) if os.path.exists(state_file) else {}
    session = requests.Session()
    session.headers.update(
        {"Content-Type": "application/x-protobuf", "Authorization": "Bearer " + token}
    )
    description = opamp_pb2.AgentDescription(
        identifying_attributes=[kv("service.name", "fleet")],
        non_identifying_attributes=[kv("os.type", "linux"), kv("host.arch", "amd64")],
    )

    def send(uid, agent, **fields):
        message = opamp_pb2.AgentToServer(
            instance_uid=bytes.fromhex(uid), sequence_num=agent["seq"], capabilities=CAPS, **fields
        )
        agent["seq"] += 1
        res = session.post(endpoint, data=message.SerializeToString(), timeout=30)
        res.raise_for_status()
        answer = opamp_pb2.ServerToAgent()
        answer.ParseFromString(res.content)
        return answer

    def statuses(agent):
        s = opamp_pb2.PackageStatuses(
            server_provided_all_packages_hash=bytes.fromhex(agent["all_hash"])
        )
        if agent["offered"]:
            s.packages[""].CopyFrom(
                opamp_pb2.PackageStatus(
                    name="",
                    agent_has_version=agent["has"],
                    agent_has_hash=bytes.fromhex(agent["has_hash"]),
                    server_offered_version=agent["offered"],
                    server_offered_hash=bytes.fromhex(agent["offered_hash"]),
                    status=agent["status"],
                    error_message=agent["error"],
                )
            )
        return s

    offered_now = {}
    succeeded = 0
    for i in range(int(count)):
        uid = "%032x" % (i + 1)
        agent = state.setdefault(
            uid,
            {"seq": 0, "has": "", "has_hash": "", "offered": "", "offered_hash": "",
             "all_hash": "", "status": 0, "error": ""},
        )
        answer = send(uid, agent, agent_description=description, package_statuses=statuses(agent))
        offered_now[uid] = None
        if not answer.HasField("packages_available"):
            continue
        available = answer.packages_available
        agent["all_hash"] = available.all_packages_hash.hex()
        top = available.packages.get("")
        if top is None or top.hash.hex() == agent["has_hash"]:
            continue
        offered_now[uid] = top.version
        agent["offered"], agent["offered_hash"] = top.version, top.hash.hex()
        if succeed is None or succeeded < succeed:
            succeeded += 1
            agent["has"], agent["has_hash"] = top.version, top.hash.hex()
            agent["status"], agent["error"] = opamp_pb2.PackageStatusEnum_Installed, ""
        else:
            agent["status"] = opamp_pb2.PackageStatusEnum_InstallFailed
            agent["error"] = "exit status 3 while starting %s" % top.version
        send(uid, agent, package_statuses=statuses(agent))
    json.dump(state, open(state_file, "w"))
    print(json.dumps(offered_now), flush=True)


if __name__ == "__main__":
    main()
