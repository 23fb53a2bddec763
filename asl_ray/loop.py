"""The training loop over any iterable of tensor batches. Plain torch, no Ray.

``fit`` runs epochs (with an optional vocabulary curriculum), the LR schedule
and early stopping on val top-1, and hands every epoch's metrics and a way to
get the training state to ``on_epoch_end``; the Ray Train adapter uses that to
report and checkpoint, a plain script can ignore it.

Batches come from a :data:`BatchSource` (epoch, vocabulary limit) -> batches,
so the same loop trains from in-memory samples (``memory_batches``) or from a
Ray Data shard. In a data-parallel run each rank sees its own part of the
data; ``reduce`` adds the ranks' metric accumulators up, so the metrics, and
every decision taken on them (best epoch, LR plateau, early stopping), are the
same on every rank.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from asl_ray.checkpoint import unwrap
from asl_ray.config import FeaturesConfig, TrainConfig
from asl_ray.cutmix import TemporalCutMix
from asl_ray.dataset import SignDataset, collate
from asl_ray.decode import MetricAccumulator
from asl_ray.distill import Teacher, distill_loss, gloss_distill_loss
from asl_ray.losses import LossTerms
from asl_ray.model import output_lengths
from asl_ray.samples import Sample

Batch = dict[str, torch.Tensor]
BatchSource = Callable[[int, int], Iterable[Batch]]  # (epoch index, vocabulary limit) -> batches
Mixing = tuple[TemporalCutMix, torch.Generator]  # train.cutmix and the epoch's generator
Reduce = Callable[[MetricAccumulator], MetricAccumulator]


def _same(acc: MetricAccumulator) -> MetricAccumulator:
    return acc


def _uneven_inputs(model: nn.Module) -> AbstractContextManager[Any]:
    """DDP's join context: a rank that runs out of batches first (a curriculum
    stage keeps a different number of rows per shard) shadows the others'
    all-reduces instead of leaving them waiting."""
    join = getattr(model, "join", None)
    return join() if callable(join) else nullcontext()


@dataclass
class Precision:
    """How a training step runs on its device.

    CPU: float32. CUDA with bf16 support (Ampere and later): autocast to
    bfloat16, whose exponent range equals float32's, so gradients need no
    scaling. Older GPUs: float16 autocast with a ``GradScaler``, since fp16
    gradients underflow to zero without one. Either way a step whose gradient
    norm is not finite is skipped (the scaler then lowers its scale)."""

    dtype: torch.dtype | None = None
    scaler: Any = None


def precision_for(device: torch.device, amp: bool, bf16_supported: bool | None = None) -> Precision:
    if not amp or device.type != "cuda":
        return Precision()
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported()
    if bf16_supported:
        return Precision(torch.bfloat16)
    return Precision(torch.float16, torch.amp.GradScaler("cuda"))


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
    reduce: Reduce = _same,
    precision: Precision | None = None,
    terms: LossTerms | None = None,
    average: AveragedModel | None = None,
    teacher: Teacher | None = None,
    distill_weight: float = 1.0,
    merge_repeats: bool = False,
    awp: float = 0.0,
    cutmix: Mixing | None = None,
) -> dict[str, float]:
    device = device or torch.device("cpu")
    model.train()
    acc = MetricAccumulator(num_classes, merge_repeats=merge_repeats)
    norms: list[float] = []
    distilled: list[float] = []
    precision = precision if precision is not None else precision_for(device, amp)
    terms = terms or LossTerms(blank_penalty, label_smoothing)
    timed = _Waited(loader)
    with _uneven_inputs(model):
        skipped = _train_batches(model, timed, optimizer, acc, norms, terms, grad_clip, device, precision,
                                 average, teacher, distill_weight, distilled, awp, cutmix)
    metrics = reduce(acc).compute()
    metrics["data_wait_seconds"] = timed.seconds  # this rank's; the rest of the epoch is its steps
    if teacher is not None:  # this rank's mean of the distillation term (part of the loss above)
        metrics["distill"] = sum(distilled) / max(len(distilled), 1)
    # DDP averages gradients before the norm is taken: every rank has the same
    # norms, and so skips the same steps.
    finite = [n for n in norms if math.isfinite(n)]
    metrics["grad_norm"] = sum(finite) / max(len(finite), 1)
    metrics["skipped_steps"] = float(skipped)
    return metrics


class _Waited:
    """``loader``, counting the seconds spent waiting for its batches: with a
    step ending in a device sync (the metrics read its scores), that is the
    time a GPU sits idle for want of data."""

    def __init__(self, loader: Iterable[Batch]) -> None:
        self.loader, self.seconds = loader, 0.0

    def __iter__(self) -> Iterator[Batch]:
        batches = iter(self.loader)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            finally:
                self.seconds += time.perf_counter() - t0
            yield batch


def _train_batches(model: nn.Module, loader: Iterable[Batch], optimizer: torch.optim.Optimizer,
                   acc: MetricAccumulator, norms: list[float], terms: LossTerms, grad_clip: float | None,
                   device: torch.device, precision: Precision, average: AveragedModel | None = None,
                   teacher: Teacher | None = None, distill_weight: float = 1.0,
                   distilled: list[float] | None = None, awp: float = 0.0, cutmix: Mixing | None = None) -> int:
    """One pass over ``loader``; how many steps were skipped (non-finite gradients).
    ``average`` (the weights' moving average) follows every step taken;
    ``teacher`` adds the distillation term (distill.py), its values to ``distilled``;
    ``awp`` > 0 takes each step's gradient at adversarially perturbed weights
    (``perturb_weights``); ``cutmix`` (the mixer and its generator) mixes
    batches of clips (cutmix.py), whose train metrics then count each clip's
    own gloss. The metrics are always those of the weights as they are."""
    skipped = 0
    scaler = precision.scaler

    def backward(loss: torch.Tensor) -> None:
        (scaler.scale(loss) if scaler is not None else loss).backward()

    for raw in loader:
        b = _to(raw, device)
        mix: tuple[Batch | None, float] = (None, 0.0)
        if cutmix is not None:
            b, partner, share = cutmix[0](b, cutmix[1])
            mix = (partner, share)
        target = teacher(b["x"], b["lengths"]) if teacher is not None else None
        lp, out, loss, kd = _batch_loss(model, b, terms, precision, device, teacher, target, distill_weight, mix)
        if kd is not None and distilled is not None:
            distilled.append(kd)
        optimizer.zero_grad(set_to_none=True)
        backward(loss)
        if awp:
            moved = perturb_weights(model, awp)
            optimizer.zero_grad(set_to_none=True)
            backward(_batch_loss(model, b, terms, precision, device, teacher, target, distill_weight, mix)[2])
            restore_weights(moved)
        if scaler is not None:
            scaler.unscale_(optimizer)  # clip and check the true gradients
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or math.inf))
        norms.append(norm)
        if scaler is not None:
            scaler.step(optimizer)  # skips the step itself when it found inf/NaN
            scaler.update()
            skipped += not math.isfinite(norm)
        elif math.isfinite(norm):
            optimizer.step()
        else:
            skipped += 1  # a NaN/inf gradient would poison every weight it touches
        if average is not None and math.isfinite(norm):
            average.update_parameters(unwrap(model))
        acc.add(lp.detach().float(), out["lengths"], out["labels"], float(loss.detach()), out["targets"],
                out["target_lengths"])
    return skipped


def _batch_loss(model: nn.Module, b: Batch, terms: LossTerms, precision: Precision, device: torch.device,
                teacher: Teacher | None, target: torch.Tensor | None, distill_weight: float,
                mix: tuple[Batch | None, float] = (None, 0.0),
                ) -> tuple[torch.Tensor, Batch, torch.Tensor, float | None]:
    """The model's log-probabilities on ``b``, the batch at the model's output
    rate, the training loss, and the distillation term's value (None without a teacher).
    ``mix``: the batch with its CutMix partners' targets and their weight (cutmix.py)."""
    aux = None
    with torch.autocast(device.type, dtype=precision.dtype, enabled=precision.dtype is not None):
        if terms.aux_weight:
            lp, aux = model(b["x"], b["lengths"], with_aux=True)
        else:
            lp = model(b["x"], b["lengths"])
    out = at_output_rate(model, b)
    loss, _, _ = terms(lp.float(), out, aux)
    partner, weight = mix
    if partner is not None:
        other, _, _ = terms(lp.float(), at_output_rate(model, partner), aux)
        loss = (1 - weight) * loss + weight * other
    if teacher is None or target is None:
        return lp, out, loss, None
    if teacher.level == "glosses":
        kd = gloss_distill_loss(lp.float(), out["lengths"], target, out["target_lengths"] == 1)
    else:
        kd = distill_loss(lp.float(), target, out["lengths"])
    return lp, out, loss + distill_weight * kd, float(kd.detach())


def perturb_weights(model: nn.Module, size: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Adversarial weight perturbation (``train.awp``): move every weight
    matrix (biases and norms stay) up its current gradient by ``size`` times
    its own norm. Relative to each matrix's norm, so the push means the same
    for a wide layer and a narrow one and does not depend on the loss scale.
    Returns the moves, for ``restore_weights``."""
    moved: list[tuple[torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is None or p.dim() < 2:
                continue
            g, w = p.grad.norm(), p.norm()
            if not (torch.isfinite(g) and g > 0 and w > 0):
                continue  # nothing to climb, or a gradient the step will skip anyway
            delta = p.grad * (size * w / g)
            p.add_(delta)
            moved.append((p, delta))
    return moved


def restore_weights(moved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    with torch.no_grad():
        for p, delta in moved:
            p.sub_(delta)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Batch],
    num_classes: int,
    blank_penalty: float = 0.0,
    device: torch.device | None = None,
    label_smoothing: float = 0.0,
    reduce: Reduce = _same,
    terms: LossTerms | None = None,
    beam: Callable[[Any], Any] | None = None,
    merge_repeats: bool = False,
) -> tuple[dict[str, float], MetricAccumulator]:
    """Metrics of ``loader``'s batches (this rank's part, added up by ``reduce``):
    the isolated clips' ranking metrics and loss, the sentences' word error
    rate (greedy, and with ``beam`` a beam-search decoder); ``merge_repeats``
    scores a gloss read twice in a row as read once."""
    device = device or torch.device("cpu")
    model.eval()
    acc = MetricAccumulator(num_classes, merge_repeats=merge_repeats)
    # The val loss is the plain CTC loss with the blank penalty and smoothing
    # (as before the peak and auxiliary terms existed): comparable across runs.
    terms = LossTerms(blank_penalty, label_smoothing) if terms is None else LossTerms(
        terms.blank_penalty, terms.label_smoothing)
    for raw in loader:
        b = _to(raw, device)
        lp = model(b["x"], b["lengths"]).float()
        b = at_output_rate(model, b)
        iso = b["labels"] > 0
        loss = terms(lp[iso], _rows(b, iso))[0] if bool(iso.any()) else None
        acc.add(lp, b["lengths"], b["labels"], float(loss) if loss is not None else 0.0, b["targets"],
                b["target_lengths"], beam)
    acc = reduce(acc)
    return acc.compute(), acc


def at_output_rate(model: nn.Module, b: Batch) -> Batch:
    """The batch's lengths and gloss spans in the model's CTC steps
    (``model.subsample`` frames each, see model.py) instead of frames."""
    k = int(getattr(unwrap(model), "subsample", 1))
    if k == 1:
        return b
    out = dict(b)
    out["lengths"] = output_lengths(b["lengths"], k)
    if "spans" in b:
        sp = b["spans"]
        start = torch.div(sp[..., 0], k, rounding_mode="floor")
        end = torch.maximum(start + 1, output_lengths(sp[..., 1], k))
        out["spans"] = torch.where(sp >= 0, torch.stack([start, end], -1), sp)  # -1 padding stays
    return out


def _rows(b: Batch, keep: torch.Tensor) -> Batch:
    """The isolated rows of a batch (one gloss each)."""
    if bool(keep.all()):
        return b
    return {"lengths": b["lengths"][keep], "labels": b["labels"][keep], "targets": b["labels"][keep],
            "target_lengths": torch.ones_like(b["labels"][keep])}


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


def make_average(model: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of ``model``'s weights (torch's
    ``AveragedModel``), or None when ``decay`` is 0.

    Why: on 632 training videos val top-1 moves by about 2 points from one
    epoch to the next late in training; the average of the weights over the
    last few hundred steps is a cheap ensemble of those epochs' models
    (Polyak averaging). Measured on WLASL100 (README, row 17): the val curve
    3-4x steadier, its level not higher. The decay warms up as
    min(decay, (1 + n) / (10 + n)) so that the first steps' random weights
    do not linger. Buffers are copied, not averaged (the models have no
    running statistics)."""
    if not decay:
        return None

    def update(averaged: Sequence[torch.Tensor], current: Sequence[torch.Tensor], n: torch.Tensor | int) -> None:
        d = min(decay, (1 + int(n)) / (10 + int(n)))
        for a, c in zip(averaged, current, strict=True):
            a.lerp_(c, 1 - d)

    return AveragedModel(unwrap(model), multi_avg_fn=update)


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
    last_val: MetricAccumulator | None = None  # the latest epoch's val statistics (all ranks added up)
    average: AveragedModel | None = None  # the weights' moving average (train.ema_decay)

    def scored_model(self) -> nn.Module:
        """What is evaluated, selected and saved as the run's model: the
        moving average when there is one, else the plain module (no DDP
        wrapper: evaluation needs no gradient sync, and a rank may hold
        fewer val batches than another)."""
        return self.average.module if self.average is not None else unwrap(self.model)

    def saved(self) -> dict[str, Any]:
        """The state a checkpoint's state.pt keeps to resume (its model.pt
        holds :meth:`scored_model`)."""
        out: dict[str, Any] = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                               "epoch": self.epoch, "best_top1": self.best_top1, "best_epoch": self.best_epoch}
        if self.average is not None:
            out["trained_model"] = unwrap(self.model).state_dict()
            out["average_steps"] = int(self.average.n_averaged)
        return out

    def restore(self, saved: dict[str, Any], history: list[dict[str, float]]) -> None:
        """Continue from :meth:`saved`, ``self.model`` (and ``self.average``)
        built from that checkpoint's model.pt."""
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.epoch = int(saved["epoch"])
        self.best_top1 = float(saved["best_top1"])
        self.best_epoch = int(saved["best_epoch"])
        self.history = list(history)
        if "trained_model" in saved:  # model.pt held the average: the weights being trained are here
            unwrap(self.model).load_state_dict(saved["trained_model"])
        if self.average is not None:
            self.average.n_averaged.fill_(int(saved.get("average_steps", 0)))


EpochHook = Callable[[FitState, dict[str, float]], None]


def _mixing(cfg: TrainConfig, epoch: int) -> Mixing | None:
    """train.cutmix for 0-based ``epoch``, its draws seeded by the run's seed
    and the epoch, so a resumed run mixes its epochs as an unbroken one would."""
    if not cfg.cutmix:
        return None
    lo, hi = cfg.cutmix_share
    return TemporalCutMix(cfg.cutmix, (lo, hi)), torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)


def memory_batches(samples: Sequence[Sample], features: FeaturesConfig, standardizer: Any, batch_size: int,
                   augment_cfg: Any = None, seed: int = 0, rank: int = 0, world: int = 1) -> BatchSource:
    """A :data:`BatchSource` over in-memory samples: this rank's part of a fresh
    shuffle each epoch (seeded by ``seed`` and the epoch), augmented when asked."""

    def batches(epoch: int, limit: int) -> Iterator[Batch]:
        stage = [s for s in samples if s.label <= limit]
        ds = SignDataset(stage, features, standardizer, augment_cfg, seed=seed + 1000 * epoch + rank)
        order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        mine = order[rank::world]
        for i in range(0, len(mine), batch_size):
            yield collate([ds[j] for j in mine[i:i + batch_size]])

    return batches


def set_head_dropout(model: nn.Module, p: float) -> None:
    """The dropout rate in front of the CTC head (``train.late_dropout``). The
    late phase of the Kaggle ISLR winners' recipe: once the model fits its
    train set (the WLASL100 recipe is at ~97% train top-1 by epoch 50, while
    val still moves), heavy dropout on the last layer's input makes the
    train set hard again, so the last epochs keep shaping the encoder instead
    of memorising clips; the early epochs, which learn what to attend to, are
    not slowed by it. Measured on WLASL100 (0.8 from epoch 31 of 100) it does
    not pay: train top-1 falls from ~85% to ~33% and is back to only ~80% by
    epoch 100, val top-1 -5.3 (README, row 24)."""
    head = unwrap(model).head
    assert isinstance(head, nn.Sequential) and isinstance(head[0], nn.Dropout), "head = dropout, linear (model.py)"
    head[0].p = p


def fit(
    state: FitState,
    cfg: TrainConfig,
    train_batches: BatchSource,
    val_batches: Callable[[], Iterable[Batch]] | None,
    num_classes: int,
    device: torch.device | None = None,
    on_epoch_end: EpochHook | None = None,
    amp: bool = False,
    reduce: Reduce = _same,
    teacher: Teacher | None = None,
) -> FitState:
    """Train from ``state.epoch`` to the end of the plan (or early stop);
    ``teacher`` (``train.distill_from``) adds the distillation term."""
    plan = stage_plan(cfg, num_classes)
    precision = precision_for(device or torch.device("cpu"), amp)  # one scaler for the whole run
    terms = LossTerms.of(cfg)
    beam = None
    if cfg.sentences.val:
        from asl_ray.continuous.decoding import BeamDecoder

        # No gloss prior during training: WER per epoch measures the model alone.
        beam = BeamDecoder(num_classes, cfg.sentences.beam_size)
    for epoch in range(state.epoch, len(plan)):
        limit = plan[epoch]
        if cfg.late_dropout and epoch + 1 >= cfg.late_dropout_from_epoch:
            set_head_dropout(state.model, cfg.late_dropout)  # each epoch, so a resumed run has it too
        t0 = time.perf_counter()
        metrics = {f"train_{k}": v for k, v in train_epoch(
            state.model, train_batches(epoch, limit), state.optimizer, num_classes, cfg.blank_penalty,
            cfg.grad_clip, device, amp, cfg.label_smoothing, reduce, precision, terms.at_epoch(epoch + 1),
            state.average, teacher, cfg.distill_weight, merge_repeats=cfg.sentences.merge_repeats,
            awp=cfg.awp if epoch + 1 >= cfg.awp_from_epoch else 0.0, cutmix=_mixing(cfg, epoch),
        ).items()}
        metrics["train_seconds"] = time.perf_counter() - t0
        if val_batches is not None:
            t1 = time.perf_counter()
            val, state.last_val = evaluate(state.scored_model(), val_batches(),
                                           num_classes, cfg.blank_penalty, device, cfg.label_smoothing, reduce,
                                           beam=beam, merge_repeats=cfg.sentences.merge_repeats)
            metrics.update({f"val_{k}": v for k, v in val.items()})
            metrics["val_seconds"] = time.perf_counter() - t1
        if device is not None and device.type == "cuda":  # the run's peak so far, this process's tensors
            metrics["gpu_peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        metrics["epoch"] = epoch + 1
        metrics["epoch_end_time"] = time.time()  # wall clock: lines epochs up with outside samplers (GPU load)
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
