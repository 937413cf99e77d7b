#!/usr/bin/env bash
# One-time set-up on a fresh machine: a virtual environment in .venv with fedalign installed.
# Installs the CPU build of torch first when no torch is present (a bare `torch`
# requirement would pull a multi-GB CUDA build); an existing torch is kept.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
VENV_PY=.venv/bin/python
if ! "$VENV_PY" -c "import torch" 2>/dev/null; then
  "$VENV_PY" -m pip install -q "torch==2.13.0"
fi
"$VENV_PY" -m pip install -q -e ".[test]"
"$VENV_PY" -c "import fedalign, torch, torch_geometric, flwr, opacus; print(f'fedalign ready: torch {torch.__version__}, PyG {torch_geometric.__version__}, flwr {flwr.__version__}, opacus {opacus.__version__}')"
