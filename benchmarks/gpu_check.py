"""The first-GPU-run check (issue 16 §5), run by ``benchmarks/gpu_check.sh``; one JSON out.

    bash benchmarks/gpu_check.sh [--out gpu_check.json] [--budget 480] [--steps 300] [--checkpoints DIR]
    bash benchmarks/gpu_check.sh --self-check [--out FILE]    # CPU only: arguments and JSON schema (CI)

Sections, each a subprocess with its own time limit (the sum fits ``--budget`` seconds, default 8 min);
a failing or timed-out section is recorded and the rest still run:

``cuda_tests``    pytest on the test files with CUDA-specific tests (device selection, bf16 emulation
                  rule, the inference-only G_T on CUDA, GPU-readiness checks)
``train_amp``     ``bench_train.py``: G_L and G_T at the paper's sizes for ``--steps`` steps under bf16 AMP
                  (G_L stays fp32 by design); the reconstruction loss must fall; the data loader's samples/s
                  per worker and the worker count this GPU needs at the paper's batch
``ddp``           ``torchrun --nproc_per_node=<GPUs>`` of the same at a few steps (NCCL); skipped with 1 GPU
``bench_texture`` ``bench_texture.py`` fp32 with TF32 off and on (labelled) and bf16: frames/s, peak
                  fraction, default batch, and the one-shot seconds (L1 and + VGG16)
``bench_stream``  ``bench_stream.py`` (paper-size random-weight models) when that script exists

Exit status 0 when every section that ran passed. The JSON has ``schema`` (= :data:`SCHEMA_VERSION`),
``mode`` (``gpu`` | ``self-check``), ``environment`` and ``sections`` ``{name: {status, seconds, ...}}``
with ``status`` one of ``passed``, ``failed``, ``timeout``, ``skipped``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCHEMA_VERSION = 1
ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("cuda_tests", "train_amp", "ddp", "bench_texture", "bench_stream")
STATUSES = ("passed", "failed", "timeout", "skipped")
#: share of the budget each section may use (the rest is start-up slack)
SHARES = {"cuda_tests": 0.15, "train_amp": 0.25, "ddp": 0.15, "bench_texture": 0.25, "bench_stream": 0.12}
CUDA_TEST_FILES = ("tests/test_device.py", "tests/test_fast_texture.py", "tests/test_gpu_readiness.py")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="gpu_check.sh", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_check.json", help="JSON written here (default: gpu_check.json)")
    ap.add_argument("--budget", type=float, default=480.0, help="seconds for everything (default: 480)")
    ap.add_argument("--steps", type=int, default=300, help="G_L / G_T steps at paper sizes (default: 300)")
    ap.add_argument("--ddp-steps", type=int, default=20)
    ap.add_argument("--checkpoints", default=None, help="trained checkpoints for bench_stream (default: random)")
    ap.add_argument("--self-check", action="store_true", help="CPU only: check arguments and the JSON schema")
    args = ap.parse_args(argv)
    if args.budget <= 0 or args.steps < 1 or args.ddp_steps < 1:
        ap.error("--budget must be > 0 and --steps, --ddp-steps >= 1")
    return args


def validate(doc: dict) -> list[str]:
    """Problems with a result document (empty: it follows the schema)."""
    errs = []
    if doc.get("schema") != SCHEMA_VERSION:
        errs.append(f"schema must be {SCHEMA_VERSION}")
    if doc.get("mode") not in ("gpu", "self-check"):
        errs.append("mode must be 'gpu' or 'self-check'")
    if not isinstance(doc.get("environment"), dict):
        errs.append("environment must be an object")
    secs = doc.get("sections")
    if not isinstance(secs, dict) or set(secs) != set(SECTIONS):
        errs.append(f"sections must have exactly {', '.join(SECTIONS)}")
        return errs
    for name, s in secs.items():
        if not isinstance(s, dict) or s.get("status") not in STATUSES:
            errs.append(f"sections.{name}.status must be one of {', '.join(STATUSES)}")
        elif not isinstance(s.get("seconds"), (int, float)):
            errs.append(f"sections.{name}.seconds must be a number")
        elif s["status"] == "passed" and name in ("train_amp", "ddp") and not s.get("loss_fell", False):
            errs.append(f"sections.{name}: passed although the loss did not fall")
    if not isinstance(doc.get("ok"), bool):
        errs.append("ok must be true or false")
    return errs


def run(cmd: list[str], limit: float, env: dict | None = None) -> tuple[str, float, str]:
    """(status, seconds, output tail) of ``cmd`` run from the repository root within ``limit`` seconds."""
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(5.0, limit),
                           env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or "") if isinstance(e.stdout, str) else (e.stdout or b"").decode(errors="replace")
        return "timeout", time.perf_counter() - t, out[-2000:]
    status = "passed" if p.returncode == 0 else "failed"
    return status, time.perf_counter() - t, (p.stdout + p.stderr)[-2000:]


def environment() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return {"torch": torch.__version__, "python": sys.version.split()[0], "cuda_available": cuda,
            "cuda": torch.version.cuda, "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if cuda else [], "cudnn": torch.backends.cudnn.version() if cuda else None}


def _json_section(cmd: list[str], limit: float, out: Path, env: dict | None = None) -> dict:
    status, secs, tail = run(cmd, limit, env)
    res: dict = {"status": status, "seconds": round(secs, 1), "command": " ".join(cmd)}
    if out.is_file():
        res["results"] = json.loads(out.read_text())
    if status != "passed":
        res["output_tail"] = tail
    return res


def _train_checked(res: dict, kinds=("landmark/mead", "texture/mead")) -> dict:
    train = res.get("results", {}).get("train", {})
    res["loss_fell"] = all(train.get(k, {}).get("loss_fell", False) for k in kinds)
    if res["status"] == "passed" and not res["loss_fell"]:
        res["status"] = "failed"
        res["why"] = "the reconstruction loss did not fall"
    return res


def gpu_sections(args, tmp: Path) -> dict:
    import torch

    py, budget = sys.executable, args.budget
    lim = {k: v * budget for k, v in SHARES.items()}
    secs: dict = {}
    status, s, tail = run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CUDA_TEST_FILES], lim["cuda_tests"])
    secs["cuda_tests"] = {"status": status, "seconds": round(s, 1), "output_tail": tail}
    common = ["--device", "cuda", "--configs", "mead"]
    out = tmp / "train.json"  # with the loader's samples/s per worker and the workers this GPU needs
    secs["train_amp"] = _train_checked(_json_section(
        [py, "benchmarks/bench_train.py", *common, "--steps-paper", str(args.steps), "--json", str(out)],
        lim["train_amp"], out))
    common.append("--no-loader")
    n = torch.cuda.device_count()
    if n > 1:
        out = tmp / "ddp.json"
        secs["ddp"] = _train_checked(_json_section(
            ["torchrun", f"--nproc_per_node={n}", "benchmarks/bench_train.py", *common, "--steps-paper",
             str(args.ddp_steps), "--json", str(out)], lim["ddp"], out))
        secs["ddp"]["gpus"] = n
    else:
        secs["ddp"] = {"status": "skipped", "seconds": 0.0, "why": "one GPU visible", "loss_fell": False}
    out = tmp / "texture.json"
    secs["bench_texture"] = _json_section(
        [py, "benchmarks/bench_texture.py", "--device", "cuda", "--precision", "fp32,bf16", "--json", str(out)],
        lim["bench_texture"], out)
    stream = ROOT / "benchmarks" / "bench_stream.py"
    if stream.is_file():
        out = tmp / "stream.json"
        src = ["--checkpoints", args.checkpoints] if args.checkpoints else ["--model", "paper"]
        secs["bench_stream"] = _json_section(
            [py, str(stream), *src, "--device", "cuda", "--size", "256", "--seconds", "10", "--json", str(out)],
            lim["bench_stream"], out)
    else:
        secs["bench_stream"] = {"status": "skipped", "seconds": 0.0, "why": "benchmarks/bench_stream.py missing"}
    return secs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.self_check:
        doc = {"schema": SCHEMA_VERSION, "mode": "self-check", "environment": {"python": sys.version.split()[0]},
               "sections": {k: {"status": "skipped", "seconds": 0.0, "why": "self-check"} for k in SECTIONS},
               "arguments": vars(args)}
    else:
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device visible; run it on a GPU machine (or use --self-check)", file=sys.stderr)
            return 2
        if shutil.which("torchrun") is None:
            print("gpu_check: torchrun not on PATH; activate the environment emotalk is installed in",
                  file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
            doc = {"schema": SCHEMA_VERSION, "mode": "gpu", "environment": environment(),
                   "sections": gpu_sections(args, Path(tmp)), "arguments": vars(args)}
    doc["ok"] = all(s["status"] in ("passed", "skipped") for s in doc["sections"].values())
    errs = validate(doc)
    if errs:
        doc["ok"] = False
        doc["schema_errors"] = errs
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    for name, s in doc["sections"].items():
        print(f"{name:<14} {s['status']:<8} {s['seconds']:7.1f} s")
    print(f"{'ok' if doc['ok'] else 'NOT ok'}: {args.out}")
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
