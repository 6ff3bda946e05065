#!/usr/bin/env bash
# Makes .venv, the virtualenv the tests and benchmarks run their Python in
# (the `openai` and `tritonclient` clients, ONNX Runtime for reference
# outputs, `onnx` to build the topic classifier, FastAPI for the comparison
# server), from
# scripts/python-requirements.txt. Safe to run again: it installs only when
# the requirements changed since the last run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
req=scripts/python-requirements.txt
stamp=.venv/.requirements
if [[ -x .venv/bin/python ]] && cmp -s "$req" "$stamp"; then
    exit 0
fi
"$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$req"
cp "$req" "$stamp"
echo "python-env: .venv ready" >&2
