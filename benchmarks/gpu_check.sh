#!/usr/bin/env bash
# One check of oodbench on a CUDA machine in under 8 minutes -> results/gpu-check.json
# (benchmarks/gpu_check.py says what each step does). --dry-run: the same steps on the CPU at
# tiny sizes, written to a temp file. Runs with the checkout's .venv, else python3.
#   bash benchmarks/gpu_check.sh [--data-root DIR] [--out FILE] [--logs DIR] [--budget S]
#   bash benchmarks/gpu_check.sh --dry-run [--out FILE]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$root/.venv/bin/python"
[ -x "$python" ] || python="$(command -v python3)"
cd "$root"
exec "$python" -m benchmarks.gpu_check "$@"
