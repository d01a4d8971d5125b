"""Leak-free splits: stratified by class, grouped by patient/study, seeded and reproducible.

Whole groups (every image of one patient) are dealt to train/validation/test, so no group
is in two splits. Groups are stratified by their main class: within each class the groups
are shuffled with the seed and each goes to the split furthest below its target share.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from shared.errors import InvalidRequest

SPLITS = ("train", "validation", "test")
DEFAULT_RATIOS = {"train": 0.7, "validation": 0.15, "test": 0.15}


@dataclass(frozen=True)
class SplitItem:
    stratum: str  # the class to balance on (detection: the image's rarest class)
    group: str | None  # None: the image is its own group


def normalize_ratios(ratios: dict[str, float] | None) -> dict[str, float]:
    """Ratios for train/validation/test, summing to 1.

    Raises:
        InvalidRequest: unknown split names, negative values, no train share, or a zero sum.
    """
    if not ratios:
        return dict(DEFAULT_RATIOS)
    unknown = set(ratios) - set(SPLITS)
    if unknown:
        raise InvalidRequest(f"unknown split names {sorted(unknown)}; use {', '.join(SPLITS)}")
    values = {s: float(ratios.get(s, 0.0)) for s in SPLITS}
    total = sum(values.values())
    if any(v < 0 for v in values.values()) or total <= 0 or values["train"] <= 0:
        raise InvalidRequest(f"split ratios must be >= 0 with a train share > 0: {ratios}")
    return {s: v / total for s, v in values.items()}


def _group_strata(items: Sequence[SplitItem]) -> dict[str, tuple[str, list[int]]]:
    members: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        members[item.group if item.group is not None else f"\x00item-{i}"].append(i)
    strata: dict[str, tuple[str, list[int]]] = {}
    for group, indices in members.items():
        counts = Counter(items[i].stratum for i in indices)
        main = min(counts, key=lambda s: (-counts[s], s))  # most common; ties by name
        strata[group] = (main, indices)
    return strata


def assign_splits(items: Sequence[SplitItem], ratios: dict[str, float], seed: int) -> list[str]:
    """The split of each item (same order), with no group in two splits.

    Args:
        items: one per image: its stratum and group.
        ratios: normalised shares for train/validation/test.
        seed: the same seed and items always give the same split.

    Returns:
        "train", "validation" or "test" per item.
    """
    by_stratum: dict[str, list[tuple[str, list[int]]]] = defaultdict(list)
    for group, (stratum, indices) in sorted(_group_strata(items).items()):
        by_stratum[stratum].append((group, indices))
    result = [""] * len(items)
    for stratum, groups in sorted(by_stratum.items()):
        random.Random(f"{seed}:{stratum}").shuffle(groups)
        groups.sort(key=lambda g: -len(g[1]))  # stable: big groups first pack best
        total = sum(len(indices) for _, indices in groups)
        target = {s: ratios[s] * total for s in SPLITS}
        have = dict.fromkeys(SPLITS, 0)
        for _, indices in groups:
            split = max(
                (s for s in SPLITS if ratios[s] > 0),
                key=lambda s: (target[s] - have[s], -SPLITS.index(s)),
            )
            have[split] += len(indices)
            for i in indices:
                result[i] = split
    return result


def groups_across_splits(
    groups: Sequence[str | None], splits: Sequence[str]
) -> dict[str, set[str]]:
    """Groups found in more than one split (a leak), for pre-split uploads."""
    seen: dict[str, set[str]] = defaultdict(set)
    for group, split in zip(groups, splits, strict=True):
        if group is not None:
            seen[group].add(split)
    return {g: s for g, s in seen.items() if len(s) > 1}
