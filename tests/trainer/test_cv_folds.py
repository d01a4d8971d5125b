"""Cross-validation folds: no patient in two folds, every item in exactly one (property test)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import InvalidRequest
from trainer.cross_validation import assign_folds


@st.composite
def _datasets(draw: st.DrawFn) -> tuple[list[int], list[str], int]:
    folds = draw(st.integers(2, 5))
    n_groups = draw(st.integers(folds, 30))
    # Every patient has one label (as in DDTI) and 1-4 images.
    labels = draw(st.lists(st.integers(0, 2), min_size=n_groups, max_size=n_groups))
    sizes = draw(st.lists(st.integers(1, 4), min_size=n_groups, max_size=n_groups))
    targets: list[int] = []
    groups: list[str] = []
    for g, (label, size) in enumerate(zip(labels, sizes, strict=True)):
        targets += [label] * size
        groups += [f"patient-{g}"] * size
    return targets, groups, folds


@settings(max_examples=60, deadline=None)
@given(_datasets(), st.integers(0, 1000))
def test_no_patient_spans_two_folds(data: tuple[list[int], list[str], int], seed: int) -> None:
    targets, groups, folds = data
    if max(np.bincount(targets)) < folds:  # no class can fill the folds: refused, not a crash
        with pytest.raises(InvalidRequest, match="images of some class"):
            assign_folds(targets, groups, folds, seed)
        return
    fold_of = assign_folds(targets, groups, folds, seed)
    assert fold_of.shape == (len(targets),)
    assert set(fold_of.tolist()) <= set(range(folds)) and (fold_of >= 0).all()
    by_group: dict[str, set[int]] = {}
    for group, fold in zip(groups, fold_of.tolist(), strict=True):
        by_group.setdefault(group, set()).add(fold)
    assert all(len(f) == 1 for f in by_group.values()), "a patient is in two folds"
    # Deterministic for a seed: a resumed job gets the same folds.
    assert np.array_equal(fold_of, assign_folds(targets, groups, folds, seed))


def test_fewer_patients_than_folds_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="at least 5 patients"):
        assign_folds([0, 1, 0, 1], ["a", "a", "b", "c"], 5, 0)
