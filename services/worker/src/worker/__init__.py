"""medimg inference worker."""

from __future__ import annotations

import os
import tempfile

from shared.config import get_settings

# prometheus_client picks multiprocess mode when it is first imported, so the folder
# must be known before any worker module (or shared.prometheus_metrics) imports it.
if get_settings().worker_metrics_port and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="medimg-metrics-")
