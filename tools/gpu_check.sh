#!/usr/bin/env bash
# The prepared GPU check (issue 16, part 4): on a machine with CUDA, in under 8 minutes, one JSON with
#   the tests marked for CUDA (pytest -m cuda), one epoch of the demo with fp16 AMP, torchrun with the
#   nccl backend on every visible GPU and --sync-bn, and the benchmark's CUDA profile with the official code
#   beside it (unified/benchmark/gpu_check.py does the work; see its docstring).
#
#   tools/gpu_check.sh [OUT.json] [--official-repo PATH] [--skip step,step]
#
# Without CUDA it writes {"cuda": false, ...} and exits 2 at once. Exit 1: a step failed (the JSON says
# which, with the end of its output). Python: $PYTHON, else .venv/bin/python, else python3.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_check.json}"
[[ $# -gt 0 ]] && shift
if [[ -n "${PYTHON:-}" ]]; then py="$PYTHON"
elif [[ -x .venv/bin/python ]]; then py=.venv/bin/python
else py=python3
fi
if ! "$py" -c "import torch" 2>/dev/null; then
  echo "gpu_check: $py cannot import torch; set PYTHON to the environment unified is installed in" >&2
  exit 2
fi
# The whole check is bounded even if a step's own limit fails to stop it (8 minutes).
exec timeout --kill-after=10 480 "$py" -m unified.benchmark.gpu_check --out "$out" "$@"
