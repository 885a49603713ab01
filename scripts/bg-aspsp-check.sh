#!/usr/bin/env bash
# Runs the tests of the independent strict Berlin Group ASPSP (tests/bg-aspsp/, Python, no
# pisgate code): creates its venv (~/.cache/pisgate/venv-bgaspsp, from PyPI: cryptography,
# PyYAML, openapi-schema-validator, pytest) when missing, then runs pytest on
# tests/bg-aspsp/test_aspsp.py. Extra arguments go to pytest (e.g. -k decoupled).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${HOME:-/root}/.cache/pisgate/venv-bgaspsp
requirements=tests/bg-aspsp/requirements.txt
stamp="$venv/.requirements"
if ! [ -x "$venv/bin/python" ] || ! cmp -s "$requirements" "$stamp"; then
    echo "bg-aspsp: installing $requirements from PyPI into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -r "$requirements" >&2
    cp "$requirements" "$stamp"
fi
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/bg-aspsp/test_aspsp.py "$@"
