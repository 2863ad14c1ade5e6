#!/usr/bin/env bash
# Installs (once) the tools the checks and tests use, pinned: Python ones from PyPI into
# .tools/venv (schemathesis; tuspy, a tus client; the OpenTelemetry OpAMP client;
# Playwright, which drives Debian's Chromium; sigstore-python, which verifies offered
# Sigstore bundles offline as an agent would), and tus-js-client, Elastic's OpAMP client
# and axe-core (accessibility checks run in the browser) from npm into
# .tools/node (run by the machine's Node.js). Prints the venv's path.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${AGENTPKG_TOOLS_VENV:-$ROOT/.tools/venv}
REQUIREMENTS="schemathesis==4.32.5 check-jsonschema==0.39.0 tuspy==1.1.0 opentelemetry-opamp-client==0.5b0 websockets==15.0.1 playwright==1.65.2 sigstore==4.5.1"
NODE_DIR=${AGENTPKG_TOOLS_NODE:-$ROOT/.tools/node}
NODE_PACKAGES="tus-js-client@4.3.1 @elastic/opamp-client-node@0.5.0 axe-core@4.11.0"
STAMP="$VENV/.agentpkg-requirements"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$REQUIREMENTS" ]; then
  printf 'tools: installing %s into %s\n' "$REQUIREMENTS" "$VENV" >&2
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $REQUIREMENTS >&2
  printf '%s' "$REQUIREMENTS" >"$STAMP"
fi
NODE_STAMP="$NODE_DIR/.agentpkg-packages"
if [ ! -f "$NODE_STAMP" ] || [ "$(cat "$NODE_STAMP")" != "$NODE_PACKAGES" ]; then
  printf 'tools: installing %s into %s\n' "$NODE_PACKAGES" "$NODE_DIR" >&2
  mkdir -p "$NODE_DIR"
  # shellcheck disable=SC2086
  npm install --prefix "$NODE_DIR" --silent --no-audit --no-fund --save-exact $NODE_PACKAGES >&2
  printf '%s' "$NODE_PACKAGES" >"$NODE_STAMP"
fi
printf '%s\n' "$VENV"
