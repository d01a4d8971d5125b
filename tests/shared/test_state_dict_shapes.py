"""The torch-free checkpoint reader and architecture catalogue agree with real torch models."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from shared.errors import InvalidModelPackage, UnsafeCheckpoint
from shared.ml.architectures import CLASSIFIERS, build_classifier
from shared.ml_catalog import ARCHITECTURES
from shared.state_dict_shapes import read_state_dict_shapes


@pytest.mark.parametrize("architecture", sorted(CLASSIFIERS))
def test_catalogue_head_and_stem_keys_match_the_built_networks(
    architecture: str, tmp_path: Path
) -> None:
    network = build_classifier(architecture, 5)
    path = tmp_path / "weights.pt"
    torch.save(network.state_dict(), path)
    shapes = read_state_dict_shapes(path)
    spec = ARCHITECTURES[architecture]
    expected = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    assert {k: v.shape for k, v in shapes.items()} == expected
    assert shapes[spec.head_key].shape[0] == 5
    assert shapes[spec.stem_key].shape[1] == 3


def test_half_precision_views_and_parameters_read_like_torch(tmp_path: Path) -> None:
    base = torch.arange(24, dtype=torch.float16).reshape(4, 6)
    state = OrderedDict(
        a=base, view=base[1:, 2:], param=torch.nn.Parameter(torch.ones(3)), n=torch.tensor(7)
    )
    path = tmp_path / "w.pt"
    torch.save(state, path)
    shapes = read_state_dict_shapes(path)
    assert shapes["a"].shape == (4, 6) and shapes["a"].dtype == "half"
    assert shapes["view"].shape == (3, 4)
    assert shapes["param"].shape == (3,) and shapes["n"].shape == ()


class Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned > /tmp/medimg-pwned",))


def test_a_pickle_with_code_is_refused_without_running_it(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"fc.weight": torch.zeros(2, 2), "x": Payload()}, path)
    with pytest.raises(UnsafeCheckpoint, match="posix.system|os.system"):
        read_state_dict_shapes(path)
    assert not Path("/tmp/medimg-pwned").exists()


def test_non_checkpoints_and_wrapped_state_dicts_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(InvalidModelPackage, match="not a PyTorch checkpoint"):
        read_state_dict_shapes(text)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}, "epoch": 3}, wrapped)
    with pytest.raises(InvalidModelPackage, match="flat state_dict"):
        read_state_dict_shapes(wrapped)
