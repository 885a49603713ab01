#!/usr/bin/env bash
# Renders README.md as GitHub does and fails on broken tables, dead links and anchors, and
# shell examples that type a command a fresh clone does not have (scripts/readme-check.py).
# Installs markdown-it-py into its own venv (~/.cache/pisgate/venv-docs) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${PISGATE_DOCS_VENV:-${HOME:-/root}/.cache/pisgate/venv-docs}
if ! "$venv/bin/python" -c 'import markdown_it' 2>/dev/null; then
    echo "installing markdown-it-py into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check 'markdown-it-py>=3,<5' >&2
fi
"$venv/bin/python" scripts/readme-check.py README.md
