"""The API <-> worker contract: task names and queues, as plain strings.

The API sends tasks by name (`send_task`) so it never imports worker code or torch.
"""

from __future__ import annotations

from enum import StrEnum


class TaskName(StrEnum):
    INFER = "worker.infer"
    # Dataset import decodes and hashes images (no torch) on the `datasets` queue.
    IMPORT_DATASET = "worker.import_dataset"
    # Accuracy guard of a version's runtime plans (issue 14): cpu queue, minutes at most.
    GUARD_PLANS = "worker.guard_plans"
    FINE_TUNE = "trainer.fine_tune"
    # Champion/challenger gate on a model line's locked test set (issue 17): train queue.
    EVALUATE_CHALLENGER = "trainer.evaluate_challenger"


class Queue(StrEnum):
    CPU = "cpu"
    GPU = "gpu"
    TRAIN = "train"
    # Dataset imports, consumed by their own worker: one tenant's 8 GiB zip (or a slow
    # pattern) holds an import process, never the inference processes every tenant shares.
    DATASETS = "datasets"
