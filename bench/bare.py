"""The ceiling: the bare model's forward pass, no decode, no queue, no database."""

from __future__ import annotations

import multiprocessing as mp
import time

import torch

from shared.ml.architectures import build_classifier


def _forward_rate(architecture: str, size: int, batch: int, threads: int, seconds: float) -> float:
    torch.set_num_threads(threads)
    model = build_classifier(architecture, 2).eval()
    x = torch.rand(batch, 3, size, size)
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model(x)
            done += batch
    return done / (time.perf_counter() - start)


def _child(args: tuple[str, int, int, float], start: mp.Barrier, out: mp.Queue) -> None:  # type: ignore[type-arg]
    start.wait()
    out.put(_forward_rate(args[0], args[1], args[2], 1, args[3]))


def bare_throughput(
    architecture: str, size: int, batch: int, processes: int, threads: int, seconds: float = 10
) -> float:
    """Images/s of `processes` independent copies of the model, `threads` each."""
    if processes == 1:
        return _forward_rate(architecture, size, batch, threads, seconds)
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    procs = [
        ctx.Process(target=_child, args=((architecture, size, batch, seconds), barrier, out))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    rates = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(rates)
