"""Per-process model cache and batched forward passes."""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from shared.db.models import ModelVersion
from shared.errors import ModelUnavailable
from shared.ml.architectures import build_classifier, load_state_dict
from shared.ml.presets import ClassificationPresetEval
from shared.schemas.models import ModelCard
from shared.storage import BlobStore, sha256_file

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    version_id: uuid.UUID
    ref: str
    card: ModelCard
    network: nn.Module
    preset: ClassificationPresetEval
    device: torch.device

    @torch.inference_mode()
    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        logits = self.network(batch.to(self.device, non_blocking=True))
        return torch.softmax(logits.float(), dim=1).cpu()


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
    try:
        network = build_classifier(version.architecture, len(version.labels))
        network.load_state_dict(load_state_dict(str(path)), strict=True)
    except (KeyError, RuntimeError) as exc:
        raise ModelUnavailable(f"weights of {ref} cannot be loaded: {exc}") from exc
    network.eval().to(device)
    log.info("loaded %s (%s) on %s", ref, version.architecture, device)
    return LoadedModel(version.id, ref, card, network, ClassificationPresetEval(card.input), device)


class ModelCache:
    """Keeps the most recently used models in memory: load once per process, reuse."""

    def __init__(self, store: BlobStore, capacity: int = 4) -> None:
        self.store = store
        self.capacity = capacity
        self.device = pick_device()
        self._models: OrderedDict[uuid.UUID, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, version: ModelVersion) -> LoadedModel:
        with self._lock:
            model = self._models.get(version.id)
            if model is None:
                model = load_model(version, self.store, self.device)
                self._models[version.id] = model
                while len(self._models) > self.capacity:
                    self._models.popitem(last=False)
            self._models.move_to_end(version.id)
            return model
