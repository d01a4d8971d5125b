"""Prometheus metrics written by workers and read by the API's /metrics.

Celery's prefork children each hold their own registry, so workers run prometheus_client
in multiprocess mode (PROMETHEUS_MULTIPROC_DIR) and the worker's main process serves the
merged view. Images/s is `rate(medimg_images_processed_total[1m])`.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# 5 ms .. 2 min: a CPU resnet18 image is ~25 ms, a detector on a 2-core box ~1 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

IMAGES_PROCESSED = Counter(
    "medimg_images_processed_total",
    "Images processed by workers, by model and outcome",
    ["model", "status"],
)
MODEL_LATENCY = Histogram(
    "medimg_model_latency_seconds",
    "Forward-pass time per image (batch time / batch size)",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
IMAGE_LATENCY = Histogram(
    "medimg_image_latency_seconds",
    "Decode + preprocess + forward time per image",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
JOB_DURATION = Histogram(
    "medimg_job_end_to_end_seconds",
    "Job creation (API commit) to completion (worker commit)",
    ["model", "status"],
    buckets=LATENCY_BUCKETS,
)
