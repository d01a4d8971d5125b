"""Routing rules: which studies go to which model, with which parameters and destinations.

Matching is on the header attributes a PACS administrator routes by (Modality,
BodyPartExamined, SOP Class, calling AE title, Study/Series Description), read from the
original headers before de-identification removes the descriptions. A rule is tried per
series: the first enabled rule (by `position`) that matches at least one series of the
study takes the study, and its job gets the instances of the series it matched.

Description patterns are RE2 (linear time, no backreferences), bounded in length and
memory, so a tenant admin cannot hang the gateway with a catastrophic pattern.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared import safe_regex
from shared.errors import InvalidRequest

LIST_KEYS = ("modality", "body_part", "sop_class_uid", "calling_ae")
PATTERN_KEYS = ("study_description", "series_description")
MATCH_KEYS = LIST_KEYS + PATTERN_KEYS


@dataclass(frozen=True)
class InstanceHeader:
    """The routing-relevant attributes of one received instance (original header)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    modality: str = ""
    body_part: str = ""
    study_description: str = ""
    series_description: str = ""


@dataclass
class SeriesInfo:
    uid: str
    modality: str
    body_part: str
    description: str
    sop_class_uids: set[str] = field(default_factory=set)
    sop_uids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StudyInfo:
    uid: str
    description: str
    calling_ae: str | None
    series: list[SeriesInfo]

    def summary(self) -> dict[str, Any]:
        """JSON facts recorded with the study (why it routed as it did)."""
        return {
            "calling_ae": self.calling_ae,
            "study_description": self.description,
            "series": [
                {
                    "modality": s.modality,
                    "body_part": s.body_part,
                    "series_description": s.description,
                    "sop_class_uids": sorted(s.sop_class_uids),
                    "instances": len(s.sop_uids),
                }
                for s in self.series
            ],
            "instances": sum(len(s.sop_uids) for s in self.series),
        }


@dataclass(frozen=True)
class Rule:
    """A routing rule as the matcher sees it (from a RoutingRule row)."""

    id: Any
    name: str
    match: dict[str, Any]


@dataclass(frozen=True)
class Decision:
    rule: Rule
    series: list[SeriesInfo]


def group_study(headers: Iterable[InstanceHeader], calling_ae: str | None) -> StudyInfo:
    """Group one study's instance headers into series (first value of each attribute wins)."""
    series: dict[str, SeriesInfo] = {}
    study_uid, description = "", ""
    for h in headers:
        study_uid = study_uid or h.study_uid
        description = description or h.study_description
        s = series.setdefault(
            h.series_uid, SeriesInfo(h.series_uid, h.modality, h.body_part, h.series_description)
        )
        s.sop_class_uids.add(h.sop_class_uid)
        s.sop_uids.append(h.sop_uid)
    return StudyInfo(study_uid, description, calling_ae, list(series.values()))


def compile_pattern(pattern: str, where: str = "pattern") -> Any:
    """Compile a routing pattern: RE2 via shared.safe_regex, case-insensitive.

    Raises:
        InvalidRequest: too long, or not valid RE2 syntax (e.g. a backreference).
    """
    return safe_regex.compile_pattern(pattern, field=where, case_sensitive=False)


def validate_match(match: dict[str, Any]) -> dict[str, Any]:
    """Normalise a rule's `match` object; raise InvalidRequest on unknown keys or bad patterns."""
    unknown = set(match) - set(MATCH_KEYS)
    if unknown:
        raise InvalidRequest(
            f"unknown match keys {sorted(unknown)}; allowed: {', '.join(MATCH_KEYS)}"
        )
    clean: dict[str, Any] = {}
    for key in LIST_KEYS:
        values = match.get(key)
        if values is None:
            continue
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise InvalidRequest(f"match.{key} must be a list of non-empty strings")
        clean[key] = [v.strip() for v in values]
    for key in PATTERN_KEYS:
        pattern = match.get(key)
        if pattern is None:
            continue
        if not isinstance(pattern, str):
            raise InvalidRequest(f"match.{key} must be a string (an RE2 pattern)")
        compile_pattern(pattern, f"match.{key}")
        clean[key] = pattern
    return clean


def _in(values: Sequence[str] | None, actual: str) -> bool:
    return values is None or actual.strip().upper() in {v.upper() for v in values}


def _finds(pattern: str | None, text: str) -> bool:
    return pattern is None or compile_pattern(pattern).search(text) is not None


def series_matches(match: dict[str, Any], series: SeriesInfo, study: StudyInfo) -> bool:
    """Every criterion the rule names holds for this series (absent criteria always hold)."""
    classes = match.get("sop_class_uid")
    return (
        _in(match.get("modality"), series.modality)
        and _in(match.get("body_part"), series.body_part)
        and (classes is None or bool(series.sop_class_uids & set(classes)))
        and (match.get("calling_ae") is None or _in(match["calling_ae"], study.calling_ae or ""))
        and _finds(match.get("study_description"), study.description)
        and _finds(match.get("series_description"), series.description)
    )


def route(study: StudyInfo, rules: Sequence[Rule]) -> Decision | None:
    """The first rule (in the given order) matching any series, with the series it matched."""
    for rule in rules:
        matched = [s for s in study.series if series_matches(rule.match, s, study)]
        if matched:
            return Decision(rule, matched)
    return None
