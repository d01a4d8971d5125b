"""Per-tenant quotas on inference work: jobs queued or running at once, and `stat` ones.

A tenant that floods the queues would delay every other tenant's jobs (workers are shared),
and `stat` overtakes routine work, so it is bounded separately. Limits come from the tenant
(set by a platform operator) or else from settings; 0 turns one off.

Checked at `POST /v1/jobs` before the upload is stored. Concurrent submissions may pass the
same count, so a burst can exceed a limit by at most the number of requests in flight: a
bound on abuse, not an exact budget. Studies routed from a PACS are not refused here: the
PACS was already told the C-STORE succeeded, so refusing would lose the study.
"""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.db.models import Job, JobStatus, Priority, Tenant
from shared.errors import QuotaExceeded

ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
RETRY_AFTER_SECONDS = 10


def _active(session: Session, tenant_id: uuid.UUID, *, stat_only: bool, cap: int) -> int:
    """Active jobs of the tenant, counted up to `cap` (the partial index keeps this cheap)."""
    query = select(Job.id).where(Job.tenant_id == tenant_id, Job.status.in_(ACTIVE))
    if stat_only:
        query = query.where(Job.priority == Priority.STAT)
    return session.scalar(select(func.count()).select_from(query.limit(cap).subquery())) or 0


def limits(tenant: Tenant, settings: Settings) -> tuple[int, int]:
    """(active jobs, active stat jobs) allowed for the tenant; 0 = unlimited."""
    jobs = tenant.max_active_jobs
    stat = tenant.max_active_stat_jobs
    return (
        settings.tenant_max_active_jobs if jobs is None else jobs,
        settings.tenant_max_active_stat_jobs if stat is None else stat,
    )


def check_quota(
    session: Session, *, tenant_id: uuid.UUID, priority: Priority, settings: Settings
) -> None:
    """Raise QuotaExceeded if one more job of `priority` would pass a limit of the tenant."""
    tenant = session.get_one(Tenant, tenant_id)
    max_jobs, max_stat = limits(tenant, settings)
    checks = [(max_jobs, False, "queued or running jobs")]
    if priority == Priority.STAT:
        checks.append((max_stat, True, "queued or running stat jobs"))
    for limit, stat_only, what in checks:
        if limit > 0 and _active(session, tenant_id, stat_only=stat_only, cap=limit) >= limit:
            raise QuotaExceeded(
                f"this tenant may have at most {limit} {what}; retry when some have finished",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                limit=limit,
            )
