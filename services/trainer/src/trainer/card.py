"""Model package output: fp16 weights, ``card.json`` (a ModelCard) and a rendered README."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.schemas.models import ModelCard, OperatingPoint
from trainer import classification_scores as M

OPERATING_POINT_METHODS = ("youden", "sensitivity")


def save_weights_fp16(state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    """Save a state_dict with float tensors in half precision (halves the repo footprint).

    ``shared.ml.architectures.load_state_dict`` upcasts to float32 on load.
    """
    half = {
        k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu())
        for k, v in state_dict.items()
    }
    torch.save(half, path)


def choose_operating_point(
    scores: np.ndarray, labels: np.ndarray, *, method: str, target_sensitivity: float, split: str
) -> OperatingPoint:
    """Pick a threshold on ``split`` (never the test split) and record how it was chosen."""
    if method == "youden":
        threshold = M.youden_threshold(scores, labels)
        how = "threshold maximising Youden's J (sensitivity + specificity - 1)"
    elif method == "sensitivity":
        threshold = M.threshold_for_sensitivity(scores, labels, target_sensitivity)
        how = f"highest threshold with sensitivity >= {target_sensitivity:g}"
    else:
        raise ValueError(
            f"unknown operating point method {method!r}; use {OPERATING_POINT_METHODS}"
        )
    threshold = _gap_midpoint(np.asarray(scores, dtype=np.float64), threshold)
    report = M.binary_report(scores, labels, threshold)
    return OperatingPoint(
        threshold=threshold,
        sensitivity=round(report.sensitivity, 4),
        specificity=round(report.specificity, 4),
        source=f"{split} split: {how}",
    )


def _gap_midpoint(scores: np.ndarray, threshold: float) -> float:
    """Move a threshold that sits on a score to the middle of the gap below it.

    Same calls on this split, but tiny numeric differences elsewhere (another device, batch
    size, a rounded copy of the threshold) no longer flip the case sitting on the threshold.
    """
    below = scores[scores < threshold]
    return float((threshold + (below.max() if below.size else 0.0)) / 2)


def summarise_split(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    """AUROC plus threshold metrics at 0.5 (argmax) and at the operating point."""
    return {
        "n": int(len(labels)),
        "n_positive": int(np.sum(labels == 1)),
        "auroc": round(M.auroc(scores, labels), 4),
        "at_threshold_0.5": M.binary_report(scores, labels, 0.5).as_dict(),
        "at_operating_point": M.binary_report(scores, labels, threshold).as_dict(),
    }


def write_card(out_dir: str | Path, data: dict[str, Any]) -> ModelCard:
    """Validate ``data`` as a ModelCard, then write card.json and README.md next to weights.pt."""
    card = ModelCard(**data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "card.json").write_text(card.model_dump_json(indent=2) + "\n")
    (out / "README.md").write_text(render_readme(card))
    return card


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _report_rows(name: str, r: dict[str, Any]) -> str:
    return (
        f"| {name} | {r['threshold']:.4g} | {_pct(r['accuracy'])} | {_pct(r['sensitivity'])} | "
        f"{_pct(r['specificity'])} | {_pct(r['precision'])} | {r['f1']:.3f} | "
        f"{_pct(r['balanced_accuracy'])} |"
    )


def _confusion(name: str, r: dict[str, Any], labels: list[str]) -> list[str]:
    (tn, fp), (fn, tp) = r["confusion_matrix"]
    neg, pos = labels
    return [
        f"{name} (rows: truth, columns: prediction)",
        "",
        f"| | pred {neg} | pred {pos} |",
        "|---|---:|---:|",
        f"| **{neg}** | {tn} | {fp} |",
        f"| **{pos}** | {fn} | {tp} |",
        "",
    ]


def render_readme(card: ModelCard) -> str:
    """Human-readable model card, generated from the same data as card.json."""
    spec, op, m = card.input, card.operating_point, card.metrics
    test, val = m.get("test", {}), m.get("validation", {})
    lines = [
        f"# {card.name}",
        "",
        "<!-- Generated from card.json by trainer.card.render_readme; do not edit by hand. -->",
        "",
        card.description,
        "",
        "| | |",
        "|---|---|",
        f"| Task | {card.task} |",
        f"| Architecture | `{card.architecture}` (torchvision, {len(card.labels)} outputs, "
        "softmax) |",
        f"| Labels | {', '.join(f'`{x}`' for x in card.labels)} "
        f"(positive: `{card.positive_label}`) |",
        f"| Input | {spec.channels} x {spec.size} x {spec.size}; resize `{spec.resize}`"
        + (f", reduced to native {spec.native_size} px first" if spec.native_size else "")
        + f"; mean {spec.mean}, std {spec.std} |",
        f"| Queue | {card.queue} |",
    ]
    if op:
        lines.append(f"| Operating point | {op.threshold:.4g} ({op.source}) |")
    lines += [
        "",
        "## Intended use",
        "",
        card.intended_use,
        "",
        "## Limitations",
        "",
        card.limitations,
        "",
    ]
    if test:
        lines += [
            f"## Performance on the held-out test split (n = {test['n']}, "
            f"{test['n_positive']} {card.positive_label})",
            "",
            f"**AUROC {test['auroc']:.4f}**"
            + (
                " (95% CI {:.4f}-{:.4f}, case bootstrap)".format(*test["auroc_ci95"])
                if test.get("auroc_ci95")
                else ""
            )
            + (f" (validation {val['auroc']:.4f})" if val else ""),
            "",
            "| at | threshold | accuracy | sensitivity | specificity | precision | F1 "
            "| balanced acc. |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            _report_rows("0.5 (argmax)", test["at_threshold_0.5"]),
            _report_rows("operating point", test["at_operating_point"]),
            "",
        ]
        op_report = test["at_operating_point"]
        lines += _confusion("Confusion matrix at the operating point", op_report, card.labels)
        if val:
            lines += [
                f"Validation split (n = {val['n']}) at the operating point: sensitivity "
                f"{_pct(val['at_operating_point']['sensitivity'])}, specificity "
                f"{_pct(val['at_operating_point']['specificity'])}. The threshold was chosen "
                "on validation; no choice (threshold, epoch, configuration) was made on test.",
                "",
            ]
    if m.get("baselines"):
        lines += [
            "## Comparison with published baselines (same test split sizes)",
            "",
            "| method | AUROC | accuracy | source |",
            "|---|---:|---:|---|",
        ]
        if test:
            acc05 = test["at_threshold_0.5"]["accuracy"]
            accop = test["at_operating_point"]["accuracy"]
            lines.append(
                f"| **this model** | **{test['auroc']:.3f}** | **{acc05:.3f}** "
                f"(op. point {accop:.3f}) | this card |"
            )
        lines += [
            f"| {b['method']} | {b['auroc']:.3f} | {b['accuracy']:.3f} | {b.get('source', '')} |"
            for b in m["baselines"]
        ]
        lines.append("")
    lines += provenance_lines(card)
    lines += [
        "## Files",
        "",
        "- `card.json`: this card, machine-readable (`shared.schemas.models.ModelCard`).",
        "- `weights.pt`: `state_dict` in float16; load with "
        "`shared.ml.architectures.load_state_dict` (upcasts to float32).",
        "",
    ]
    return "\n".join(lines) + "\n"


def _fmt_extra(v: Any) -> str:
    return f"`{json.dumps(v)}`" if isinstance(v, dict | list) else str(v)


def provenance_lines(card: ModelCard) -> list[str]:
    """The README's Data and Training sections: where the data came from, how to reproduce."""
    lines: list[str] = []
    if card.data:
        d = card.data
        lines += ["## Data", "", f"- Source: {d.source}", f"- Licence: {d.licence}"]
        lines += [f"- Split: {d.split}", f"- Cite: {d.citation}", ""]
    if card.training:
        t = card.training
        lines += [
            "## Training",
            "",
            "Reproduce from the repository root:",
            "",
            "```bash",
            t.command,
            "```",
            "",
            f"- Epochs run: {t.epochs}; wall time {t.wall_time_s / 60:.1f} min on {t.hardware}; "
            f"seed {t.seed}",
        ]
        lines += [f"- {k}: {_fmt_extra(v)}" for k, v in t.extra.items() if k != "history"]
        lines.append("")
    return lines
