#!/usr/bin/env bash
# A simulated fleet for trying progressive rollouts: AGENTS scripted OpAMP agents (the
# OpenTelemetry OpAMP client's protobuf classes from PyPI, one in three over WebSocket),
# service.name "rollout", linux/amd64, each reporting its health and package statuses.
# Offered TARGET, one agent in UNHEALTHY_EVERY (0: none) installs it and turns unhealthy;
# every other version installs and stays healthy. Runs until Ctrl-C, then prints where
# each agent stands.
#
#   AGENT_TOKEN=<read token> scripts/demo-fleet.sh [AGENTS] [TARGET] [UNHEALTHY_EVERY] [URL]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
AGENTS=${1:-50}
TARGET=${2:-0.115.1}
UNHEALTHY_EVERY=${3:-0}
URL=${4:-http://localhost:8080}
: "${AGENT_TOKEN:?set AGENT_TOKEN to a read token (POST /api/v1/tokens with scope read)}"
VENV=$("$ROOT/scripts/tools.sh")
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
python3 - "$AGENTS" "$TARGET" >"$DIR/spec.json" <<'PY'
import json, sys
n, target = int(sys.argv[1]), sys.argv[2]
agents = [{"uid": "%032x" % (0xdeadbeef0000 + i), "transport": "ws" if i % 3 == 0 else "http",
           "behaviour": "ok"} for i in range(n)]
print(json.dumps({"target": target, "interval": 2.0, "agents": agents, "max_secs": 86400}))
PY
if [ "$UNHEALTHY_EVERY" != 0 ]; then
  printf '{"behaviour": "unhealthy", "every": %s}' "$UNHEALTHY_EVERY" >"$DIR/control.json"
fi
echo "demo-fleet: $AGENTS agents on $URL/v1/opamp; Ctrl-C stops them" >&2
"$VENV/bin/python" "$ROOT/crates/server/tests/opamp/rollout_fleet.py" "$URL/v1/opamp" \
  "${URL/http/ws}/v1/opamp" "$AGENT_TOKEN" "$DIR/spec.json" "$DIR/state.json" "$DIR/stop" \
  "$DIR/control.json" &
pid=$!
trap 'touch "$DIR/stop"' INT TERM
wait "$pid" || wait "$pid"
python3 - "$DIR/state.json" <<'PY'
import collections, json, sys
state = json.load(open(sys.argv[1]))
runs = collections.Counter((a["has"] or "nothing", "healthy" if a["healthy"] else "unhealthy") for a in state.values())
for (version, health), n in sorted(runs.items()):
    print(f"{n:5} agents run {version}, {health}")
PY
