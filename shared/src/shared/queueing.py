"""Celery configuration shared by the API (producer), the workers and the trainer.

One definition of broker settings keeps producer and consumers in agreement about
queues, priorities and delivery guarantees.
"""

from __future__ import annotations

from celery import Celery
from kombu.entity import Queue as KombuQueue

from shared.config import Settings, get_settings
from shared.db.models import Priority
from shared.tasks import Queue, TaskName

# Redis "priority" is emulated with one list per step; 0 is served first.
PRIORITY_STEPS = [0, 3, 6, 9]
PRIORITY_VALUE = {Priority.STAT: 0, Priority.ROUTINE: 6}
QUEUE_KEY_SEP = ":"
# Hash of delivered, not yet acknowledged messages (kombu's Redis transport default).
UNACKED_KEY = "unacked"
# Longer than any acks-late task's hard time limit, or a running task would be redelivered.
VISIBILITY_TIMEOUT = 3600


def queue_keys(queue: str) -> list[str]:
    """The Redis lists that hold a queue's waiting messages, one per priority step."""
    return [queue if step == 0 else f"{queue}{QUEUE_KEY_SEP}{step}" for step in PRIORITY_STEPS]


def time_limits(settings: Settings) -> dict[str, dict[str, float]]:
    """Soft and hard time limits per task type, in one place.

    Training has none: it acknowledges early, checkpoints and resumes, and can run for hours.
    """
    return {
        TaskName.INFER: {
            "soft_time_limit": settings.infer_soft_time_limit,
            "time_limit": settings.infer_hard_time_limit,
        },
        TaskName.IMPORT_DATASET: {
            "soft_time_limit": settings.import_soft_time_limit,
            "time_limit": settings.import_hard_time_limit,
        },
    }


def make_celery(main: str, broker_url: str) -> Celery:
    app = Celery(main, broker=broker_url)
    limits = time_limits(get_settings())
    for name, pair in limits.items():
        if pair["soft_time_limit"] >= min(pair["time_limit"], VISIBILITY_TIMEOUT):
            raise ValueError(f"{name}: soft time limit must be below the hard one and 1 h")
    app.conf.update(
        # Applied to the task of that name in whichever worker registers it.
        task_annotations=limits,
        task_queues=[KombuQueue(q.value) for q in Queue],  # type: ignore[no-untyped-call]
        task_default_queue=Queue.CPU.value,
        task_serializer="json",
        accept_content=["json"],
        # Postgres holds job state and results; no result backend needed.
        task_ignore_result=True,
        # At-least-once delivery: a task is acknowledged only after it finished, and is
        # redelivered if its worker process dies. Tasks are idempotent (see worker.jobs).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "priority_steps": PRIORITY_STEPS,
            # Readable per-priority list names (cpu, cpu:3, ...) for operators and autoscalers.
            "sep": QUEUE_KEY_SEP,
            "queue_order_strategy": "priority",
            # Redelivery of unacknowledged tasks after a lost worker; longer than any
            # inference task, shorter than a hospital's patience.
            "visibility_timeout": VISIBILITY_TIMEOUT,
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app
