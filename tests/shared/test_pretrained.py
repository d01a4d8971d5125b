"""ImageNet starting points: the Lite0 port reproduces ImageNet predictions; missing or damaged
torchvision files fail loudly and name the file."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models._meta import _IMAGENET_CATEGORIES

from shared.ml.architectures import build_classifier
from shared.ml.efficientnet_lite import LITE_MEAN, LITE_STD
from shared.ml.pretrained import PretrainedWeightsMissing, load_imagenet_backbone

# A real photograph shipped with matplotlib (US Navy portrait of Grace Hopper, public domain).
GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def _imagenet_eval(path: Path) -> torch.Tensor:
    image = Image.open(path).convert("RGB")
    scale = 256 / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    left, top = (image.width - 224) // 2, (image.height - 224) // 2
    image = image.crop((left, top, left + 224, top + 224))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
    mean, std = torch.tensor(LITE_MEAN).view(3, 1, 1), torch.tensor(LITE_STD).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0)


def test_lite0_wheel_weights_classify_a_real_photo() -> None:
    model = load_imagenet_backbone(
        "efficientnet_lite0", build_classifier("efficientnet_lite0", 1000)
    )
    with torch.inference_mode():
        probs = model.eval()(_imagenet_eval(GRACE_HOPPER)).softmax(1)[0]
    top5 = [_IMAGENET_CATEGORIES[i] for i in probs.topk(5).indices]
    # A woman in a dark naval uniform with a cap: uniform/gown/mortarboard classes, confidently.
    assert "military uniform" in top5
    assert set(top5[:2]) <= {"academic gown", "mortarboard", "military uniform"}
    assert probs.max() > 0.2


def test_lite0_backbone_loads_with_a_new_head() -> None:
    model = load_imagenet_backbone("efficientnet_lite0", build_classifier("efficientnet_lite0", 3))
    assert model._fc.out_features == 3
    # Backbone weights are ImageNet's, not random: the first BN has trained running stats.
    assert not torch.allclose(model._bn0.running_var, torch.ones(32))


def test_missing_torchvision_file_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(PretrainedWeightsMissing) as err:
        load_imagenet_backbone("resnet18", build_classifier("resnet18", 2))
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(expected) in err.value.detail
    assert err.value.status == 503


def test_damaged_torchvision_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    model = build_classifier("resnet18", 1000)
    torch.save(model.state_dict(), folder / "resnet18-f37072fd.pth")  # right name, wrong bytes
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(PretrainedWeightsMissing, match="damaged"):
        load_imagenet_backbone("resnet18", model)
