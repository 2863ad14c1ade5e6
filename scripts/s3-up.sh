#!/usr/bin/env bash
# Starts a single-node Garage S3 server for development and tests, installing Garage first
# when this machine does not have it (once per machine and build: see BUILD below).
#
# State lives in $AGENTPKG_GARAGE_DIR (default: .garage/ in the checkout). The S3 endpoint
# and a key allowed to create buckets are written to $AGENTPKG_GARAGE_DIR/env as
# AGENTPKG_TEST_S3_* variables; source that file to use them.
set -euo pipefail

GARAGE_VERSION=2.5.0
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${AGENTPKG_GARAGE_DIR:-$ROOT/.garage}
S3_PORT=${AGENTPKG_GARAGE_S3_PORT:-3900}
RPC_PORT=${AGENTPKG_GARAGE_RPC_PORT:-3901}
CFG=$DIR/garage.toml
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf 's3-up: %s\n' "$*" >&2; }

# Two builds of the same Garage, each installed once per machine under its own root:
# "test" (the default: the test command's object store, optimised only lightly — it builds
# in about half the time of "release" and still hashes at hundreds of MiB/s) and "release"
# (what `just bench` measures against). A Garage of the other build already serving this
# checkout's data is stopped and the wanted one started on the same data.
BUILD=${AGENTPKG_GARAGE_BUILD:-test}
case "$BUILD" in
  test) opt_level=1 ;;
  release) opt_level=3 ;;
  *) log "AGENTPKG_GARAGE_BUILD is \"$BUILD\": say test or release"; exit 1 ;;
esac
GARAGE_ROOT=${XDG_DATA_HOME:-$HOME/.local/share}/agentpkg/garage-$GARAGE_VERSION-$BUILD
GARAGE=$GARAGE_ROOT/bin/garage
if [ ! -x "$GARAGE" ]; then
  log "installing garage $GARAGE_VERSION ($BUILD build) from crates.io into $GARAGE_ROOT (one time: about $([ "$BUILD" = test ] && echo 6 || echo 12) minutes on 2 cores)"
  # A trimmed build: the SQLite metadata engine only, and no LTO, to keep the build short.
  started=$(date +%s)
  CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
  CARGO_PROFILE_RELEASE_OPT_LEVEL=$opt_level CARGO_PROFILE_RELEASE_DEBUG=false \
    cargo install garage --locked --quiet --version "$GARAGE_VERSION" --root "$GARAGE_ROOT" \
      --no-default-features --features bundled-libs,sqlite
  log "garage ($BUILD build) installed in $(( $(date +%s) - started ))s"
fi

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

mkdir -p "$DIR/meta" "$DIR/data"
chmod 700 "$DIR"
if [ ! -f "$CFG" ] && [ -z "${AGENTPKG_GARAGE_S3_PORT:-}" ] && [ -z "${AGENTPKG_GARAGE_RPC_PORT:-}" ]; then
  # A new checkout on a machine where another one's Garage holds the default ports (a CI
  # clone beside a working copy) takes the next free pair rather than failing.
  for _ in $(seq 1 50); do
    if ! port_in_use "$S3_PORT" && ! port_in_use "$RPC_PORT"; then
      break
    fi
    S3_PORT=$((S3_PORT + 10))
    RPC_PORT=$((RPC_PORT + 10))
  done
fi
if [ ! -f "$CFG" ]; then
  secret=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
  cat >"$CFG" <<TOML
metadata_dir = "$DIR/meta"
data_dir = "$DIR/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.garage.localhost"
TOML
  chmod 600 "$CFG"
fi

g() { "$GARAGE" -c "$CFG" "$@"; }

# The ports this checkout's Garage was given when its configuration was written.
S3_PORT=$(sed -n 's/^api_bind_addr = "127\.0\.0\.1:\([0-9]*\)"/\1/p' "$CFG")
RPC_PORT=$(sed -n 's/^rpc_bind_addr = "127\.0\.0\.1:\([0-9]*\)"/\1/p' "$CFG")

# A Garage of the other build serving this checkout: stop it (same data, same version).
running=$(pgrep -f -- "garage -c $CFG server" | head -1 || true)
if [ -n "$running" ] && [ "$(readlink "/proc/$running/exe" 2>/dev/null)" != "$(readlink -f "$GARAGE")" ]; then
  log "stopping the running garage (pid $running, $(readlink "/proc/$running/exe" 2>/dev/null || echo "another build")) for the $BUILD build"
  kill "$running"
  for _ in $(seq 1 50); do
    kill -0 "$running" 2>/dev/null || break
    sleep 0.2
  done
fi

if ! g status >/dev/null 2>&1; then
  for port in "$S3_PORT" "$RPC_PORT"; do
    if port_in_use "$port"; then
      log "port $port is taken by another process (another checkout's Garage?): stop it, or set AGENTPKG_GARAGE_S3_PORT and AGENTPKG_GARAGE_RPC_PORT"
      exit 1
    fi
  done
  log "starting garage (S3 on 127.0.0.1:$S3_PORT, log in $DIR/garage.log)"
  nohup "$GARAGE" -c "$CFG" server >"$DIR/garage.log" 2>&1 &
  for _ in $(seq 1 100); do
    g status >/dev/null 2>&1 && break
    sleep 0.2
  done
  g status >/dev/null 2>&1 || { log "garage did not start:"; tail -20 "$DIR/garage.log" >&2; exit 1; }
fi

# A Garage that has just started, or just changed its layout, may refuse a request for a
# moment ("Layout not ready", connection refused): retry, bounded.
retry() {
  local out
  for _ in $(seq 1 60); do
    if out=$("$@" 2>&1); then
      printf '%s\n' "$out"
      return 0
    fi
    sleep 0.5
  done
  printf '%s\n' "$out" >&2
  return 1
}

# A new node has no role yet: give it one. (Asked with retries: a command that failed
# because the daemon was still starting must not be read as "already has a role".)
layout_version() {
  g layout show 2>/dev/null | sed -n 's/^Current cluster layout version: \([0-9][0-9]*\).*/\1/p'
}
version=""
for _ in $(seq 1 60); do
  version=$(layout_version)
  [ -n "$version" ] && break
  sleep 0.5
done
[ -n "$version" ] || { log "cannot read the cluster layout:"; g layout show >&2; exit 1; }
if [ "$version" = 0 ]; then
  node=$(retry g node id -q | cut -d@ -f1)
  retry g layout assign -z dc1 -c 1G "$node" >/dev/null
  retry g layout apply --version 1 >/dev/null
  log "layout applied"
fi

if [ ! -f "$DIR/env" ]; then
  out=$(retry g key create agentpkg-dev)
  key_id=$(printf '%s\n' "$out" | awk -F': *' '/Key ID/ {print $2; exit}')
  secret_key=$(printf '%s\n' "$out" | awk -F': *' '/Secret key/ {print $2; exit}')
  [ -n "$key_id" ] && [ -n "$secret_key" ] || { log "could not read the new key:"; printf '%s\n' "$out" >&2; exit 1; }
  retry g key allow --create-bucket agentpkg-dev >/dev/null
  umask 077
  cat >"$DIR/env" <<ENV
AGENTPKG_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
AGENTPKG_TEST_S3_REGION=garage
AGENTPKG_TEST_S3_ACCESS_KEY=$key_id
AGENTPKG_TEST_S3_SECRET_KEY=$secret_key
ENV
  log "created S3 key $key_id (in $DIR/env)"
fi

# Wait until the S3 API answers (any HTTP status will do).
for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/" && break
  sleep 0.2
done
curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/" || { log "S3 API is not answering"; exit 1; }
# And the metadata tables answer (they wait for the layout too).
retry g bucket list >/dev/null || { log "garage's bucket table is not answering"; exit 1; }
# Finally, a write must show in a listing: right after a layout change Garage may accept
# writes before its listings see them, and the tests compare listings with the database.
# shellcheck source=/dev/null
. "$DIR/env"
sig=(--aws-sigv4 "aws:amz:garage:s3" --user "$AGENTPKG_TEST_S3_ACCESS_KEY:$AGENTPKG_TEST_S3_SECRET_KEY"
     -H "x-amz-content-sha256: UNSIGNED-PAYLOAD")
probe="http://127.0.0.1:$S3_PORT/s3-up-probe"
s3() { curl -s -o /dev/null -w '%{http_code}' "${sig[@]}" "$@"; }
listed=""
for _ in $(seq 1 60); do
  s3 -X PUT "$probe" >/dev/null
  if [ "$(s3 -X PUT --data-binary probe "$probe/probe")" = 200 ] \
     && curl -s "${sig[@]}" "$probe?list-type=2" | grep -q "<Key>probe</Key>"; then
    listed=yes
    break
  fi
  sleep 0.5
done
s3 -X DELETE "$probe/probe" >/dev/null
s3 -X DELETE "$probe" >/dev/null
[ -n "$listed" ] || { log "garage does not list what it stores yet"; exit 1; }
log "garage is up; S3 settings in $DIR/env"
