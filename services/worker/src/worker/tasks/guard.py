"""worker.guard_plans: run the accuracy guard for one model version and store its plans."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.orm import selectinload

from shared.db.models import ModelVersion
from shared.runtime_plans import GuardTolerance, HardwarePlans
from worker.context import WorkerContext
from worker.inference.guard import guard
from worker.inference.runner import LoadedModel, load_model

log = logging.getLogger(__name__)


def guard_version(
    ctx: WorkerContext, version_id: uuid.UUID, tolerance: GuardTolerance | None = None
) -> HardwarePlans | None:
    """Guard every candidate plan on this host's hardware class; None when not guardable.

    Only single classifiers with validation data kept with the version are guarded; the
    others stay on fp32 eager (no stored entry means fp32).
    """
    with ctx.sessions() as session:
        version = session.get(ModelVersion, version_id, options=[selectinload(ModelVersion.model)])
        if version is None or version.kind != "single" or not version.calibration_key:
            log.info("version %s has no calibration data: it stays on fp32", version_id)
            return None
        fp32 = version.runtime_plans  # the guard measures against plain fp32
        version.runtime_plans = None
        model = load_model(version, ctx.store, ctx.models.device)
        version.runtime_plans = fp32
        if not isinstance(model, LoadedModel) or model.card.task != "classification":
            return None
        result = guard(
            model, ctx.store.get(version.calibration_key),
            batch_size=ctx.settings.max_batch_size,
            calibration_name=version.calibration_key, tolerance=tolerance,
        )  # fmt: skip
        plans = dict(version.runtime_plans or {})
        plans[result.hardware] = result.model_dump(mode="json")
        version.runtime_plans = plans
        session.commit()
        log.info("guarded %s on %s: %s (x%.2f)", version.ref, result.hardware, result.chosen,
                 result.speedup)  # fmt: skip
        return result
