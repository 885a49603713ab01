#!/usr/bin/env bash
# Checks the committed openapi.json (the served document; a test holds them equal) the way
# SDK generators and API portals read it: openapi-spec-validator (from PyPI, into
# ~/.cache/pisgate/venv-openapi when missing) and Redocly's recommended ruleset (@redocly/cli
# from npm, into ~/.cache/pisgate/redocly when missing), failing on any error; Redocly's
# warnings are shown.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${HOME:-/root}/.cache/pisgate/venv-openapi
if ! [ -x "$venv/bin/openapi-spec-validator" ]; then
    echo "openapi-spec-validator is missing; installing it from PyPI into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'openapi-spec-validator<1' >&2
fi
"$venv/bin/openapi-spec-validator" openapi.json
redocly=${HOME:-/root}/.cache/pisgate/redocly
if ! [ -x "$redocly/node_modules/.bin/redocly" ]; then
    echo "@redocly/cli is missing; installing it from npm into $redocly" >&2
    mkdir -p "$redocly"
    (cd "$redocly" && npm install --silent --no-audit --no-fund '@redocly/cli@2' >&2)
fi
"$redocly/node_modules/.bin/redocly" lint --extends recommended --format stylish openapi.json 2>&1 |
    grep -v '^ *[║╔╚]'
