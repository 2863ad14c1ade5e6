# agentpkg — operator and developer tasks. `just --list` shows them.

# Run the server. With no configuration: SQLite + ./data, on 127.0.0.1:8080.
run *ARGS:
    cargo run --release --locked -p agentpkg-server -- {{ARGS}}

# Run every test (starts Garage, installing it once per machine; needs PostgreSQL on 127.0.0.1:5432).
test *ARGS:
    ./scripts/test.sh {{ARGS}}

# Apply pending database migrations for the configured database, then exit.
migrate *ARGS:
    cargo run --release --locked -p agentpkg-server -- migrate {{ARGS}}

# Add a user: just create-user NAME ROLE (password generated and printed once).
create-user NAME ROLE:
    cargo run --release --locked -p agentpkg-server -- create-user {{NAME}} --role {{ROLE}}

# A simulated fleet of scripted OpAMP agents, to watch a progressive rollout (README):
# AGENT_TOKEN=<read token> just demo-fleet [AGENTS] [TARGET] [UNHEALTHY_EVERY] [URL]
demo-fleet *ARGS:
    ./scripts/demo-fleet.sh {{ARGS}}

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets --locked -- -D warnings

# Benchmarks: the release server on PostgreSQL + Garage versus direct S3 (upload, download,
# memory, metadata latency, 200 concurrent downloads). `just bench --quick` for a short run.
# Writes target/bench/results.json; docs/performance.md records the latest figures. Measured
# against Garage's optimised build (installed once, apart from the tests' lighter one).
bench *ARGS:
    AGENTPKG_GARAGE_BUILD=release ./scripts/s3-up.sh
    cargo build --release --locked -p agentpkg-server -p agentpkg-cli -p agentpkg-bench
    ./target/release/bench {{ARGS}}

# Load without loss: 64 clients upload, download, list and delete for 2 minutes against the
# release server on PostgreSQL + Garage; fails on any 5xx, checksum mismatch, or bucket/table
# disagreement. `just soak --secs 30 --clients 16` for a shorter one. Writes target/bench/soak.json.
soak *ARGS:
    AGENTPKG_GARAGE_BUILD=release ./scripts/s3-up.sh
    cargo build --release --locked -p agentpkg-server -p agentpkg-bench
    ./target/release/soak {{ARGS}}

# Start a local single-node Garage (S3) in .garage/; its settings land in .garage/env.
# AGENTPKG_GARAGE_BUILD=release for the optimised build the benchmarks use.
s3-up:
    ./scripts/s3-up.sh

# Stop the local Garage.
s3-down:
    -pkill -f "garage -c {{justfile_directory()}}/.garage/garage.toml server"
