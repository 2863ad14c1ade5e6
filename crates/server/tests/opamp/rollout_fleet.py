"""A fleet of scripted OpAMP agents for the progressive-rollout tests and demonstrations:
messages built and answers read with the protobuf classes opentelemetry-opamp-client
(PyPI) ships; HTTP through requests, WebSocket through the websockets library.

    rollout_fleet.py HTTP_URL WS_URL TOKEN SPEC_FILE STATE_FILE STOP_FILE [CONTROL_FILE]

SPEC_FILE (JSON): {"target": "2.0.0", "interval": 0.5, "agents": [{"uid": "<32 hex>",
"transport": "http" | "ws", "behaviour": "ok" | "fail_install" | "fail_once" |
"unhealthy" | "silent"}, ...]}. Every agent is service.name "rollout", linux/amd64, reports
its health, accepts packages and reports their statuses. Offered any version but the
target, it installs it and stays healthy. Offered the target:

- ok: installs it and stays healthy;
- fail_install: reports the install failed, at every attempt;
- fail_once: reports the first attempt failed, installs it when offered again;
- unhealthy: installs it, then reports itself unhealthy;
- silent: stops sending anything.

While CONTROL_FILE exists and names a behaviour ({"behaviour": "unhealthy", "every": 3}),
one agent in `every` (by uid) offered the target from then on behaves so instead.

Each agent sends its full state first, then a heartbeat every `interval` seconds, and its
health and package statuses whenever they changed (or the server asks for its full
state). When STOP_FILE appears, the state of every agent is written to STATE_FILE as
{uid: {"has", "healthy", "silent", "events": [[time, what, version], ...]}} and the
process ends.
"""

import asyncio
import concurrent.futures
import json
import os
import random
import sys
import time

import requests
import websockets
from opentelemetry._opamp.proto import anyvalue_pb2, opamp_pb2

CAPS = (
    opamp_pb2.AgentCapabilities_ReportsStatus
    | opamp_pb2.AgentCapabilities_AcceptsPackages
    | opamp_pb2.AgentCapabilities_ReportsPackageStatuses
    | opamp_pb2.AgentCapabilities_ReportsHealth
)


def kv(key, value):
    return anyvalue_pb2.KeyValue(key=key, value=anyvalue_pb2.AnyValue(string_value=value))


DESCRIPTION = opamp_pb2.AgentDescription(
    identifying_attributes=[kv("service.name", "rollout")],
    non_identifying_attributes=[kv("os.type", "linux"), kv("host.arch", "amd64")],
)


class Agent:
    def __init__(self, spec, target, control_file):
        self.uid = spec["uid"]
        self.transport = spec["transport"]
        self.behaviour = spec["behaviour"]
        self.target = target
        self.control_file = control_file
        self.seq = 0
        self.has = ""
        self.has_hash = b""
        self.offered = ""
        self.offered_hash = b""
        self.status = opamp_pb2.PackageStatusEnum_Installed
        self.error = ""
        self.all_hash = b""
        self.healthy = True
        self.last_error = ""
        self.silent = False
        self.target_attempts = 0
        self.full = True
        self.dirty = True
        self.events = []

    def event(self, what, version=""):
        self.events.append([time.time(), what, version])

    def behaviour_now(self):
        if self.control_file and os.path.exists(self.control_file):
            try:
                control = json.load(open(self.control_file))
            except ValueError:
                control = {}
            if control.get("behaviour") and int(self.uid, 16) % control.get("every", 1) == 0:
                return control["behaviour"]
        return self.behaviour

    def message(self):
        fields = {}
        if self.full:
            fields["agent_description"] = DESCRIPTION
        if self.full or self.dirty:
            fields["health"] = opamp_pb2.ComponentHealth(
                healthy=self.healthy,
                status="ok" if self.healthy else "degraded",
                last_error=self.last_error,
            )
            statuses = opamp_pb2.PackageStatuses(server_provided_all_packages_hash=self.all_hash)
            if self.offered or self.has:
                statuses.packages[""].CopyFrom(
                    opamp_pb2.PackageStatus(
                        name="",
                        agent_has_version=self.has,
                        agent_has_hash=self.has_hash,
                        server_offered_version=self.offered,
                        server_offered_hash=self.offered_hash,
                        status=self.status,
                        error_message=self.error,
                    )
                )
            fields["package_statuses"] = statuses
        self.full = self.dirty = False
        message = opamp_pb2.AgentToServer(
            instance_uid=bytes.fromhex(self.uid), sequence_num=self.seq, capabilities=CAPS, **fields
        )
        self.seq += 1
        return message

    def answer(self, answer):
        if answer.flags & opamp_pb2.ServerToAgentFlags_ReportFullState:
            self.full = True
        if not answer.HasField("packages_available"):
            return
        available = answer.packages_available
        self.all_hash = available.all_packages_hash
        self.dirty = True
        top = available.packages.get("")
        if top is None:
            if self.has:
                self.event("removed", self.has)
            self.has, self.has_hash, self.offered, self.offered_hash = "", b"", "", b""
            return
        if top.hash == self.offered_hash and top.hash == self.has_hash:
            return
        if top.hash == self.offered_hash and self.status == opamp_pb2.PackageStatusEnum_InstallFailed:
            return
        self.offered, self.offered_hash = top.version, top.hash
        self.event("offered", top.version)
        behaviour = self.behaviour_now() if top.version.lstrip("v") == self.target else "ok"
        if behaviour == "silent":
            self.silent = True
            self.event("silent", top.version)
            return
        if top.version.lstrip("v") == self.target:
            self.target_attempts += 1
        fails = behaviour == "fail_install" or (behaviour == "fail_once" and self.target_attempts == 1)
        if fails:
            self.status = opamp_pb2.PackageStatusEnum_InstallFailed
            self.error = "exit status 3 while starting %s" % top.version
            self.event("install_failed", top.version)
            return
        self.has, self.has_hash = top.version, top.hash
        self.status, self.error = opamp_pb2.PackageStatusEnum_Installed, ""
        self.healthy = behaviour != "unhealthy"
        self.last_error = "" if self.healthy else "exporter otlp failing since %s" % top.version
        self.event("installed", top.version)
        if not self.healthy:
            self.event("unhealthy", top.version)

    def state(self):
        return {
            "has": self.has.lstrip("v"),
            "healthy": self.healthy,
            "silent": self.silent,
            "transport": self.transport,
            "behaviour": self.behaviour,
            "events": self.events,
        }


async def run_http(agent, url, token, interval, stop, pool):
    session = requests.Session()
    session.headers.update(
        {"Content-Type": "application/x-protobuf", "Authorization": "Bearer " + token}
    )
    loop = asyncio.get_running_loop()
    await asyncio.sleep(random.random() * interval)
    while not stop.is_set() and not agent.silent:
        body = agent.message().SerializeToString()
        try:
            res = await loop.run_in_executor(
                pool, lambda: session.post(url, data=body, timeout=30)
            )
            res.raise_for_status()
            answer = opamp_pb2.ServerToAgent()
            answer.ParseFromString(res.content)
            agent.answer(answer)
        except Exception as e:  # the server may be restarting: try again next round
            agent.event("error", str(e)[:200])
            agent.full = True
        await asyncio.sleep(interval * (0.8 + 0.4 * random.random()))


async def run_ws(agent, url, token, interval, stop):
    await asyncio.sleep(random.random() * interval)
    while not stop.is_set() and not agent.silent:
        try:
            async with websockets.connect(
                url, additional_headers={"Authorization": "Bearer " + token}, open_timeout=30
            ) as ws:
                agent.full = True

                async def read():
                    async for frame in ws:
                        answer = opamp_pb2.ServerToAgent()
                        answer.ParseFromString(frame[1:])
                        agent.answer(answer)

                reader = asyncio.create_task(read())
                while not stop.is_set() and not agent.silent and not reader.done():
                    await ws.send(b"\x00" + agent.message().SerializeToString())
                    await asyncio.sleep(interval * (0.8 + 0.4 * random.random()))
                reader.cancel()
        except Exception as e:  # reconnect, as an agent would
            agent.event("error", str(e)[:200])
            await asyncio.sleep(interval)


async def main():
    http_url, ws_url, token, spec_file, state_file, stop_file = sys.argv[1:7]
    control_file = sys.argv[7] if len(sys.argv) > 7 else None
    spec = json.load(open(spec_file))
    interval = spec.get("interval", 0.5)
    agents = [Agent(a, spec["target"], control_file) for a in spec["agents"]]
    stop = asyncio.Event()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=16)
    tasks = [
        asyncio.create_task(
            run_http(a, http_url, token, interval, stop, pool)
            if a.transport == "http"
            else run_ws(a, ws_url, token, interval, stop)
        )
        for a in agents
    ]
    deadline = time.time() + spec.get("max_secs", 600)
    while not os.path.exists(stop_file) and time.time() < deadline:
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait(tasks, timeout=30)
    tmp = state_file + ".tmp"
    json.dump({a.uid: a.state() for a in agents}, open(tmp, "w"))
    os.replace(tmp, state_file)
    pool.shutdown(wait=False, cancel_futures=True)


if __name__ == "__main__":
    asyncio.run(main())
