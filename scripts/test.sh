#!/usr/bin/env bash
# Runs every test on a fresh machine: starts Garage (installing it once per machine) and
# uses the PostgreSQL listening on 127.0.0.1:5432 (trust auth; override the admin URL
# with AGENTPKG_TEST_PG_URL), GnuPG and Chromium (installed from Debian when missing). Then builds and runs packagemgr's embedding example without
# the backends, checks the deployment files and runs schemathesis
# against the server (both install their pinned tools into .tools/ once), and a 20-second
# soak. Extra arguments go to `cargo test` and skip the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

# The workspace's test build takes several GiB; say how much room there is, so a run that
# fails on a full disk says so at its top.
df -h . | awk 'NR == 2 { printf "test: %s free on %s\n", $4, $6 }' >&2

pg_url=${AGENTPKG_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -d "$pg_url"; then
  echo "test: PostgreSQL does not answer at $pg_url (set AGENTPKG_TEST_PG_URL)" >&2
  exit 1
fi

# The signature tests sign with GnuPG and verify downloads with gpgv, as agents would.
if ! command -v gpg >/dev/null 2>&1 || ! command -v gpgv >/dev/null 2>&1; then
  echo "test: installing gnupg and gpgv (Debian)" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq gnupg gpgv >/dev/null
fi

# The web interface's tests drive Debian's Chromium with Playwright.
if ! command -v chromium >/dev/null 2>&1; then
  echo "test: installing chromium (Debian)" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium >/dev/null
fi

./scripts/s3-up.sh
# The resumable-upload tests drive tuspy and tus-js-client (pinned, installed once).
./scripts/tools.sh >/dev/null
set -a
# shellcheck source=/dev/null
. "${AGENTPKG_GARAGE_DIR:-.garage}/env"
set +a

# The server's CLI tests run the `agentpkg` binary, so it is built whatever the filter; the
# soak (below) is a binary of the bench crate.
cargo build --locked -p agentpkg-cli -p agentpkg-bench
cargo test --workspace --locked "$@"

# With arguments (a filter), only the selected Rust tests run.
if [ "$#" -eq 0 ]; then
  # A service embedding packagemgr with its own store compiles none of the server's
  # backends: the example builds and runs without them, and they are not in its tree.
  cargo run --locked --quiet -p agentpkg-packagemgr --no-default-features --example embed
  if cargo tree --locked -p agentpkg-packagemgr --no-default-features -e normal,build \
    | grep -E ' (diesel|diesel_migrations|rust-s3|pq-sys|libsqlite3-sys) v'; then
    echo "test: packagemgr without default features still depends on a backend" >&2
    exit 1
  fi
  ./scripts/check-deploy.sh
  ./scripts/api-contract.sh
  # A short soak with the debug build (`just soak` runs the full one, in release).
  ./target/debug/soak --secs 20
fi
