"""Results sent back to a hospital's PACS: STOW-RS or C-STORE, through the callback outbox.

A job made from a DICOM study gets one `callback_delivery` row per destination of its
routing rule (owner_kind ``dicom_result``), in the transaction that creates the job. The
gateway's delivery loop claims a row once its job is final, builds the result objects
(shared.dicom_results: UIDs stable per job and model version, so a retry overwrites,
never duplicates), sends them, and confirms. Failures retry with backoff and jitter; the
results themselves stay in Postgres whatever happens to a delivery.
"""

from shared.delivery.outbox import (
    DELIVERY_KIND,
    Claimed,
    claim_due,
    deliveries_for_job,
    enqueue_deliveries,
    record_outcome,
)

__all__ = [
    "DELIVERY_KIND",
    "Claimed",
    "claim_due",
    "deliveries_for_job",
    "enqueue_deliveries",
    "record_outcome",
]
