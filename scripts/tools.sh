#!/usr/bin/env bash
# Installs (once) the Python tools the checks use, pinned, into .tools/venv, and prints the
# venv's path. Sourced tools come from PyPI only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${AGENTPKG_TOOLS_VENV:-$ROOT/.tools/venv}
REQUIREMENTS="schemathesis==4.32.5 check-jsonschema==0.39.0"
STAMP="$VENV/.agentpkg-requirements"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$REQUIREMENTS" ]; then
  printf 'tools: installing %s into %s\n' "$REQUIREMENTS" "$VENV" >&2
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $REQUIREMENTS >&2
  printf '%s' "$REQUIREMENTS" >"$STAMP"
fi
printf '%s\n' "$VENV"
