#!/usr/bin/env bash
# Set up .venv and run every test: unit tests on tiny models, the real default model on
# jax / tensorflow / torch, real IPython, and real JupyterLab in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check gemma_lab tests benchmarks
exec .venv/bin/python -m pytest --durations=25 "$@"
