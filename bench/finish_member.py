"""Write the card of a `python -m trainer` run that saved its weights but died before its card.

    .venv/bin/python -m bench.finish_member --log run.log --wall-time-s 1020 -- \
        --data-path ...npz --arch resnet18 --name ... --output-dir models ...   # the run's args

`python -m trainer` saves the best-validation weights (fp16) before it measures them and
writes the card; a run that failed in between (2026-12-06: the data-file hash step, fixed in
ce41daf) leaves ``weights.pt`` and its log. This does the rest exactly as the trainer does:
reloads the saved weights as the worker does, measures validation and test, picks the
operating point on validation, and writes card.json + README.md with the run's command and the
per-epoch history parsed from its log. The card records that it was finished this way.
"""

from __future__ import annotations

import argparse
import platform
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch.utils.data import DataLoader

from shared.ml.architectures import build_classifier, load_state_dict
from shared.ml.presets import ClassificationPresetEval
from shared.schemas.models import InputSpec, TrainingRecord
from shared.storage import sha256_file
from trainer import classification_scores as M
from trainer.__main__ import describe_start, format_command, get_args_parser
from trainer.card import choose_operating_point, summarise_split, write_card
from trainer.data import NpzClassification
from trainer.datacards import DATACARDS
from trainer.engine import evaluate

_EPOCH = re.compile(
    r"epoch\s+(?P<epoch>\d+)/\d+ loss (?P<loss>[\d.]+) val_loss (?P<val_loss>[\d.]+) "
    r"val_auroc (?P<auroc>[\d.]+) val_acc (?P<acc>[\d.]+) lr (?P<lr>[\d.e+-]+) "
    r"time (?P<time>[\d.]+)s(?P<best> \*)?"
)


def parse_history(log: str) -> tuple[list[dict[str, float]], int]:
    """The trainer's per-epoch lines, and the last epoch marked best (``*``)."""
    history, best = [], 0
    for m in _EPOCH.finditer(log):
        epoch = int(m["epoch"])
        history.append(
            {
                "epoch": epoch,
                "train_loss": float(m["loss"]),
                "val_loss": float(m["val_loss"]),
                "val_auroc": float(m["auroc"]),
                "val_acc": float(m["acc"]),
                "lr": float(m["lr"]),
                "time_s": float(m["time"]),
            }
        )
        best = epoch if m["best"] else best
    if not history:
        raise SystemExit("no epoch lines in the log")
    return history, best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--wall-time-s", type=float, required=True, help="start to crash")
    parser.add_argument("trainer_args", nargs=argparse.REMAINDER)
    ours = parser.parse_args(argv)
    trainer_parser = get_args_parser()
    args = trainer_parser.parse_args([a for a in ours.trainer_args if a != "--"])
    torch.set_num_threads(args.threads)
    history, best_epoch = parse_history(ours.log.read_text())
    info = DATACARDS[args.dataset]
    assert info.positive_label is not None
    pos = info.labels.index(info.positive_label)
    name = args.name or f"{info.slug}-{args.arch.replace('_', '-')}"
    out_dir = Path(args.output_dir) / name
    weights = out_dir / "weights.pt"
    if args.start_from == "imagenet":  # the trainer's own defaults for an ImageNet start
        from shared.ml.pretrained import imagenet_checkpoint_path, imagenet_normalisation

        mean_rgb, std_rgb = imagenet_normalisation(args.arch)
        args.channels = 3
        args.mean = args.mean if args.mean is not None else round(float(np.mean(mean_rgb)), 4)
        args.std = args.std if args.std is not None else round(float(np.mean(std_rgb)), 4)
        start = f"ImageNet weights ({imagenet_checkpoint_path(args.arch).name}); new head"
    else:
        start = "random initialisation"
    if args.mean is None or args.std is None:
        raise SystemExit("pass the run's --mean/--std (or an ImageNet start)")
    spec = InputSpec(
        size=args.input_size,
        channels=args.channels,
        mean=[args.mean] * args.channels,
        std=[args.std] * args.channels,
        resize="center_crop",
        native_size=args.native_size,
    )
    eval_tf = ClassificationPresetEval(spec)
    val_ds = NpzClassification(args.data_path, "val", info.labels, eval_tf)
    test_ds = NpzClassification(args.data_path, "test", info.labels, eval_tf)
    served = build_classifier(args.arch, len(info.labels))
    served.load_state_dict(load_state_dict(str(weights)), strict=True)
    device = torch.device("cpu")
    val = evaluate(served, DataLoader(val_ds, 256), device)
    test = evaluate(served, DataLoader(test_ds, 256), device)
    logged = next(h["val_auroc"] for h in history if h["epoch"] == best_epoch)
    measured = M.auroc(val.probs[:, pos], val.labels)
    if abs(measured - logged) > 2e-3:  # fp16 round trip moves it a little, not more
        raise SystemExit(f"saved weights give val AUROC {measured:.4f}, log says {logged}")
    op = choose_operating_point(
        val.probs[:, pos],
        val.labels,
        method=args.operating_point,
        target_sensitivity=args.target_sensitivity,
        split="validation",
    )
    metrics: dict[str, Any] = {
        "test": summarise_split(test.probs[:, pos], test.labels, op.threshold),
        "validation": summarise_split(val.probs[:, pos], val.labels, op.threshold),
        "baselines": info.baselines,
    }
    training = TrainingRecord(
        command=format_command(trainer_parser, args),
        epochs=len(history),
        wall_time_s=round(ours.wall_time_s, 1),
        hardware=args.hardware,
        seed=args.seed,
        extra={
            "best_epoch": best_epoch,
            "start": start,
            "selection": f"best validation AUROC; early stopping patience {args.patience}",
            "train_time_s": round(sum(h["time_s"] for h in history), 1),
            "mean_epoch_time_s": round(float(np.mean([h["time_s"] for h in history])), 1),
            "data_file": Path(args.data_path).name,
            "data_sha256": sha256_file(Path(args.data_path)),
            "weights_dtype": "float16",
            "versions": {
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
                "python": platform.python_version(),
            },
            "finished_by": (
                "bench.finish_member: the trainer saved these weights, then died hashing the "
                "data file (fixed in ce41daf); metrics measured here from the saved weights, "
                f"history from its log, {time.strftime('%Y-%m-%d')}"
            ),
            "history": history,
        },
    )
    card = write_card(
        out_dir,
        {
            "name": name,
            "task": "classification",
            "architecture": args.arch,
            "labels": list(info.labels),
            "positive_label": info.positive_label,
            "input": spec,
            "operating_point": op,
            "description": describe_start(info.description, args.start_from),
            "intended_use": info.intended_use,
            "limitations": info.limitations,
            "data": info.provenance,
            "training": training,
            "metrics": metrics,
        },
    )
    t = card.metrics["test"]
    print(f"{name}: val AUROC {measured:.4f} test AUROC {t['auroc']:.4f} "
          f"acc@0.5 {t['at_threshold_0.5']['accuracy']:.4f}; wrote {out_dir}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
