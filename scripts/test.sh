#!/usr/bin/env bash
# Runs every test on a fresh machine: starts Garage (installing it once per machine) and
# uses the PostgreSQL listening on 127.0.0.1:5432 (trust auth; override the admin URL
# with AGENTPKG_TEST_PG_URL). Then checks the deployment files and runs schemathesis
# against the server (both install their pinned tools into .tools/ once), and a 20-second
# soak. Extra arguments go to `cargo test` and skip the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

pg_url=${AGENTPKG_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -d "$pg_url"; then
  echo "test: PostgreSQL does not answer at $pg_url (set AGENTPKG_TEST_PG_URL)" >&2
  exit 1
fi

./scripts/s3-up.sh
set -a
# shellcheck source=/dev/null
. "${AGENTPKG_GARAGE_DIR:-.garage}/env"
set +a

cargo test --workspace --locked "$@"

# With arguments (a filter), only the selected Rust tests run.
if [ "$#" -eq 0 ]; then
  ./scripts/check-deploy.sh
  ./scripts/api-contract.sh
  # A short soak with the debug build (`just soak` runs the full one, in release).
  ./target/debug/examples/soak --secs 20
fi
