"""Pictures of a training run: loss/metric curves as a PNG and TensorBoard event files."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display on workers

import matplotlib.pyplot as plt  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402


def curves_png(history: list[dict[str, Any]], monitor: str) -> bytes:
    """Train/validation loss and the validation metrics per epoch, best epoch marked."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    if any(h["val_loss"] is not None for h in history):
        val = [float("nan") if h["val_loss"] is None else h["val_loss"] for h in history]
        ax_loss.plot(epochs, val, "o-", label="validation")
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="training loss")
    ax_loss.legend()
    names = sorted({k for h in history for k, v in h["val_metrics"].items() if k != "loss"})
    for name in names:
        ys = [h["val_metrics"].get(name) for h in history]
        ax_metric.plot(epochs, [float("nan") if y is None else y for y in ys], "o-", label=name)
    ax_metric.set(title=f"Validation (monitored: {monitor})", xlabel="epoch", ylim=(0, 1.02))
    if names:
        ax_metric.legend()
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def tensorboard_events(history: list[dict[str, Any]], test: dict[str, float]) -> bytes:
    """One TensorBoard event file with per-epoch scalars and the final test scalars."""
    with tempfile.TemporaryDirectory(prefix="medimg-tb-") as folder:
        writer = SummaryWriter(log_dir=folder)
        for h in history:
            step = h["epoch"]
            writer.add_scalar("loss/train", h["train_loss"], step)
            if h["val_loss"] is not None:
                writer.add_scalar("loss/validation", h["val_loss"], step)
            writer.add_scalar("lr", h["lr"], step)
            writer.add_scalar("seconds", h["seconds"], step)
            for name, value in h["val_metrics"].items():
                if value is not None:
                    writer.add_scalar(f"validation/{name}", value, step)
        last = history[-1]["epoch"] if history else 0
        for name, value in test.items():
            writer.add_scalar(f"test/{name}", value, last)
        writer.close()
        (event_file,) = Path(folder).glob("events.out.tfevents.*")
        return event_file.read_bytes()
