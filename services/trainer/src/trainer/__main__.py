"""Train a classifier on a MedMNIST-style npz and write a model package.

    python -m trainer --data-path pneumoniamnist_28_full_reconstructed.npz --output-dir models

Writes ``<output-dir>/<name>/{weights.pt,card.json,README.md}``. The best-validation-AUROC
weights are stored in float16; the card's metrics are computed after that round trip, with
exactly the preprocessing the worker uses. Structure after pytorch/vision
``references/classification/train.py``.
"""

from __future__ import annotations

import argparse
import copy
import platform
import shlex
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch.utils.data import DataLoader

from shared.ml.architectures import CLASSIFIERS, build_classifier, load_state_dict
from shared.ml.presets import ClassificationPresetEval
from shared.ml.pretrained import (
    imagenet_checkpoint_path,
    imagenet_normalisation,
    load_imagenet_backbone,
)
from shared.schemas.models import InputSpec, ModelCard, TrainingRecord
from trainer import classification_scores as M
from trainer.card import (
    OPERATING_POINT_METHODS,
    choose_operating_point,
    save_weights_fp16,
    summarise_split,
    write_card,
)
from trainer.data import NpzClassification, sha256_file
from trainer.datacards import DATACARDS
from trainer.engine import (
    evaluate,
    make_criterion,
    param_groups,
    seed_everything,
    train_one_epoch,
)
from trainer.presets import ClassificationPresetTrain
from trainer.starting_points import replace_head


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="medimg classification trainer", add_help=add_help)
    p.add_argument("--data-path", required=True, help="MedMNIST-style .npz file")
    p.add_argument("--dataset", default="pneumoniamnist", choices=sorted(DATACARDS))
    p.add_argument("--arch", default="resnet18", choices=sorted(CLASSIFIERS))
    p.add_argument(
        "--start-from",
        default="random",
        choices=("random", "imagenet"),
        help="imagenet: installed ImageNet weights (never downloaded), new head, their mean/std",
    )
    p.add_argument("--name", default=None, help="package name (default: <dataset slug>-<arch>)")
    p.add_argument("--output-dir", default="models", help="the package goes in <dir>/<name>")
    p.add_argument("--input-size", default=64, type=int, help="network input side, px")
    p.add_argument("--native-size", default=28, type=int, help="training image side, px")
    p.add_argument("--channels", default=3, type=int, choices=(1, 3))
    p.add_argument("--mean", default=None, type=float, help="default: train pixel mean")
    p.add_argument("--std", default=None, type=float, help="default: train pixel std")
    p.add_argument("--epochs", default=30, type=int)
    p.add_argument("--batch-size", default=128, type=int)
    p.add_argument("--lr", default=1e-3, type=float)
    p.add_argument("--weight-decay", default=5e-2, type=float)
    p.add_argument("--lr-scheduler", default="cosine", choices=("cosine", "plateau"))
    p.add_argument("--label-smoothing", default=0.0, type=float)
    p.add_argument("--class-weights", default="balanced", choices=("balanced", "none"))
    p.add_argument("--hflip-prob", default=0.0, type=float, help="off for chest X-rays")
    p.add_argument("--patience", default=5, type=int, help="early stopping on val AUROC")
    p.add_argument("--operating-point", default="youden", choices=OPERATING_POINT_METHODS)
    p.add_argument("--target-sensitivity", default=0.95, type=float)
    p.add_argument("--seed", default=0, type=int)
    p.add_argument("--threads", default=2, type=int)
    p.add_argument("--workers", default=0, type=int, help="DataLoader worker processes")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--hardware", default="2-core CPU", help="recorded in the card")
    return p


def format_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """Every option spelled out, so the card's command survives changes to the defaults."""
    parts = ["python", "-m", "trainer"]
    for action in parser._actions:  # argparse has no public way to list its options
        if not action.option_strings or action.dest == "help":
            continue
        value = getattr(args, action.dest)
        flag = action.option_strings[-1]
        if action.nargs == 0:  # a store_true flag
            parts += [flag] if value else []
        elif value is not None:
            parts += [flag, str(value)]
    return shlex.join(parts)


def describe_start(description: str, start_from: str) -> str:
    """The data card says "from scratch"; an ImageNet start must not claim that."""
    if start_from == "imagenet":
        return description.replace("Trained from scratch", "Fine-tuned from ImageNet weights")
    return description


def main(args: argparse.Namespace) -> ModelCard:
    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    device = torch.device("cpu")
    info = DATACARDS[args.dataset]
    if len(info.labels) != 2 or info.positive_label is None:
        raise NotImplementedError("the card writer supports binary tasks only")
    pos = info.labels.index(info.positive_label)
    name = args.name or f"{info.slug}-{args.arch.replace('_', '-')}"
    out_dir = Path(args.output_dir) / name
    out_dir.mkdir(parents=True, exist_ok=True)

    train_raw = NpzClassification(args.data_path, "train", info.labels)
    model = build_classifier(args.arch, len(info.labels))
    start = "random initialisation"
    if args.start_from == "imagenet":
        model = load_imagenet_backbone(args.arch, model)
        replace_head(model, len(info.labels))
        start = f"ImageNet weights ({imagenet_checkpoint_path(args.arch).name}); new head"
        # The pretrained features expect their own normalisation, grey replicated to RGB.
        mean_rgb, std_rgb = imagenet_normalisation(args.arch)
        args.channels = 3
        args.mean = args.mean if args.mean is not None else round(float(np.mean(mean_rgb)), 4)
        args.std = args.std if args.std is not None else round(float(np.mean(std_rgb)), 4)
    if args.mean is None or args.std is None:
        mean, std = train_raw.pixel_stats()
        args.mean = args.mean if args.mean is not None else round(mean, 4)
        args.std = args.std if args.std is not None else round(std, 4)
    spec = InputSpec(
        size=args.input_size,
        channels=args.channels,
        mean=[args.mean] * args.channels,
        std=[args.std] * args.channels,
        resize="center_crop",
        native_size=args.native_size,  # MedMNIST: centre crop, then resize to 28
    )
    train_tf = ClassificationPresetTrain(spec, hflip_prob=args.hflip_prob)
    eval_tf = ClassificationPresetEval(spec)
    train_ds = NpzClassification(args.data_path, "train", info.labels, train_tf)
    val_ds = NpzClassification(args.data_path, "val", info.labels, eval_tf)
    test_ds = NpzClassification(args.data_path, "test", info.labels, eval_tf)
    counts = train_ds.class_counts()
    print(
        f"train {counts} val {val_ds.class_counts()} test {test_ds.class_counts()} "
        f"input {spec.model_dump()}",
        flush=True,
    )

    # Seeded generator: the train file is sorted by class, so shuffling order must reproduce.
    gen = torch.Generator().manual_seed(args.seed)
    train_loader = DataLoader(
        train_ds, args.batch_size, shuffle=True, generator=gen, num_workers=args.workers
    )
    val_loader = DataLoader(val_ds, 256, num_workers=args.workers)
    test_loader = DataLoader(test_ds, 256, num_workers=args.workers)

    model = model.to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = make_criterion(
        counts if args.class_weights == "balanced" else None, label_smoothing=args.label_smoothing
    )
    optimizer = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr)
    scheduler: torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau
    if args.lr_scheduler == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    else:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=0.3, patience=2
        )

    best: dict[str, Any] = {"auroc": -1.0, "loss": float("inf"), "epoch": 0, "state": None}
    history: list[dict[str, float]] = []
    stale = 0
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        loss = train_one_epoch(
            model, criterion, optimizer, train_loader, device, channels_last=args.channels_last
        )
        val = evaluate(model, val_loader, device, channels_last=args.channels_last)
        val_auroc = M.auroc(val.probs[:, pos], val.labels)
        val_acc = M.accuracy(val.probs[:, pos], val.labels)
        seconds = time.perf_counter() - t0
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val_auroc)
        else:
            scheduler.step()
        improved = val_auroc > best["auroc"] or (
            val_auroc == best["auroc"] and val.loss < best["loss"]
        )
        if improved:
            state = copy.deepcopy(model.state_dict())
            best = {"auroc": val_auroc, "loss": val.loss, "epoch": epoch, "state": state}
            stale = 0
        else:
            stale += 1
        history.append(
            {
                "epoch": epoch,
                "train_loss": round(loss, 4),
                "val_loss": round(val.loss, 4),
                "val_auroc": round(val_auroc, 4),
                "val_acc": round(val_acc, 4),
                "lr": lr,
                "time_s": round(seconds, 1),
            }
        )
        print(
            f"epoch {epoch:3d}/{args.epochs} loss {loss:.4f} val_loss {val.loss:.4f} "
            f"val_auroc {val_auroc:.4f} val_acc {val_acc:.4f} lr {lr:.2e} "
            f"time {seconds:.1f}s{' *' if improved else ''}",
            flush=True,
        )
        if stale >= args.patience:
            print(f"early stop: no val AUROC gain for {args.patience} epochs", flush=True)
            break
    train_seconds = time.perf_counter() - t_start

    # Ship fp16, then measure what ships: reload exactly as the worker does.
    weights_path = out_dir / "weights.pt"
    save_weights_fp16(best["state"], weights_path)
    served = build_classifier(args.arch, len(info.labels))
    served.load_state_dict(load_state_dict(str(weights_path)), strict=True)
    val = evaluate(served, val_loader, device)
    test = evaluate(served, test_loader, device)
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
        command=format_command(get_args_parser(), args),
        epochs=len(history),
        wall_time_s=round(time.perf_counter() - t_start, 1),
        hardware=args.hardware,
        seed=args.seed,
        extra={
            "best_epoch": best["epoch"],
            "start": start,
            "selection": f"best validation AUROC; early stopping patience {args.patience}",
            "train_time_s": round(train_seconds, 1),
            "mean_epoch_time_s": round(float(np.mean([h["time_s"] for h in history])), 1),
            "data_file": Path(args.data_path).name,
            "data_sha256": sha256_file(Path(args.data_path)),
            "weights_dtype": "float16",
            "versions": {
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
                "python": platform.python_version(),
            },
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
    t, v = metrics["test"], metrics["validation"]
    print(
        f"best epoch {best['epoch']} | val AUROC {v['auroc']:.4f} | test AUROC {t['auroc']:.4f} "
        f"acc@0.5 {t['at_threshold_0.5']['accuracy']:.4f} "
        f"acc@{op.threshold:.3f} {t['at_operating_point']['accuracy']:.4f} | "
        f"wrote {out_dir}",
        flush=True,
    )
    return card


if __name__ == "__main__":
    main(get_args_parser().parse_args())
