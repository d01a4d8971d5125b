"""Serve the worker's Prometheus metrics, merged over its prefork children.

PROMETHEUS_MULTIPROC_DIR is set in worker/__init__.py, before prometheus_client loads.
"""

from __future__ import annotations

import os
import shutil

from shared.config import get_settings

PORT = get_settings().worker_metrics_port


def start() -> None:
    """Start the HTTP endpoint in the worker's main process (no-op when no port is set)."""
    if not PORT:
        return
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    # Files of a previous run would be summed into this one's counters.
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, exist_ok=True)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    start_http_server(PORT, registry=registry)


def child_exited(pid: int) -> None:
    if PORT:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
