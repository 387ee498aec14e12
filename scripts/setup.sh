#!/usr/bin/env bash
# Install t3unlearn into the current Python environment.
#   bash scripts/setup.sh          # the package
#   bash scripts/setup.sh --test   # the package and the test tools
# A torch you already have is kept. With none, the pinned CPU build (torch==2.13.0) is
# installed first, so the package's torch range never pulls the multi-GB CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  # PyPI's Linux torch wheel is the CUDA build; PyTorch's CPU index has the CPU one. An index you set
  # yourself (PIP_INDEX_URL, pip config's index-url) is kept; T3UNLEARN_TORCH_INDEX picks another.
  index=(--index-url "${T3UNLEARN_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}" --retries 1 --timeout 30)
  if [ -n "${PIP_INDEX_URL:-}" ] || "$PY" -m pip config list 2>/dev/null | grep -q '\.index-url='; then index=(); fi
  echo "setup: no torch found; installing the pinned CPU build torch==2.13.0 from ${index[1]:-your pip index}"
  log=$(mktemp)
  if "$PY" -m pip install --quiet "${index[@]}" "torch==2.13.0" 2>"$log"; then
    rm -f "$log"   # pip's retries of an index it cannot reach (offline mirrors) are not worth showing
  else
    cat "$log"; rm -f "$log"
    echo "setup: the CPU index could not be read; installing torch==2.13.0 from your default index (on Linux"
    echo "       that can be the CUDA build: set T3UNLEARN_TORCH_INDEX or install torch first to choose)"
    "$PY" -m pip install --quiet "torch==2.13.0"
  fi
fi
"$PY" -m pip install --quiet -e ".${extra}"
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true   # make the new 't3unlearn' command visible
"$PY" -c "import torch, transformers, t3unlearn; print(f'setup: t3unlearn {t3unlearn.__version__}, torch {torch.__version__}, transformers {transformers.__version__}')"
