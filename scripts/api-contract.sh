#!/usr/bin/env bash
# The API against its own OpenAPI document: starts the server with the example
# configuration (deploy/agentpkg.toml) on PostgreSQL and the local Garage, and runs
# schemathesis (pinned, from PyPI, in .tools/venv: see scripts/tools.sh) over every operation with an admin token. It
# fails on any 5xx, any response that does not match its documented schema, content type
# or headers, and any undocumented status code. Afterwards the bucket and the table must
# agree exactly: whatever schemathesis sent, nothing was half-stored.
#
# Needs: ./scripts/s3-up.sh run first (its .garage/env), PostgreSQL at
# $AGENTPKG_TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres), and a built
# server binary ($AGENTPKG_BIN, default target/debug/agentpkg-server).
# AGENTPKG_CONTRACT_EXAMPLES sets the test cases per operation (default 100).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${AGENTPKG_BIN:-$ROOT/target/debug/agentpkg-server}
PG_ADMIN_URL=${AGENTPKG_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
EXAMPLES=${AGENTPKG_CONTRACT_EXAMPLES:-100}

log() { printf 'api-contract: %s\n' "$*" >&2; }

VENV=$(./scripts/tools.sh)
[ -x "$BIN" ] || { log "no server binary at $BIN (cargo build -p agentpkg-server)"; exit 1; }

set -a
# shellcheck source=/dev/null
. "${AGENTPKG_GARAGE_DIR:-.garage}/env"
set +a

work=$(mktemp -d)
suffix=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
db="agentpkg_contract_$suffix"
bucket="agentpkg-contract-$suffix"
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  "$VENV/bin/python" - "$PG_ADMIN_URL" "$db" <<'PY' || true
import sys, subprocess
subprocess.run(["psql", "-q", sys.argv[1], "-c", f'DROP DATABASE IF EXISTS "{sys.argv[2]}" WITH (FORCE)'],
               check=False, stdout=subprocess.DEVNULL)
PY
  if [ -n "${AGENTPKG_CONTRACT_KEEP:-}" ]; then cp "$work/server.log" "$AGENTPKG_CONTRACT_KEEP"; fi
  rm -rf "$work"
}
trap cleanup EXIT

psql -q "$PG_ADMIN_URL" -c "CREATE DATABASE \"$db\"" >/dev/null
db_url="${PG_ADMIN_URL%/*}/$db"
port=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
admin_password=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')

# The example configuration, with only what differs on this machine (and the secrets)
# from the environment, as an operator would run it.
export AGENTPKG__SERVER__BIND="127.0.0.1:$port"
export AGENTPKG__DATABASE__URL="$db_url"
export AGENTPKG__STORAGE__BACKEND=s3
export AGENTPKG__STORAGE__S3__ENDPOINT="$AGENTPKG_TEST_S3_ENDPOINT"
export AGENTPKG__STORAGE__S3__REGION="$AGENTPKG_TEST_S3_REGION"
export AGENTPKG__STORAGE__S3__BUCKET="$bucket"
export AGENTPKG__STORAGE__S3__ACCESS_KEY="$AGENTPKG_TEST_S3_ACCESS_KEY"
export AGENTPKG__STORAGE__S3__SECRET_KEY="$AGENTPKG_TEST_S3_SECRET_KEY"
export AGENTPKG__AUTH__JWT_SECRET
AGENTPKG__AUTH__JWT_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
export AGENTPKG__AUTH__ADMIN_PASSWORD="$admin_password"
export AGENTPKG__LOG__LEVEL=warn

"$BIN" --config deploy/agentpkg.toml >"$work/server.log" 2>&1 &
server_pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
  if curl -fsS "$base/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    log "the server did not start with deploy/agentpkg.toml:"; cat "$work/server.log" >&2; exit 1
  fi
  sleep 0.2
done
curl -fsS "$base/readyz" >/dev/null
log "server up with deploy/agentpkg.toml at $base (PostgreSQL $db, bucket $bucket)"

token=$(curl -fsS "$base/api/v1/auth/login" -H 'Content-Type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$admin_password\"}" |
  "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["token"])')

status=0
# tus bodies (application/offset+octet-stream) are generated as octet streams.
PYTHONPATH="$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}" SCHEMATHESIS_HOOKS=schemathesis_hooks \
"$VENV/bin/st" run "$base/api/v1/openapi.json" \
  --url "$base" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --max-examples "$EXAMPLES" \
  --seed "${AGENTPKG_CONTRACT_SEED:-20261126}" \
  --workers 1 \
  --request-timeout 30 \
  --generation-database none \
  --no-color \
  --output-sanitize true 2>&1 | tee "$work/st.log" || status=$?

# Which operations the run got through to success (from the server's own metrics).
curl -fsS -H "Authorization: Bearer $token" "$base/metrics" |
  grep '^http_requests_total.*status="2' | sed 's/^http_requests_total//' | sort >&2 || true

if grep -q "panicked" "$work/server.log"; then
  log "the server panicked:"; grep -A5 panicked "$work/server.log" >&2; status=1
fi
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=

# Whatever was sent, the bucket and the table agree: no orphan object, no row without
# its object (gc exits non-zero on a missing object).
report=$("$BIN" --config deploy/agentpkg.toml gc --dry-run --grace-secs 0 2>>"$work/server.log")
orphans=$(printf '%s' "$report" | "$VENV/bin/python" -c 'import json,sys; r=json.load(sys.stdin); print(len(r["orphans_removed"]) + len(r.get("incomplete_removed", [])))')
if [ "$orphans" != 0 ]; then
  log "objects without a package after the run:"; printf '%s\n' "$report" >&2; status=1
fi
if [ "$status" != 0 ]; then
  log "server log:"; tail -50 "$work/server.log" >&2
  exit "$status"
fi
log "schemathesis found nothing; bucket and table agree"
cases=$(sed -n 's/^ *\([0-9]*\) generated, \([0-9]*\) passed.*/\2/p' "$work/st.log" | tail -1)
echo "schemathesis: ${cases:-0} passed, 0 failed"
