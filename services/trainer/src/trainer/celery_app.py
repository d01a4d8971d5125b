"""Trainer worker: `celery -A trainer.celery_app worker -Q train --concurrency 1`.

Consumes the `train` queue; one training job at a time per process.
"""

from __future__ import annotations

from typing import Any

from celery.signals import setup_logging, worker_process_init

from shared.config import get_settings
from shared.logs import configure_logging
from shared.queueing import make_celery
from trainer.context import configure_torch

app = make_celery("trainer", get_settings().require_redis_url())
# Training tasks are long: take one at a time and leave the rest for other trainers.
app.conf.worker_prefetch_multiplier = 1


@setup_logging.connect
def _logging(**_: Any) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, json_logs=settings.json_logs)


@worker_process_init.connect
def _init_process(**_: Any) -> None:
    configure_torch(get_settings())


# Registers trainer.fine_tune and trainer.evaluate_challenger (issue 17) on this app
# (imported last: they import the app).
from trainer import gate, tasks  # noqa: E402, F401
