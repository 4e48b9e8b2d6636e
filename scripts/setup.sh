#!/usr/bin/env bash
# Create .venv at the repo root and install gemma_lab with everything its tests need:
# Python packages (jax, tensorflow, torch CPU, transformers), the JupyterLab extension
# (built from labextension/ by the package build), Debian chromium and Playwright.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch 2.13.0 is the CPU build these machines carry; asking for it first keeps pip from
# resolving a multi-GB CUDA build later.
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[test,torch]"
# The editable install builds the extension into gemma_lab/labextension; link it into the
# venv's Jupyter data dir (what `jupyter labextension develop` does, but into .venv for sure).
# pip's editable install may have copied the built extension there as a directory; replace
# it (ln -sfn onto a directory would put the link inside it and leave the copy in use).
mkdir -p .venv/share/jupyter/labextensions
rm -rf .venv/share/jupyter/labextensions/gemma-lab
ln -sfn "$PWD/gemma_lab/labextension" .venv/share/jupyter/labextensions/gemma-lab
.venv/bin/jupyter labextension list 2>&1 | grep -q "gemma-lab.*enabled.*OK" \
  || { echo "gemma-lab labextension is not enabled" >&2; exit 1; }
if [ "${GEMMA_LAB_SKIP_BROWSER:-0}" != "1" ]; then
  bash .ci/install_browser.sh
fi
echo "setup done: $(.venv/bin/python -c 'import gemma_lab, keras; print("gemma_lab", gemma_lab.__version__, "keras", keras.__version__)' 2>/dev/null)"
