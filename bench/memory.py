"""Memory of the running platform: total PSS per process group, against the 2 GB box.

PSS (proportional set size) charges each shared page to the processes sharing it in equal
parts, so summing it over processes counts the prefork children's copy-on-write pages
(torch, the Python heap inherited from the Celery parent) once, not once per process.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import psutil

from cli.stack import Stack

MIB = 1024 * 1024
OLD_BOX_MIB = 2048  # the thyroid platform's server
GROUPS = ("api", "workers", "postgres", "valkey")


def process_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def stack_groups(stack: Stack) -> dict[str, list[psutil.Process]]:
    """The API and CPU worker process trees, and the embedded servers' trees if any.

    Valkey is started (not daemonised) by this process, so it is found among our own
    children; PostgreSQL is daemonised by pg_ctl and found from its postmaster pid.
    """
    groups = {
        "api": process_tree(stack.processes["api"].pid),
        "workers": process_tree(stack.processes["worker-cpu"].pid),
    }
    servers = stack.servers
    if servers is not None and servers.postgres is not None:
        groups["postgres"] = process_tree(servers.postgres.get_pid())
    valkey = [p for p in psutil.Process().children() if p.name().startswith("valkey")]
    if valkey:
        groups["valkey"] = [t for p in valkey for t in process_tree(p.pid)]
    return groups


def pss_mib(processes: list[psutil.Process]) -> float:
    total = 0
    for p in processes:
        try:
            total += p.memory_full_info().pss
        except psutil.NoSuchProcess:  # a Postgres backend that just exited
            continue
    return total / MIB


@dataclass
class MemoryReport:
    """Total PSS in MiB per group; `peak` is the largest platform total seen while sampling."""

    mib: dict[str, float]
    processes: dict[str, int]
    peak_platform_mib: float = 0.0
    peak_all_mib: float = 0.0
    samples: int = 0

    @property
    def platform_mib(self) -> float:
        return self.mib["api"] + self.mib["workers"]

    @property
    def all_mib(self) -> float:
        return sum(self.mib.values())


@dataclass
class PeakSampler:
    """Samples the stack's PSS in a thread (while a load runs) and keeps the peaks."""

    stack: Stack
    interval_s: float = 0.5
    peak_platform_mib: float = 0.0
    peak_all_mib: float = 0.0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        while True:
            report = measure(self.stack)
            self.peak_platform_mib = max(self.peak_platform_mib, report.platform_mib)
            self.peak_all_mib = max(self.peak_all_mib, report.all_mib)
            self.samples += 1
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> PeakSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def measure(stack: Stack, peaks: PeakSampler | None = None) -> MemoryReport:
    """PSS now, with the peaks `peaks` saw while it sampled."""
    groups = stack_groups(stack)
    report = MemoryReport(
        mib={name: pss_mib(procs) for name, procs in groups.items()},
        processes={name: len(procs) for name, procs in groups.items()},
    )
    if peaks is not None:
        report.peak_platform_mib = peaks.peak_platform_mib
        report.peak_all_mib = peaks.peak_all_mib
        report.samples = peaks.samples
    return report


def verdict(mib: float) -> str:
    return f"{'PASS' if mib <= OLD_BOX_MIB else 'FAIL'} ({mib:.0f} of {OLD_BOX_MIB} MiB)"
