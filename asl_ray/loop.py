"""The training loop over any iterable of tensor batches. Plain torch, no Ray.

``fit`` runs epochs (with an optional vocabulary curriculum), the LR schedule
and early stopping on val top-1, and hands every epoch's metrics and a way to
get the training state to ``on_epoch_end``; the Ray Train adapter uses that to
report and checkpoint, a plain script can ignore it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from asl_ray.config import TrainConfig
from asl_ray.dataset import Sample
from asl_ray.decode import MetricAccumulator
from asl_ray.losses import ctc_blank_loss

Batch = dict[str, torch.Tensor]


def _to(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def train_epoch(
    model: nn.Module,
    loader: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    num_classes: int,
    blank_penalty: float = 0.0,
    grad_clip: float | None = None,
    device: torch.device | None = None,
    amp: bool = False,
    label_smoothing: float = 0.0,
) -> dict[str, float]:
    device = device or torch.device("cpu")
    model.train()
    acc = MetricAccumulator(num_classes)
    norms: list[float] = []
    for raw in loader:
        b = _to(raw, device)
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            lp = model(b["x"], b["lengths"])
        loss, _, _ = ctc_blank_loss(lp.float(), b["lengths"], b["targets"], b["target_lengths"], blank_penalty,
                                    label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or math.inf)
        norms.append(float(norm))
        optimizer.step()
        acc.add(lp.detach(), b["lengths"], b["labels"], float(loss.detach()))
    metrics = acc.compute()
    metrics["grad_norm"] = sum(norms) / max(len(norms), 1)
    return metrics


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Batch],
    num_classes: int,
    blank_penalty: float = 0.0,
    device: torch.device | None = None,
    label_smoothing: float = 0.0,
) -> tuple[dict[str, float], MetricAccumulator]:
    device = device or torch.device("cpu")
    model.eval()
    acc = MetricAccumulator(num_classes)
    for raw in loader:
        b = _to(raw, device)
        lp = model(b["x"], b["lengths"]).float()
        loss, _, _ = ctc_blank_loss(lp, b["lengths"], b["targets"], b["target_lengths"], blank_penalty,
                                    label_smoothing)
        acc.add(lp, b["lengths"], b["labels"], float(loss))
    return acc.compute(), acc


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_epochs: int) -> Any:
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=3)

    def factor(epoch: int) -> float:
        if epoch < cfg.warmup_epochs:
            return (epoch + 1) / (cfg.warmup_epochs + 1)
        if cfg.schedule == "none":
            return 1.0
        progress = (epoch - cfg.warmup_epochs) / max(1, total_epochs - cfg.warmup_epochs)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def stage_plan(cfg: TrainConfig, num_glosses: int) -> list[int]:
    """Vocabulary limit of every epoch: curriculum stages first, then all glosses."""
    plan: list[int] = []
    for k in cfg.curriculum or []:
        if k < num_glosses:
            plan += [k] * cfg.curriculum_epochs
    return plan + [num_glosses] * cfg.epochs


@dataclass
class FitState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    epoch: int = 0  # epochs completed
    best_top1: float = -1.0
    best_epoch: int = -1
    history: list[dict[str, float]] = field(default_factory=list)


EpochHook = Callable[[FitState, dict[str, float]], None]
LoaderFactory = Callable[[Sequence[Sample], int], Iterable[Batch]]


def fit(
    state: FitState,
    cfg: TrainConfig,
    train_samples: Sequence[Sample],
    train_loader: LoaderFactory,
    val_loader: Iterable[Batch] | None,
    num_classes: int,
    device: torch.device | None = None,
    on_epoch_end: EpochHook | None = None,
    amp: bool = False,
) -> FitState:
    """Train from ``state.epoch`` to the end of the plan (or early stop)."""
    plan = stage_plan(cfg, num_classes)
    for epoch in range(state.epoch, len(plan)):
        limit = plan[epoch]
        stage = [s for s in train_samples if s.label <= limit]
        loader = train_loader(stage, epoch)
        t0 = time.perf_counter()
        metrics = {f"train_{k}": v for k, v in train_epoch(
            state.model, loader, state.optimizer, num_classes, cfg.blank_penalty, cfg.grad_clip, device, amp,
            cfg.label_smoothing,
        ).items()}
        metrics["train_seconds"] = time.perf_counter() - t0
        if val_loader is not None:
            val, _ = evaluate(state.model, val_loader, num_classes, cfg.blank_penalty, device, cfg.label_smoothing)
            metrics.update({f"val_{k}": v for k, v in val.items()})
        metrics["epoch"] = epoch + 1
        metrics["vocab_limit"] = limit
        metrics["lr"] = state.optimizer.param_groups[0]["lr"]
        key = metrics.get("val_top1", metrics["train_top1"])
        if isinstance(state.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            state.scheduler.step(key)
        else:
            state.scheduler.step()
        state.epoch = epoch + 1
        # Only full-vocabulary epochs can be "best": curriculum stages score
        # on an easier problem.
        if limit == num_classes and key > state.best_top1:
            state.best_top1, state.best_epoch = key, epoch + 1
        metrics["best_val_top1"] = max(state.best_top1, 0.0)
        state.history.append(metrics)
        if on_epoch_end is not None:
            on_epoch_end(state, metrics)
        if (cfg.early_stop_patience and limit == num_classes and state.best_epoch > 0
                and state.epoch - state.best_epoch >= cfg.early_stop_patience):
            break
    return state
