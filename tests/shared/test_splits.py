"""Leak-free split properties: no group in two splits, stratified, reproducible by seed."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest

from shared.datasets.splits import SplitItem, assign_splits, normalize_ratios
from shared.errors import InvalidRequest

RATIOS = normalize_ratios(None)  # 0.7 / 0.15 / 0.15


def _items(seed: int) -> list[SplitItem]:
    """300 patients with 1-6 images each, 30 % positive, a patient's images share a class."""
    rng = random.Random(seed)
    items = []
    for patient in range(300):
        label = "pos" if rng.random() < 0.3 else "neg"
        items += [SplitItem(label, f"p{patient}") for _ in range(rng.randint(1, 6))]
    rng.shuffle(items)
    return items


@pytest.mark.parametrize("seed", range(5))
def test_no_group_in_two_splits_and_classes_stratified(seed: int) -> None:
    items = _items(seed)
    splits = assign_splits(items, RATIOS, seed)
    where: dict[str | None, set[str]] = defaultdict(set)
    for item, split in zip(items, splits, strict=True):
        where[item.group].add(split)
    assert all(len(s) == 1 for s in where.values())
    for label in ("pos", "neg"):
        counts = Counter(s for i, s in zip(items, splits, strict=True) if i.stratum == label)
        total = sum(counts.values())
        for split, ratio in RATIOS.items():
            # Whole groups of <= 6 images: within a few images of the target share.
            assert abs(counts[split] - ratio * total) <= 6, (label, counts)


def test_same_seed_same_split_other_seed_other_split() -> None:
    items = _items(0)
    assert assign_splits(items, RATIOS, 1) == assign_splits(items, RATIOS, 1)
    assert assign_splits(items, RATIOS, 1) != assign_splits(items, RATIOS, 2)


def test_ungrouped_items_are_their_own_groups_and_zero_ratios_stay_empty() -> None:
    items = [SplitItem("a" if i % 2 else "b", None) for i in range(100)]
    splits = assign_splits(items, normalize_ratios({"train": 0.8, "test": 0.2}), 0)
    assert Counter(splits) == {"train": 80, "test": 20}


@pytest.mark.parametrize("ratios", [{"train": 0}, {"train": 1, "holdout": 1}, {"train": -1}])
def test_bad_ratios(ratios: dict[str, float]) -> None:
    with pytest.raises(InvalidRequest):
        normalize_ratios(ratios)
