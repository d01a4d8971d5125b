"""The ceiling: the bare model's forward pass, no decode, no queue, no database.

Measured in fresh processes with the worker's environment (allocator settings included),
so the comparison with the platform differs only by what the platform adds.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

import torch

from shared.ml.architectures import build_classifier


def _forward_rate(
    architecture: str, size: int, batch: int, threads: int, seconds: float, plan: str
) -> float:
    from worker.inference.plans import build_forward

    torch.set_num_threads(threads)
    model = build_forward(build_classifier(architecture, 2).eval(), plan, torch.device("cpu"))
    x = torch.rand(batch, 3, size, size)
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model(x)
            done += batch
    return done / (time.perf_counter() - start)


def _child(args: tuple[str, int, int, int, float, str], barrier: mp.Barrier, out: mp.Queue) -> None:  # type: ignore[type-arg]
    barrier.wait()
    out.put(_forward_rate(*args))


def _measure(
    architecture: str,
    size: int,
    batch: int,
    processes: int,
    threads: int,
    seconds: float,
    plan: str,
) -> float:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    args = (architecture, size, batch, threads, seconds, plan)
    procs = [ctx.Process(target=_child, args=(args, barrier, out)) for _ in range(processes)]
    for p in procs:
        p.start()
    rates = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(rates)


def bare_throughput(
    architecture: str,
    size: int,
    batch: int,
    processes: int,
    threads: int,
    seconds: float,
    env: dict[str, str],
    plan: str = "fp32",
) -> float:
    """Images/s of `processes` concurrent copies of the model with `threads` threads each,
    running ``plan`` (the runtime plan the workers use, worker.inference.plans)."""
    cmd = [sys.executable, "-m", "bench.bare", architecture, str(size), str(batch),
           str(processes), str(threads), str(seconds), plan]  # fmt: skip
    out = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["images_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("architecture", "size", "batch", "processes", "threads", "seconds", "plan"):
        parser.add_argument(name)
    a = parser.parse_args()
    rate = _measure(
        a.architecture,
        int(a.size),
        int(a.batch),
        int(a.processes),
        int(a.threads),
        float(a.seconds),
        a.plan,
    )
    print(json.dumps({"images_per_s": rate}))


if __name__ == "__main__":
    main()
