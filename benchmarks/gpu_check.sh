#!/usr/bin/env bash
# The first-GPU-run check (issue 16 §5): CUDA tests, G_L/G_T at paper sizes under bf16 AMP (loss must
# fall), a torchrun DDP run over all visible GPUs (NCCL), bench_texture (fp32 TF32 off/on, bf16) with the
# one-shot time, and the streaming benchmark; one JSON out, within 8 minutes. See benchmarks/gpu_check.py.
#
#   bash benchmarks/gpu_check.sh [--out gpu_check.json] [--budget 480] [--steps 300] [--checkpoints DIR]
#   bash benchmarks/gpu_check.sh --self-check --out /tmp/x.json     # CPU only (CI): arguments + JSON schema
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
py="${PYTHON:-}"
if [[ -z "$py" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then py="$root/.venv/bin/python"; else py="$(command -v python3)"; fi
fi
# torchrun from the same environment as the interpreter
export PATH="$(dirname "$py"):$PATH"
exec "$py" "$here/gpu_check.py" "$@"
