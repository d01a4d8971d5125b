"""User-supplied patterns: RE2 (linear time), bounded, refused with 422 naming the field."""

from __future__ import annotations

import httpx
import pytest

from cli.stack import Stack
from shared import dicom_routing, safe_regex
from shared.datasets.records import Record, resolve_groups
from shared.errors import InvalidRequest
from tests.conftest import KeyFactory, client_for
from tests.factories import wait_for_import
from tests.fixtures.datasets import pneumonia_tiny_zip

CATASTROPHIC = r"(a+)+$"  # exponential under a backtracking engine on "a" * n + "b"
HOSTILE_INPUT = "a" * 50 + "b"


def test_catastrophic_pattern_compiles_with_re2_and_matching_finishes() -> None:
    compiled = safe_regex.compile_pattern(CATASTROPHIC, field="group_pattern")
    # Python's re would not return from this search in the lifetime of the test run.
    assert compiled.search(HOSTILE_INPUT) is None
    match = compiled.search("a" * 50)
    assert match is not None and match.group(1) == "a" * 50
    assert type(compiled).__module__.startswith("re2")


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"(a)\1", "invalid escape sequence"),  # backreference
        (r"(?=pat)\w+", "invalid perl operator"),  # lookahead
        (r"(?<!x)y", "invalid perl operator"),  # lookbehind
        ("(unclosed", "missing )"),
        ("x" * (safe_regex.MAX_PATTERN_LENGTH + 1), "longer than"),
    ],
)
def test_backtracking_only_or_invalid_patterns_are_refused(pattern: str, why: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        safe_regex.compile_pattern(pattern, field="group_pattern")
    assert why in raised.value.detail
    assert raised.value.extensions == {"field": "group_pattern"}
    assert raised.value.status == 422


def test_group_limit() -> None:
    assert safe_regex.compile_pattern(r"^(pat\d+)_", max_groups=1).groups == 1
    with pytest.raises(InvalidRequest, match="at most 1 capture"):
        safe_regex.compile_pattern(r"^(pat)(\d+)_", field="group_pattern", max_groups=1)


def test_dicom_routing_uses_safe_regex_case_insensitively() -> None:
    assert dicom_routing.compile_pattern("chest") is safe_regex.compile_pattern(
        "chest", field="pattern", case_sensitive=False
    )
    assert dicom_routing.compile_pattern("CHEST").search("ct chest w/o") is not None
    with pytest.raises(InvalidRequest) as raised:
        dicom_routing.validate_match({"series_description": r"(a)\1"})
    assert raised.value.extensions == {"field": "match.series_description"}


def test_import_grouping_runs_the_pattern_with_re2() -> None:
    """The import worker compiles the pattern itself: the zip's spec file may carry one."""
    records = [
        Record(f"pat00{i}/{'a' * 50}b.png", "0" * 64, "png", 1, 1, None, None, None, None)
        for i in range(3)
    ]
    problems: list[dict[str, str]] = []
    assert resolve_groups(records, "pattern", CATASTROPHIC, problems, b"k") == "pattern"
    assert len(problems) == 3 and all("does not match" in p["problem"] for p in problems)
    problems = []
    resolve_groups(records, "pattern", r"(pat)\1", problems, b"k")
    assert [p["file"] for p in problems] == ["(options)"]
    assert "not a valid RE2 expression" in problems[0]["problem"]


@pytest.fixture(scope="module")
def trainer(stack: Stack, make_key: KeyFactory) -> httpx.Client:
    return client_for(stack, make_key(tenant="safe-regex", scopes=("train",)))


@pytest.mark.parametrize("pattern", [r"^(pat\d+)_\1", r"^(?=pat)(pat\d+)"])
def test_api_refuses_group_pattern_re2_cannot_run(trainer: httpx.Client, pattern: str) -> None:
    response = trainer.post(
        "/v1/datasets",
        data={"name": "regex-refused", "group_pattern": pattern},
        files={"file": ("data.zip", pneumonia_tiny_zip(), "application/zip")},
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["field"] == "group_pattern"
    assert "`group_pattern` is not a valid RE2 expression" in problem["detail"]


def test_api_accepts_a_catastrophic_pattern_and_the_import_finishes(
    trainer: httpx.Client,
) -> None:
    response = trainer.post(
        "/v1/datasets",
        data={"name": "regex-catastrophic", "group_pattern": CATASTROPHIC},
        files={"file": ("data.zip", pneumonia_tiny_zip(), "application/zip")},
    )
    assert response.status_code == 202, response.text
    version = wait_for_import(trainer, response.headers["Location"])
    # File names end in ".png", so `(a+)+$` matches none: the import fails, per file, promptly.
    assert version["status"] == "failed"
    assert any("does not match group_pattern" in e["problem"] for e in version["errors"])
