"""Train a detector on a Pascal VOC folder (BCCD by default) and write a model package.

    python -m trainer.detection.train_bccd --data ../shared/data/bccd/BCCD --output-dir models

Trains on ``train``, keeps the epoch with the best validation mAP@0.5 (early stopping on it),
evaluates that epoch once on ``test`` and writes ``<output-dir>/<name>/`` (card.json,
fp16 weights.pt, README.md).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import platform
import random
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch.utils.data import DataLoader

from shared.ml.detection import DETECTORS, build_detector
from shared.ml.pretrained import imagenet_normalisation
from shared.schemas.models import InputSpec
from trainer.card import save_weights_fp16
from trainer.detection.card import write_detection_card
from trainer.detection.data import (
    DetectionDataset,
    DetectionPresetEvalBoxes,
    DetectionPresetTrain,
    collate,
    read_voc,
)
from trainer.detection.engine import evaluate, train_one_epoch

BCCD_LABELS = ["RBC", "WBC", "Platelets"]
BACKBONES = {"fasterrcnn_efficientnet_lite0_fpn": "efficientnet_lite0"}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="VOC folder (Annotations, ...)")
    p.add_argument("--labels", nargs="+", default=BCCD_LABELS)
    p.add_argument("--name", default=None, help="model name; default bccd-<short arch>")
    p.add_argument("--arch", default="fasterrcnn_efficientnet_lite0_fpn", choices=sorted(DETECTORS))
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--size", type=int, default=512, help="letterboxed square input side")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--patience", type=int, default=6, help="epochs without val mAP@0.5 gain")
    p.add_argument("--max-minutes", type=float, default=70.0, help="stop starting new epochs")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="NHWC memory format: several times faster depthwise convolutions on CPU",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", type=Path, default=Path("models"))
    p.add_argument("--hardware", default="2-core CPU (shared)")
    p.add_argument("--limit", type=int, default=0, help="use only N images per split (smoke)")
    return p


def _loader(ds: DetectionDataset, batch_size: int, shuffle: bool) -> DataLoader[Any]:
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, collate_fn=collate)


def _data_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted((folder / "Annotations").glob("*.xml")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def main(args: argparse.Namespace) -> Path:
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backbone = BACKBONES.get(args.arch, "resnet50")
    mean, std = imagenet_normalisation(backbone)
    spec = InputSpec(size=args.size, channels=3, mean=list(mean), std=list(std), resize="letterbox")

    splits = {s: read_voc(args.data, s, args.labels) for s in ("train", "val", "test")}
    if args.limit:
        splits = {s: items[: args.limit] for s, items in splits.items()}
    train_ds = DetectionDataset(splits["train"], args.labels, DetectionPresetTrain(args.size, mean))
    eval_tf = DetectionPresetEvalBoxes(args.size, mean)
    val_ds = DetectionDataset(splits["val"], args.labels, eval_tf)
    test_ds = DetectionDataset(splits["test"], args.labels, eval_tf)
    train_loader = _loader(train_ds, args.batch_size, shuffle=True)

    model = build_detector(args.arch, args.labels, spec, pretrained_backbone=args.pretrained)
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        params, lr=args.lr, momentum=0.9, weight_decay=args.weight_decay, nesterov=True
    )
    total_steps = args.epochs * len(train_loader)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            min(1.0, (s + 1) / args.warmup_steps)
            * 0.5
            * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))
        ),
    )
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None

    best: dict[str, Any] = {"map_50": -1.0}
    best_state: dict[str, torch.Tensor] = {}
    history: list[dict[str, Any]] = []
    stale = 0
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        loss = train_one_epoch(
            model, optimizer, train_loader, device, scaler, on_step=lambda *_: schedule.step()
        )
        val = evaluate(model, _loader(val_ds, args.batch_size, False), device, args.labels)
        row = {
            "epoch": epoch,
            "train_loss": round(loss, 4),
            "val_map_50": val["map_50"],
            "val_map_40_75": val["map_40_75"],
            "lr": optimizer.param_groups[0]["lr"],
            "time_s": round(time.perf_counter() - t0, 1),
        }
        history.append(row)
        print(json.dumps(row), flush=True)
        if float(val["map_50"]) > float(best["map_50"]):  # type: ignore[arg-type]
            best, stale = {**val, "epoch": epoch}, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        elapsed_min = (time.perf_counter() - started) / 60
        mean_epoch_min = elapsed_min / epoch
        if stale >= args.patience or elapsed_min + mean_epoch_min > args.max_minutes:
            print(f"stopping after epoch {epoch} (stale {stale}, {elapsed_min:.1f} min)")
            break

    model.load_state_dict(best_state)
    test = evaluate(model, _loader(test_ds, args.batch_size, False), device, args.labels)
    print("test", json.dumps(test), flush=True)
    wall = time.perf_counter() - started

    name = args.name or "bccd-" + args.arch.replace("_", "-").replace("fasterrcnn", "frcnn")
    out = args.output_dir / name
    out.mkdir(parents=True, exist_ok=True)
    save_weights_fp16(model.state_dict(), out / "weights.pt")
    command = "python -m trainer.detection.train_bccd " + shlex.join(sys.argv[1:])
    write_detection_card(
        out,
        name=name,
        architecture=args.arch,
        labels=args.labels,
        spec=spec,
        metrics={
            "test": test,
            "validation": {k: v for k, v in best.items() if k != "epoch"},
            "n_images": {s: len(items) for s, items in splits.items()},
        },
        training={
            "command": command,
            "epochs": len(history),
            "wall_time_s": round(wall, 1),
            "hardware": f"{args.hardware}; {platform.processor() or platform.machine()}",
            "seed": args.seed,
            "extra": {
                "best_epoch": best["epoch"],
                "selection": f"best validation mAP@0.5; early stopping patience {args.patience}",
                "pretrained_backbone": (
                    f"{backbone} ImageNet" if args.pretrained else "random initialisation"
                ),
                "batch_size": args.batch_size,
                "optimizer": f"SGD nesterov lr {args.lr} wd {args.weight_decay}, warmup+cosine",
                "augmentation": "letterbox, h/v flips, colour jitter 0.15",
                "annotations_sha256": _data_digest(args.data),
                "weights_dtype": "float16",
                "versions": {
                    "torch": torch.__version__,
                    "torchvision": torchvision.__version__,
                    "python": platform.python_version(),
                },
                "history": history,
            },
        },
    )
    print(f"wrote {out} in {wall / 60:.1f} min")
    return out


if __name__ == "__main__":
    main(get_args_parser().parse_args())
