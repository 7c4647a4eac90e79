"""How fast is this machine? A one-second fp32 matmul measurement printed beside the demo's stage times.

Why: the demo's stage times only mean something next to the machine they were measured on. Two machines
sold as the same kind (2 cores, same CPU family) were measured twice as far apart (issue 16), and a busy
machine (other processes on the cores) looks like a slow one. Printing the attained matmul rate beside the
times lets a reader tell "the demo got slower" from "this machine is slower / busy right now".
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

#: the machine the demo's time budget was set on (2-core Intel Xeon, idle: 226 GFLOP/s measured as here; see
#: README "Results") and the budget there (issue 16: 6 minutes, so about 10 on the 160 GFLOP/s machines of
#: the same kind); a machine at half that rate should take about twice as long
REFERENCE_GFLOPS = 226.0
REFERENCE_BUDGET_S = 360.0


@dataclass
class MachineSpeed:
    gflops: float  # best fp32 matmul rate attained, GFLOP/s
    threads: int  # torch intra-op threads used (what the demo's stages use)
    seconds: float  # time the measurement took

    def line(self) -> str:
        return (f"machine: {self.gflops:.0f} GFLOP/s fp32 matmul on {self.threads} thread(s) "
                f"(the demo's {REFERENCE_BUDGET_S / 60:.0f}-minute budget assumes ~{REFERENCE_GFLOPS:.0f}; "
                f"a busy or slower machine scales the stage times by about the ratio)")

    def to_json(self) -> dict:
        return {"gflops_fp32_matmul": round(self.gflops, 1), "threads": self.threads,
                "seconds": round(self.seconds, 2)}


def measure_matmul_gflops(budget_s: float = 1.0, n: int = 768) -> MachineSpeed:
    """Best fp32 ``n x n`` matmul rate over repeated runs within about ``budget_s`` seconds (the best, not the
    mean: the attainable rate, which is what a busy moment hides). ``n=768``: large enough to reach the BLAS
    kernel's steady state on a CPU, small enough (~7 ms at 130 GFLOP/s) to repeat many times in a second."""
    t_start = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    torch.matmul(a, b, out=out)  # warm-up: thread pool, kernel selection
    flop = 2.0 * n ** 3
    best = float("inf")
    deadline = t_start + max(budget_s, 0.05)
    runs = 0
    while runs < 3 or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        torch.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
        runs += 1
        if runs >= 1000:
            break
    return MachineSpeed(gflops=flop / best / 1e9, threads=torch.get_num_threads(),
                        seconds=time.perf_counter() - t_start)
