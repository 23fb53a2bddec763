"""Pictures of a run: training curves and the confusion matrix (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def training_curves(history: Sequence[dict[str, float]], path: Path) -> Path:
    """Loss, top-1 and blank ratio per epoch, train and val."""
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, title in zip(axes, ("loss", "top1", "blank_ratio"),
                              ("CTC loss (+ blank penalty)", "top-1 accuracy", "blank ratio (argmax = blank)"),
                              strict=True):
        for split, style in (("train", "-"), ("val", "--")):
            ys = [h.get(f"{split}_{key}") for h in history]
            if any(y is not None for y in ys):
                ax.plot(epochs, [np.nan if y is None else y for y in ys], style, marker=".", label=split)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if key != "loss":
            ax.set_ylim(-0.02, 1.02)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pretrain_curve(history: Sequence[dict[str, float]], path: Path) -> Path:
    """Pre-training: reconstruction loss per epoch against predicting the mean."""
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(epochs, [h["loss"] for h in history], "-", marker=".", label="reconstruction")
    ax.plot(epochs, [h["mean_baseline"] for h in history], "--", label="predicting the mean")
    ax.set_title("masked-landmark pre-training (hidden frames' MSE)")
    ax.set_xlabel("epoch")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def confusion_matrix(cm: np.ndarray, names: Sequence[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows = true gloss); names shown up to 100 classes."""
    n = len(names)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    size = min(4 + 0.16 * n, 20)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if n <= 100:
        fs = max(4, 10 - n // 15)
        ax.set_xticks(range(n), names, rotation=90, fontsize=fs)
        ax.set_yticks(range(n), names, fontsize=fs)
    ax.set_xlabel("predicted (top-1)")
    ax.set_ylabel("true gloss")
    ax.set_title(title or f"confusion matrix, {n} glosses")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
