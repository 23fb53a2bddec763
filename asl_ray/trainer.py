"""Ray Train edge: build the TorchTrainer and the short worker adapter.

Everything that learns lives in plain torch modules (``loop``, ``model``,
``losses``, ``decode``); this file only wires them to Ray Train: each worker
reads the feature dataset, takes its shard of the train split through a
``DistributedSampler``, wraps the model in DDP (``prepare_model``), and
reports metrics plus a checkpoint every epoch. A restarted worker (after a
failure, or ``train.resume_from``) continues from the last checkpoint.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from asl_ray.checkpoint import build_model, latest_checkpoint, load_checkpoint, save_checkpoint, unwrap
from asl_ray.config import Config, resolve_paths
from asl_ray.dataset import SignDataset, Splits, collate, fit_standardizer, load_splits
from asl_ray.decode import collapse_warning
from asl_ray.errors import UserError
from asl_ray.extract import read_features
from asl_ray.inputs import Standardizer
from asl_ray.loop import FitState, fit, make_optimizer, make_scheduler, stage_plan
from asl_ray.model import count_parameters
from asl_ray.tracking import RunTracker, tracking_uri
from asl_ray.vocab import Vocabulary


def load_data(cfg: Config, vocab: Vocabulary | None = None) -> Splits:
    splits = load_splits(read_features(cfg.extract.output_dir), cfg.train.vocab_size, cfg.features.max_frames, vocab)
    if not splits.train:
        raise UserError("no train samples in the vocabulary: check train.vocab_size and the dataset")
    return splits


def epoch_line(m: dict[str, float], total: int) -> str:
    val = (f" | val loss {m['val_loss']:.3f} top1 {m['val_top1']:.1%} top5 {m['val_top5']:.1%} "
           f"blank {m['val_blank_ratio']:.2f}") if "val_top1" in m else ""
    return (f"epoch {int(m['epoch'])}/{total} (vocab {int(m['vocab_limit'])}) | train loss {m['train_loss']:.3f} "
            f"top1 {m['train_top1']:.1%} blank {m['train_blank_ratio']:.2f} grad {m['train_grad_norm']:.2f}{val}")


def emit(line: str) -> None:
    """One progress line from a worker. Ray Train patches ``print`` into its
    logger and echoes it as well (every line twice); the real stdout is
    forwarded to the driver once."""
    print(line, file=sys.__stdout__, flush=True)


def train_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train worker function: the adapter between Ray and ``loop.fit``."""
    import ray.train
    import ray.train.torch

    # Ray Train logs every report and checkpoint at INFO (one logger is named
    # after its file); our epoch line already says it.
    from ray.train.v2._internal.execution import context as _train_context

    for name in ("ray.train", _train_context.__file__):
        logging.getLogger(name).setLevel(logging.WARNING)

    cfg = Config.model_validate(loop_config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.train.seed)
    device = ray.train.torch.get_device()

    resume = ray.train.get_checkpoint()
    resume_dir = None
    if resume is not None:
        resume_dir = resume.to_directory()
    elif loop_config.get("resume_from"):
        resume_dir = loop_config["resume_from"]
    loaded = load_checkpoint(resume_dir, with_state=True) if resume_dir else None
    splits = load_data(cfg, loaded.vocab if loaded else None)
    standardizer = loaded.standardizer if loaded else fit_standardizer(splits.train, cfg.features)
    num_classes = splits.vocab.num_glosses

    model: torch.nn.Module = ray.train.torch.prepare_model(loaded.model if loaded else build_model(cfg, num_classes))
    optimizer = make_optimizer(model, cfg.train)
    total = len(stage_plan(cfg.train, num_classes))
    scheduler = make_scheduler(optimizer, cfg.train, total)
    state = FitState(model, optimizer, scheduler)
    if loaded:
        optimizer.load_state_dict(loaded.state["optimizer"])
        scheduler.load_state_dict(loaded.state["scheduler"])
        state.epoch = int(loaded.state["epoch"])
        state.best_top1 = float(loaded.state["best_top1"])
        state.best_epoch = int(loaded.state["best_epoch"])
        state.history = list(loaded.history)

    tracker = None
    if rank == 0 and loop_config.get("mlflow_run_id"):
        tracker = RunTracker.attach(loop_config["mlflow_uri"], loop_config["mlflow_run_id"])
        tracker.log_params({"num_parameters": count_parameters(unwrap(model)),
                            "train_samples": len(splits.train), "val_samples": len(splits.val),
                            "num_glosses": num_classes, "dropped_samples": sum(splits.dropped.values())})
    if rank == 0:
        emit(f"train: {splits.describe()}; {count_parameters(unwrap(model)):,} parameters; "
              f"{world} worker(s) on {device}" + (f"; resuming after epoch {state.epoch}" if loaded else ""))

    def train_loader(samples: Any, epoch: int) -> DataLoader:
        seed = cfg.train.seed + 1000 * epoch + rank
        ds = SignDataset(samples, cfg.features, standardizer, cfg.train.augment, seed=seed)
        sampler: DistributedSampler = DistributedSampler(ds, world, rank, shuffle=True, seed=cfg.train.seed)
        sampler.set_epoch(epoch)
        return DataLoader(ds, batch_size=cfg.train.batch_size, sampler=sampler, collate_fn=collate)

    # Every worker scores the whole (small) val split, so all ranks agree on
    # val metrics and early stopping without a collective.
    val_loader = DataLoader(SignDataset(splits.val, cfg.features, standardizer), batch_size=64,
                            collate_fn=collate) if splits.val else None

    def on_epoch_end(st: FitState, metrics: dict[str, float]) -> None:
        metrics = {**metrics, "score": metrics.get("val_top1", metrics["train_top1"])}
        if rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        emit(epoch_line(metrics, total))
        warning = collapse_warning({"blank_ratio": metrics.get("val_blank_ratio", metrics["train_blank_ratio"]),
                                    "top1": metrics["score"]}, num_classes)
        if warning:
            emit(warning)
        if tracker is not None:
            tracker.log_metrics(metrics, step=int(metrics["epoch"]))
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(
                Path(tmp), cfg, st.model, splits.vocab, standardizer,
                {"optimizer": st.optimizer.state_dict(), "scheduler": st.scheduler.state_dict(),
                 "epoch": st.epoch, "best_top1": st.best_top1, "best_epoch": st.best_epoch},
                st.history,
            )
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    fit(state, cfg.train, splits.train, train_loader, val_loader, num_classes, device, on_epoch_end,
        amp=device.type == "cuda")


def _use_gpu(cfg: Config) -> bool:
    if cfg.train.use_gpu is not None:
        return cfg.train.use_gpu
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def build_trainer(cfg: Config, name: str, mlflow_run_id: str | None = None, mlflow_uri: str | None = None,
                  callbacks: list[Any] | None = None) -> Any:
    """One function that builds the TorchTrainer; ``train`` and ``tune`` both call it."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    storage = cfg.train.run_dir if "://" in cfg.train.run_dir else str(Path(cfg.train.run_dir).resolve())
    use_gpu = _use_gpu(cfg)
    return TorchTrainer(
        train_worker,
        train_loop_config={"cfg": cfg.model_dump(mode="json"), "mlflow_run_id": mlflow_run_id,
                           "mlflow_uri": mlflow_uri, "resume_from": cfg.train.resume_from},
        scaling_config=ScalingConfig(
            num_workers=cfg.train.num_workers, use_gpu=use_gpu,
            resources_per_worker=None if use_gpu else {"CPU": cfg.train.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=name, storage_path=storage,
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.checkpoints_to_keep,
                                               checkpoint_score_attribute="score", checkpoint_score_order="max"),
            callbacks=callbacks,
        ),
    )


@dataclass
class TrainOutcome:
    name: str
    run_dir: Path
    best_checkpoint: Path | None
    best_metrics: dict[str, float]
    history: list[dict[str, float]]
    mlflow_run_id: str | None
    tracking_uri: str | None
    curves_png: Path | None = None
    confusion_png: Path | None = None


def run_training(cfg: Config, echo: Any = print) -> TrainOutcome:
    """Train with Ray Train, then write plots and log the best checkpoint to MLflow."""
    from asl_ray.raylocal import init_ray

    cfg = resolve_paths(cfg)
    name = cfg.train.name or time.strftime("train-%Y%m%d-%H%M%S")
    if cfg.train.resume_from is None and "://" not in cfg.train.run_dir:
        # Re-running a named run that was interrupted continues it.
        previous = latest_checkpoint(Path(cfg.train.run_dir) / name)
        if previous is not None:
            echo(f"train: {name} exists; resuming from its latest checkpoint {previous}")
            cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"resume_from": str(previous)})})
    # Fail fast (and on the driver, with a one-line error) on data problems.
    splits = load_data(cfg)
    echo(f"train: {name}: {splits.describe()}")
    init_ray(cfg.ray)
    tracker = RunTracker(cfg, name, tags={"asl_ray.kind": "train"})
    tracker.log_params(_config_params(cfg))
    trainer = build_trainer(cfg, name, tracker.run_id or None, tracker.uri or None)
    try:
        result = trainer.fit()
    except Exception:
        tracker.end("FAILED")
        raise
    return finish_run(cfg, name, result, tracker, splits, echo)


def _config_params(cfg: Config) -> dict[str, str]:
    from asl_ray.tracking import flatten

    return flatten(cfg.model_dump(mode="json"))


def finish_run(cfg: Config, name: str, result: Any, tracker: RunTracker, splits: Splits, echo: Any) -> TrainOutcome:
    from asl_ray.decode import MetricAccumulator
    from asl_ray.plots import confusion_matrix, training_curves

    run_dir = Path(result.path) if "://" not in str(result.path) else Path(tempfile.mkdtemp())
    best = None
    if result.best_checkpoints:
        best_ckpt, _ = max(result.best_checkpoints, key=lambda cm: cm[1].get("score", -1))
        best = _local_dir(best_ckpt)
    history: list[dict[str, float]] = []
    best_metrics: dict[str, float] = {}
    curves = conf = None
    if result.checkpoint is not None:
        latest = load_checkpoint(_local_dir(result.checkpoint))
        history = latest.history
    if best is not None:
        loaded = load_checkpoint(best)
        best_metrics = loaded.history[-1] if loaded.history else {}
        curves = training_curves(history or loaded.history, run_dir / "training_curves.png")
        acc: MetricAccumulator | None = None
        if splits.val:
            acc = _val_accumulator(loaded.model, loaded.standardizer, cfg, loaded.vocab, splits)
        if acc is not None and loaded.vocab.num_glosses <= 100:
            conf = confusion_matrix(acc.confusion(), loaded.vocab.glosses, run_dir / "confusion_matrix.png",
                                    f"val confusion, best epoch {int(best_metrics.get('epoch', 0))}")
        for art in (curves, conf):
            if art is not None:
                tracker.log_artifact(art, "plots")
        tracker.log_artifact(best, "best_checkpoint")
        (run_dir / "best_checkpoint.txt").write_text(f"{best}\n")
    tracker.set_tag("best_checkpoint", str(best))
    tracker.end("FINISHED")
    outcome = TrainOutcome(name, run_dir, best, best_metrics, history, tracker.run_id,
                           tracker.uri if tracker.enabled else None, curves, conf)
    echo(summary_lines(outcome))
    return outcome


def _local_dir(checkpoint: Any) -> Path:
    """A checkpoint's folder: in place on local storage, else downloaded."""
    import pyarrow.fs as pafs

    if isinstance(checkpoint.filesystem, pafs.LocalFileSystem):
        return Path(checkpoint.path)
    return Path(checkpoint.to_directory())


def _val_accumulator(model: torch.nn.Module, standardizer: Standardizer, cfg: Config, vocab: Vocabulary,
                     splits: Splits) -> Any:
    from asl_ray.loop import evaluate

    if splits.vocab != vocab:  # a resumed run keeps its checkpoint's vocabulary
        splits = load_data(cfg, vocab)
    loader = DataLoader(SignDataset(splits.val, cfg.features, standardizer), batch_size=64, collate_fn=collate)
    _, acc = evaluate(model, loader, vocab.num_glosses, cfg.train.blank_penalty)
    return acc


def summary_lines(o: TrainOutcome) -> str:
    m = o.best_metrics
    lines = [f"train: {o.name} done, {len(o.history)} epochs"]
    if m:
        lines.append(f"best epoch {int(m.get('epoch', 0))}: val top1 {m.get('val_top1', float('nan')):.1%}, "
                     f"top5 {m.get('val_top5', float('nan')):.1%}, mean per-class "
                     f"{m.get('val_mean_class_acc', float('nan')):.1%}, blank ratio "
                     f"{m.get('val_blank_ratio', float('nan')):.2f}; train top1 {m.get('train_top1', 0):.1%}")
    lines.append(f"best checkpoint: {o.best_checkpoint}")
    if o.curves_png:
        lines.append(f"training curves: {o.curves_png}")
    if o.confusion_png:
        lines.append(f"confusion matrix: {o.confusion_png}")
    if o.tracking_uri:
        lines.append(f"MLflow run {o.mlflow_run_id}; open the UI with: "
                     f"mlflow ui --backend-store-uri {o.tracking_uri} --host 127.0.0.1")
    return "\n".join(lines)


__all__ = ["build_trainer", "run_training", "train_worker", "tracking_uri"]
