"""Per-process model cache and batched forward passes."""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from sqlalchemy.orm import Session
from torch import nn

from shared.config import get_settings
from shared.db.models import ModelVersion
from shared.errors import ModelUnavailable
from shared.ml.architectures import build_classifier, load_state_dict
from shared.ml.device import pick_device
from shared.ml.presets import ClassificationPresetEval
from shared.runtime_plans import FP32, plan_for
from shared.schemas.models import ModelCard
from shared.storage import BlobStore, sha256_file
from worker.inference import plans  # noqa: E402

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    version_id: uuid.UUID
    ref: str
    card: ModelCard
    network: nn.Module
    preset: ClassificationPresetEval
    device: torch.device
    # The guarded runtime plan (shared.runtime_plans) and its logits function.
    plan: str = FP32
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def decode_size(self) -> int:
        """Side the decoder may reduce an image to before preprocessing (JPEG draft)."""
        spec = self.card.input
        return spec.native_size or spec.size

    @property
    def decode_sizes(self) -> set[int]:
        return {self.decode_size}

    @torch.inference_mode()
    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        forward = self.forward or self.network
        batch = batch.to(self.device, non_blocking=True)
        probs = torch.softmax(forward(batch).float(), dim=1)
        if self.card.tta == "hflip":
            # The card's test-time augmentation (chosen on validation): mean over the mirror.
            mirrored = torch.softmax(forward(torch.flip(batch, dims=[3])).float(), dim=1)
            probs = (probs + mirrored) / 2
        return probs.cpu()


def load_model(version: ModelVersion, store: BlobStore, device: torch.device) -> LoadedModel:
    """Build the network and load its registered weights; never falls back to random init.

    Raises:
        ModelUnavailable: weights missing from the store, checksum mismatch, or a state
            dict that does not fit the architecture.
    """
    ref = version.ref
    path = store.path(version.weights_key)
    if not path.is_file():
        raise ModelUnavailable(
            f"weights of {ref} are missing from the model store ({path}); "
            "check MEDIMG_STORE_DIR or register the model again"
        )
    if sha256_file(path) != version.weights_sha256:
        raise ModelUnavailable(f"weights of {ref} in the store do not match their checksum")
    card = ModelCard.model_validate(version.card)
    if card.task == "detection":
        from worker.inference.detection import load_detector

        detector = load_detector(path, card, ref, version.id, device)
        log.info("loaded %s (%s) on %s", ref, version.architecture, device)
        return detector  # type: ignore[return-value]  # same interface, detection outputs
    if card.task == "segmentation":
        from worker.inference.segmentation import load_segmenter

        segmenter = load_segmenter(path, card, ref, version.id, device)
        log.info("loaded %s (%s) on %s", ref, version.architecture, device)
        return segmenter  # type: ignore[return-value]  # same interface, mask outputs
    try:
        network = build_classifier(version.architecture, len(version.labels))
        network.load_state_dict(load_state_dict(str(path)), strict=True)
    except (KeyError, RuntimeError) as exc:
        raise ModelUnavailable(f"weights of {ref} cannot be loaded: {exc}") from exc
    network.eval().to(device)
    plan = plan_for(version.runtime_plans, plans.hardware_class())
    forward = plans.build_forward(network, plan, device)
    spec = card.input
    # Warm-up (and compilation, for compiled plans) at load, never inside a request.
    plans.warm_up(
        forward, (spec.channels, spec.size, spec.size), device, [1, get_settings().max_batch_size]
    )
    log.info("loaded %s (%s) on %s, plan %s", ref, version.architecture, device, plan)
    preset = ClassificationPresetEval(card.input)
    return LoadedModel(version.id, ref, card, network, preset, device, plan, forward)


def current_plan(version: ModelVersion) -> str:
    return plan_for(version.runtime_plans, plans.hardware_class())


class ModelCache:
    """Keeps the most recently used models in memory: load once per process, reuse.

    An ensemble's members are cached as models of their own, so a member shared by two
    ensembles (or also used alone) is loaded once.
    """

    def __init__(self, store: BlobStore, capacity: int = 4, device: torch.device | None = None):
        self.store = store
        self.capacity = capacity
        self.device = device or pick_device()
        self._models: OrderedDict[uuid.UUID, LoadedModel] = OrderedDict()
        self._lock = threading.RLock()

    def get(self, version: ModelVersion, session: Session | None = None) -> Any:
        """The loaded model (LoadedModel) or ensemble (LoadedEnsemble) of ``version``.

        Raises:
            ModelUnavailable: see load_model; for ensembles also a member that is missing,
                deleted or labels differently.
        """
        with self._lock:
            if version.kind == "ensemble":
                if session is None:
                    raise ValueError("loading an ensemble needs a session for its members")
                return self._ensemble(version, session)
            model = self._models.get(version.id)
            # A guard run since the load changed the plan: load again with the new one.
            if isinstance(model, LoadedModel) and model.plan != current_plan(version):
                model = None
            if model is None:
                model = load_model(version, self.store, self.device)
                self._models[version.id] = model
                while len(self._models) > self.capacity:
                    self._models.popitem(last=False)
            self._models.move_to_end(version.id)
            return model

    def _ensemble(self, version: ModelVersion, session: Session) -> Any:
        from worker.inference.ensemble import LoadedEnsemble, Member

        card = ModelCard.model_validate(version.card)
        members = []
        for entry in version.members or []:
            member = session.get(ModelVersion, uuid.UUID(str(entry["version_id"])))
            if member is None or member.kind != "single":
                raise ModelUnavailable(
                    f"member {entry.get('ref')} of ensemble {version.ref} is not a loadable model"
                )
            loaded = self.get(member)
            if loaded.card.labels != card.labels:
                raise ModelUnavailable(
                    f"member {member.ref} of {version.ref} has labels {loaded.card.labels}, "
                    f"the ensemble {card.labels}"
                )
            members.append(Member(loaded, float(entry.get("weight") or 1.0)))
        if len(members) < 2:
            raise ModelUnavailable(f"ensemble {version.ref} has fewer than two members")
        return LoadedEnsemble(version.id, version.ref, card, members)
