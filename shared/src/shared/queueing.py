"""Celery configuration shared by the API (producer), the workers and the trainer.

One definition of broker settings keeps producer and consumers in agreement about
queues, priorities and delivery guarantees.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue as KombuQueue

from shared.db.models import Priority
from shared.tasks import Queue

# Redis "priority" is emulated with one list per step; 0 is served first.
PRIORITY_STEPS = [0, 3, 6, 9]
PRIORITY_VALUE = {Priority.STAT: 0, Priority.ROUTINE: 6}


def make_celery(main: str, broker_url: str) -> Celery:
    app = Celery(main, broker=broker_url)
    app.conf.update(
        task_queues=[KombuQueue(q.value) for q in Queue],
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
            "sep": ":",
            "queue_order_strategy": "priority",
            # Redelivery of unacknowledged tasks after a lost worker; longer than any
            # inference task, shorter than a hospital's patience.
            "visibility_timeout": 3600,
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app
