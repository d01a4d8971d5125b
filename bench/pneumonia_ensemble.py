"""Measure bundled pneumonia members and write the soft-voting ensemble package.

    .venv/bin/python -m bench.pneumonia_ensemble \
        ../shared/data/pneumoniamnist/pneumoniamnist_28_full_reconstructed.npz \
        --members pneumonia-resnet18 pneumonia-efficientnet-lite0 pneumonia-resnet18-seed1

Scores every member package in models/ on the validation and test splits exactly as the
worker serves it (card input spec through shared.ml.presets, fp32, CPU), then:

- adds each member's test AUROC 95% interval (case bootstrap) to its card (weights untouched)
  and re-renders its README;
- writes ``models/<name>/card.json`` + README for the ensemble (kind ``ensemble``, soft vote,
  no weights): its operating point and validation ROC from the ensemble's own validation
  scores, its test metrics, each member's numbers and weights sha256 (registration refuses
  the package if a member's weights change without re-measuring), and the paired bootstrap
  interval of its AUROC minus the best member's.

Member weights are chosen here only from validation (``--weights`` or equal); test is read
once, for the report.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.card_roc import roc_points, validation_scores
from shared.registry import CARD_FILE, WEIGHTS_FILE, read_package_card
from shared.schemas.models import ENSEMBLE_ARCHITECTURE, ModelCard
from shared.storage import sha256_file
from trainer import classification_scores as M
from trainer.card import choose_operating_point, render_readme, summarise_split, write_card
from trainer.datacards import DATACARDS

MODELS = Path(__file__).resolve().parents[1] / "models"
BOOTSTRAP = 1000


def auroc_ci(scores: np.ndarray, labels: np.ndarray) -> list[float]:
    ci = M.bootstrap_ci(M.auroc, scores, labels, samples=BOOTSTRAP, seed=0)
    assert ci is not None
    return [round(ci[0], 4), round(ci[1], 4)]


def paired_difference_ci(
    a: np.ndarray, b: np.ndarray, labels: np.ndarray
) -> tuple[float, list[float]]:
    """AUROC(a) - AUROC(b) on the same cases, with a paired case-bootstrap 95% interval."""
    both = np.stack([a, b], axis=1)

    def diff(s: np.ndarray, y: np.ndarray) -> float:
        return float(M.auroc(s[:, 0], y) - M.auroc(s[:, 1], y))

    ci = M.bootstrap_ci(diff, both, labels, samples=BOOTSTRAP, seed=0)
    assert ci is not None
    return round(diff(both, labels), 4), [round(ci[0], 4), round(ci[1], 4)]


def update_member_card(package: Path, test: np.ndarray, labels: np.ndarray) -> ModelCard:
    """Add the test AUROC interval to a member's card and re-render its README."""
    raw = json.loads((package / CARD_FILE).read_text())
    recorded = raw["metrics"]["test"]["auroc"]
    measured = round(M.auroc(test, labels), 4)
    if abs(recorded - measured) > 1e-3:  # the card must describe these weights
        raise SystemExit(f"{package.name}: card test AUROC {recorded} but measured {measured}")
    raw["metrics"]["test"]["auroc_ci95"] = auroc_ci(test, labels)
    return write_card(package, raw)


def render_ensemble_readme(card: ModelCard) -> str:
    """The shared README renderer plus the members table (an ensemble has no weights)."""
    text = render_readme(card).replace(
        f"| Architecture | `{ENSEMBLE_ARCHITECTURE}` (torchvision, {len(card.labels)} outputs, "
        "softmax) |",
        "| Architecture | soft-voting ensemble (mean of the members' softmax outputs) |",
    )
    rows = [
        "## Members",
        "",
        "Pinned to the exact versions registered from these packages' weights (sha256 below).",
        "Each member preprocesses with its own card's input spec.",
        "",
        "| member | weight | test AUROC (95% CI) | test acc@0.5 | val AUROC | weights sha256 |",
        "|---|---:|---|---:|---:|---|",
    ]
    for m in card.metrics["members"]:
        lo, hi = m["test_auroc_ci95"]
        rows.append(
            f"| [`{m['name']}`](../{m['name']}/README.md) | {m['weight']:g} | "
            f"{m['test_auroc']:.4f} ({lo:.4f}-{hi:.4f}) | {m['test_accuracy_0.5']:.4f} | "
            f"{m['validation_auroc']:.4f} | `{m['weights_sha256'][:12]}…` |"
        )
    d = card.metrics["vs_best_member"]
    rows += [
        "",
        f"Ensemble minus best member ({d['member']}) test AUROC: {d['difference']:+.4f} "
        f"(paired case-bootstrap 95% CI {d['ci95'][0]:+.4f} to {d['ci95'][1]:+.4f}).",
        "",
    ]
    marker = "## Intended use"
    return str(text.replace(marker, "\n".join(rows) + "\n" + marker, 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="pneumoniamnist_28_full_reconstructed.npz")
    parser.add_argument("--members", nargs="+", required=True, help="package names in models/")
    parser.add_argument("--weights", nargs="+", type=float, default=None)
    parser.add_argument("--name", default="pneumonia-ensemble")
    parser.add_argument("--models-dir", type=Path, default=MODELS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    torch.set_num_threads(2)
    data = np.load(args.data)
    y_val, y_test = data["val_labels"].reshape(-1), data["test_labels"].reshape(-1)
    weights = args.weights or [1.0] * len(args.members)
    info = DATACARDS["pneumoniamnist"]

    members: list[dict[str, Any]] = []
    val_scores, test_scores = [], []
    for name, weight in zip(args.members, weights, strict=True):
        package = args.models_dir / name
        val = validation_scores(package, data["val_images"])
        test = validation_scores(package, data["test_images"])
        card = update_member_card(package, test, y_test)
        assert card.training is not None
        test_metrics = card.metrics["test"]
        members.append(
            {
                "name": name,
                "weight": weight,
                "architecture": card.architecture,
                "weights_sha256": sha256_file(package / WEIGHTS_FILE),
                "test_auroc": test_metrics["auroc"],
                "test_auroc_ci95": test_metrics["auroc_ci95"],
                "test_accuracy_0.5": test_metrics["at_threshold_0.5"]["accuracy"],
                "validation_auroc": round(M.auroc(val, y_val), 4),
                "training_wall_time_s": card.training.wall_time_s,
            }
        )
        val_scores.append(val)
        test_scores.append(test)
        print(f"{name}: val AUROC {members[-1]['validation_auroc']:.4f} test AUROC "
              f"{test_metrics['auroc']:.4f} {test_metrics['auroc_ci95']}", flush=True)  # fmt: skip

    w = np.asarray(weights)[:, None]
    val_vote = (np.stack(val_scores) * w).sum(0) / w.sum()
    test_vote = (np.stack(test_scores) * w).sum(0) / w.sum()
    op = choose_operating_point(
        val_vote, y_val, method="youden", target_sensitivity=0.95, split="validation"
    )
    test_summary = summarise_split(test_vote, y_test, op.threshold)
    test_summary["auroc_ci95"] = auroc_ci(test_vote, y_test)
    best = max(range(len(members)), key=lambda i: members[i]["validation_auroc"])
    best_test = max(range(len(members)), key=lambda i: members[i]["test_auroc"])
    difference, ci = paired_difference_ci(test_vote, test_scores[best_test], y_test)
    first = read_package_card(args.models_dir / args.members[0])
    raw: dict[str, Any] = {
        "name": args.name,
        "kind": "ensemble",
        "task": "classification",
        "architecture": ENSEMBLE_ARCHITECTURE,
        "labels": first.labels,
        "positive_label": first.positive_label,
        "input": first.input,
        "ensemble": {"members": args.members, "vote": "soft", "weights": weights},
        "operating_point": op,
        "validation_roc": roc_points(val_vote, y_val),
        "description": (
            "Soft-voting ensemble for paediatric chest X-rays (frontal view): the weighted "
            "mean of its members' pneumonia probabilities, thresholded at an operating point "
            "chosen on the ensemble's own validation scores. Each member is a separately "
            f"trained model package ({', '.join(args.members)}); the job result lists every "
            "member's output next to the vote."
        ),
        "intended_use": info.intended_use,
        "limitations": info.limitations
        + " The members share training data, so their errors are correlated; the ensemble's "
        "interval overlaps its best member's.",
        "data": info.provenance,
        "training": {
            "command": shlex.join(["python", "-m", "bench.pneumonia_ensemble", *sys.argv[1:]]),
            "epochs": 0,
            "wall_time_s": round(sum(m["training_wall_time_s"] for m in members), 1),
            "hardware": first.training.hardware if first.training else "",
            "extra": {
                "what": "no training of its own: wall time is the sum of the members' trainings",
                "member_selection": (
                    "members and weights fixed before reading test; the most validation-"
                    f"accurate member is {members[best]['name']}"
                ),
                "measure_time_s": round(time.perf_counter() - started, 1),
            },
        },
        "metrics": {
            "test": test_summary,
            "validation": summarise_split(val_vote, y_val, op.threshold),
            "members": members,
            "vs_best_member": {
                "member": members[best_test]["name"],
                "difference": difference,
                "ci95": ci,
                "how": "paired case bootstrap over the test split, "
                f"{BOOTSTRAP} resamples (best member: highest test AUROC)",
            },
            "baselines": info.baselines,
        },
    }
    out = args.models_dir / args.name
    card = write_card(out, raw)
    (out / "README.md").write_text(render_ensemble_readme(card))
    print(f"{args.name}: test AUROC {test_summary['auroc']:.4f} {test_summary['auroc_ci95']} "
          f"acc@0.5 {test_summary['at_threshold_0.5']['accuracy']:.4f} "
          f"acc@op {test_summary['at_operating_point']['accuracy']:.4f}; "
          f"minus best member {difference:+.4f} {ci}; wrote {out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
