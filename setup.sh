#!/usr/bin/env bash
# One-time set-up on a fresh machine: a virtual environment in .venv with fedalign installed.
# Installs the CPU build of torch first when no torch is present (a bare `torch`
# requirement would pull a multi-GB CUDA build); an existing torch is kept.
#   PYTHON=/usr/bin/python3 VENV=.venv-system bash setup.sh   # another interpreter, another venv
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
VENV_PY=$VENV/bin/python
# Python >= 3.11, as pyproject.toml's requires-python says (flwr 1.41 needs it): the venv's if it exists.
py=$PYTHON; hint="run with PYTHON=python3.11 or newer"
[ -x "$VENV_PY" ] && py=$VENV_PY && hint="$VENV was made by it: remove $VENV, then $hint"
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
  found=$({ "$py" -V 2>&1 || echo "not runnable"; } | tail -n 1)
  echo "setup.sh: fedalign needs Python >= 3.11; $py is $found ($hint)" >&2
  exit 1
fi
if [ ! -x "$VENV_PY" ]; then
  "$PYTHON" -m venv "$VENV"
fi
if ! "$VENV_PY" -c "import torch" 2>/dev/null; then
  "$VENV_PY" -m pip install -q "torch==2.13.0"
fi
"$VENV_PY" -m pip install -q -e ".[test]"
"$VENV_PY" -c "import sys, fedalign, torch, torch_geometric, flwr, opacus; print(f'fedalign ready in $VENV (Python {sys.version.split()[0]}): torch {torch.__version__}, PyG {torch_geometric.__version__}, flwr {flwr.__version__}, opacus {opacus.__version__}')"
