"""The champion/challenger non-inferiority rule, on numbers the trainer measured.

Both versions are scored on the same locked test images, so the comparison is paired: the
trainer resamples images (percentile bootstrap) and recomputes the difference of the
discrimination metric (AUROC, macro AUROC for several classes, mAP for detection) on each
resample. The challenger passes when

1. the lower end of the 95% interval of ``challenger - champion`` is above ``-margin``, and
2. its sensitivity at its operating point is at least the champion's minus ``margin``
   (point estimates; the interval of that difference is reported too).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Comparison(BaseModel):
    """One metric on both versions, the paired difference and its 95% interval."""

    metric: str
    champion: float
    challenger: float
    difference: float
    ci95: list[float] | None = Field(description="Of challenger - champion; None: undefined")


class GateReport(BaseModel):
    champion: str
    challenger: str
    test_set: dict[str, Any]
    margin: float
    discrimination: Comparison
    sensitivity: Comparison
    method: str
    checks: list[dict[str, Any]] = Field(default_factory=list)
    passed: bool = False


def decide(report: GateReport) -> GateReport:
    """Fill in the checks and the verdict (a missing interval fails: no evidence, no pass)."""
    m, d, s = report.margin, report.discrimination, report.sensitivity
    low = None if d.ci95 is None else d.ci95[0]
    checks: list[dict[str, Any]] = [
        {
            "check": f"{d.metric} difference: 95% CI lower bound > -margin",
            "value": low,
            "limit": -m,
            "passed": low is not None and low > -m,
        },
        {
            "check": "sensitivity at the operating point >= champion's - margin",
            "value": s.challenger,
            "limit": round(s.champion - m, 6),
            "passed": s.challenger >= s.champion - m - 1e-12,
        },
    ]
    return report.model_copy(
        update={"checks": checks, "passed": all(bool(c["passed"]) for c in checks)}
    )


def summary(report: GateReport) -> str:
    d, s = report.discrimination, report.sensitivity
    ci = "undefined" if d.ci95 is None else f"[{d.ci95[0]:+.4f}, {d.ci95[1]:+.4f}]"
    verdict = "non-inferior" if report.passed else "not shown non-inferior"
    return (
        f"{report.challenger} is {verdict} to {report.champion} at margin {report.margin}: "
        f"{d.metric} {d.challenger:.4f} vs {d.champion:.4f} (difference {d.difference:+.4f}, "
        f"95% CI {ci}); sensitivity {s.challenger:.4f} vs {s.champion:.4f}"
    )
