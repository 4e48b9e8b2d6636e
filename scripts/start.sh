#!/usr/bin/env bash
# Set up .venv, run the headless demo on the default model (writes artifacts/demo.html),
# then open JupyterLab on the example notebooks.
set -euo pipefail
cd "$(dirname "$0")/.."
GEMMA_LAB_SKIP_BROWSER=1 bash scripts/setup.sh
mkdir -p artifacts
.venv/bin/gemma-lab demo --output artifacts/demo.html
ARGS=(--notebook-dir=examples --ip=127.0.0.1)
if [ "$(id -u)" = "0" ]; then ARGS+=(--allow-root); fi
exec .venv/bin/jupyter lab "${ARGS[@]}" "$@"
