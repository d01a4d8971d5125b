"""Trainer worker: `celery -A trainer.celery_app worker -Q train --concurrency 1`.

Consumes the `train` queue; one training job at a time per process.
"""

from __future__ import annotations

from shared.config import get_settings
from shared.queueing import make_celery

app = make_celery("trainer", get_settings().require_redis_url())
# Training tasks are long: take one at a time and leave the rest for other trainers.
app.conf.worker_prefetch_multiplier = 1
