"""Reports a running job to Postgres: step progress, epochs, artifacts; detects cancellation.

Every write is conditional on the job still running (and renews its lease); a write that
finds it cancelled raises `Cancelled`, so training stops within about a second.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from shared.artifacts import save_artifact
from trainer import jobstate
from trainer.context import JobSpec, TrainerContext
from trainer.fit import Cancelled
from trainer.fit_state import FitState, delete_checkpoint

log = logging.getLogger(__name__)
# Step progress is written at most this often: fast enough for a live progress bar and a
# prompt cancel, slow enough to cost nothing next to a training step.
STEP_REPORT_SECONDS = 1.0


class Reporter:
    def __init__(self, ctx: TrainerContext, job: JobSpec, epochs: int) -> None:
        self.ctx = ctx
        self.job = job
        self.epochs = epochs
        self.lease_s = float(ctx.settings.job_lease_seconds)
        self.checkpoint_key = job.checkpoint_key
        self.progress: dict[str, Any] = {"epochs": epochs, "monitor": job.monitor}
        self._last_write = 0.0
        # Long phases without progress writes (evaluation, a slow epoch) must not let the
        # lease lapse: a thread renews it, and dies with the process if the trainer is killed.
        self._stopped = threading.Event()
        self._heartbeat = threading.Thread(target=self._renew, daemon=True, name="lease")
        self._heartbeat.start()

    def _renew(self) -> None:
        while not self._stopped.wait(self.lease_s / 4):
            try:
                with self.ctx.sessions() as session:
                    if not jobstate.report_progress(
                        session, self.job.id, self.job.worker, None, self.lease_s
                    ):
                        return  # cancelled or taken over: the next progress write stops us
            except Exception:  # a database hiccup: try again at the next beat
                log.warning("could not renew the training job's lease", exc_info=True)

    def stop(self) -> None:
        self._stopped.set()

    def _write(self, **update: Any) -> None:
        self.progress.update(update)
        with self.ctx.sessions() as session:
            if not jobstate.report_progress(
                session, self.job.id, self.job.worker, self.progress, self.lease_s
            ):
                raise Cancelled
        self._last_write = time.monotonic()

    def on_step(self, epoch: int, step: int, steps: int, loss: float) -> None:
        if step == steps or time.monotonic() - self._last_write >= STEP_REPORT_SECONDS:
            self._write(phase="training", epoch=epoch, step=step, steps=steps, loss=round(loss, 5))

    def _summary(self, state: FitState) -> dict[str, Any]:
        last = state.history[-1] if state.history else {}
        return {
            "epoch": state.epoch,
            "best": state.best_value,
            "best_epoch": state.best_epoch,
            "val": last.get("val_metrics", {}),
        }

    def on_epoch(self, state: FitState, checkpoint_key: str) -> bool:
        row = state.history[-1]
        self.progress.update(
            self._summary(state), phase="training", step=self.progress.get("steps")
        )
        epoch = {
            k: row[k]
            for k in ("fold", "epoch", "train_loss", "val_loss", "val_metrics", "lr", "seconds")
            if k in row
        }
        with self.ctx.sessions() as session:
            ok = jobstate.record_epoch(
                session,
                self.job.id,
                self.job.worker,
                epoch,
                self.progress,
                checkpoint_key,
                self.lease_s,
            )
        if not ok:
            delete_checkpoint(self.ctx.store, checkpoint_key)
            return False
        if self.checkpoint_key != checkpoint_key:
            delete_checkpoint(self.ctx.store, self.checkpoint_key)
        self.checkpoint_key = checkpoint_key
        self._last_write = time.monotonic()
        return True

    def features(self, batch: int, batches: int) -> None:
        """Head-only training: the frozen backbone's pass over the images."""
        if batch == batches or time.monotonic() - self._last_write >= STEP_REPORT_SECONDS:
            self._write(phase="features", step=batch, steps=batches)

    def fold(self, fold: int, folds: int) -> None:
        """A cross-validation job starts (or resumes) fold ``fold`` of ``folds``."""
        self._write(phase="training", fold=fold, folds=folds, epoch=0, step=0)

    def phase(self, name: str, state: FitState) -> None:
        self._write(phase=name, **self._summary(state))

    def final(self, state: FitState) -> dict[str, Any]:
        return {**self.progress, **self._summary(state), "phase": "done"}

    def artifacts(self, files: dict[str, tuple[str, bytes]]) -> None:
        """Store files as the job's artifacts (replacing same-named ones)."""
        with self.ctx.sessions() as session:
            for name, (content_type, data) in files.items():
                save_artifact(
                    session,
                    self.ctx.store,
                    "training_job",
                    self.job.id,
                    self.job.tenant_id,
                    name,
                    content_type,
                    data,
                )
            session.commit()
