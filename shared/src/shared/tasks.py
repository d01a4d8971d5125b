"""The API <-> worker contract: task names and queues, as plain strings.

The API sends tasks by name (`send_task`) so it never imports worker code or torch.
"""

from __future__ import annotations

from enum import StrEnum


class TaskName(StrEnum):
    INFER = "worker.infer"
    FINE_TUNE = "trainer.fine_tune"


class Queue(StrEnum):
    CPU = "cpu"
    GPU = "gpu"
    TRAIN = "train"
