"""Ray Train edge: build the TorchTrainer and the short worker adapter.

Everything that learns lives in plain torch modules (``loop``, ``model``,
``losses``, ``decode``); this file only wires them to Ray Train. With
``train.ingest: ray_data`` (the default) the driver hands the feature dataset
to ``TorchTrainer`` as Ray Datasets (``ingest.py``): each worker trains on its
shard and scores its part of val, inputs and augmentation are built by Ray
Data, and no worker ever holds the dataset. ``train.ingest: worker`` keeps the
simple path for small datasets: each worker reads the columnar dataset into
memory and takes its part of it. Either way the ranks add their metrics up
(one all-reduce), so every rank takes the same early-stopping decision; rank 0
reports metrics plus a checkpoint every epoch. A restarted worker (after a
failure, or ``train.resume_from``) continues from the last checkpoint.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asl_ray.checkpoint import (
    LoadedCheckpoint,
    build_model,
    latest_checkpoint,
    load_checkpoint,
    resolve_checkpoint,
    resume_point,
    save_checkpoint,
    unwrap,
)
from asl_ray.config import Config, resolve_paths
from asl_ray.console import close_bars, worker_line
from asl_ray.decode import CollapseNotice, collapse_summary, collapse_warning
from asl_ray.distill import check_teachers, load_teacher
from asl_ray.duplicates import DropPlan, usable_rows
from asl_ray.errors import UserError
from asl_ray.inputs import Standardizer
from asl_ray.loop import (
    BatchSource,
    FitState,
    fit,
    make_average,
    make_optimizer,
    make_scheduler,
    memory_batches,
    stage_plan,
)
from asl_ray.model import count_parameters
from asl_ray.samples import Splits, describe_splits, fit_standardizer, load_splits, vocabulary_of
from asl_ray.storage import absolute, join, local_folder, put_file, read_features, write_text
from asl_ray.tracking import RunTracker, check_tracking, tracking_uri
from asl_ray.vocab import Vocabulary


def load_data(cfg: Config, vocab: Vocabulary | None = None) -> Splits:
    """Every train/val sample in memory (columnar): the ``worker`` ingest and evaluation."""
    table = read_features(cfg.extract.output_dir)
    refuse_stale(table, cfg.extract.output_dir)
    table, _ = usable_rows(table, cfg.data.duplicates)
    splits = load_splits(table, cfg.train.vocab_size, cfg.features, vocab)
    if not splits.train:
        raise UserError("no train samples in the vocabulary: check train.vocab_size and the dataset")
    return splits


@dataclass
class DataSummary:
    """What training will see, from the metadata columns only (no landmarks read)."""

    vocab: Vocabulary
    kept: dict[str, int]
    dropped: dict[str, int]
    duplicates: DropPlan

    def describe(self) -> str:
        return describe_splits(self.vocab, self.kept["train"], self.kept["val"], self.dropped)


def refuse_stale(table: Any, location: str) -> None:
    """One-line error when rows come from another extractor or feature version."""
    from asl_ray.versions import stale_summary

    stale = stale_summary(table)
    if stale:
        which = ", ".join(f"{n} rows {v}" for v, n in sorted(stale.items()))
        raise UserError(f"{location}: {sum(stale.values())} of {table.num_rows} rows were extracted by another "
                        f"asl-ray version ({which}; this code writes {current_versions()}): re-extract them into "
                        f"a new folder with `asl-ray extract --set extract.output_dir=NEW` and train from it")


def current_versions() -> str:
    from asl_ray.features import FEATURE_VERSION
    from asl_ray.versions import EXTRACTORS

    return f"{' | '.join(EXTRACTORS)} / {FEATURE_VERSION}"


def data_summary(cfg: Config, vocab: Vocabulary | None = None) -> DataSummary:
    from asl_ray.ingest import split_counts

    table = read_features(cfg.extract.output_dir, columns=["video_id", "gloss", "split", "path", "content_hash",
                                                           "extractor_version", "feature_version"])
    refuse_stale(table, cfg.extract.output_dir)
    table, plan = usable_rows(table, cfg.data.duplicates)
    vocab = vocab or vocabulary_of(table, cfg.train.vocab_size)
    kept, dropped = split_counts(table, vocab)
    if not kept["train"]:
        raise UserError("no train samples in the vocabulary: check train.vocab_size and the dataset")
    return DataSummary(vocab, kept, dropped, plan)


def epoch_line(m: dict[str, float], total: int) -> str:
    val = (f" | val loss {m['val_loss']:.3f} top1 {m['val_top1']:.1%} top5 {m['val_top5']:.1%} "
           f"greedy {m['val_greedy_acc']:.1%} blank {m['val_blank_ratio']:.2f}") if "val_top1" in m else ""
    if "val_wer_greedy" in m:
        val += f" | WER greedy {m['val_wer_greedy']:.1%}"
        val += f" beam {m['val_wer_beam']:.1%}" if "val_wer_beam" in m else ""
    return (f"epoch {int(m['epoch'])}/{total} (vocab {int(m['vocab_limit'])}) | train loss {m['train_loss']:.3f} "
            f"top1 {m['train_top1']:.1%} blank {m['train_blank_ratio']:.2f} grad {m['train_grad_norm']:.2f}"
            + (f" distill {m['train_distill']:.3f}" if "train_distill" in m else "") + val)


def emit(line: str) -> None:
    """One progress line from a worker, for the driver's terminal (``console.py``)."""
    worker_line(line)


def _quiet_ray_train_logs() -> None:
    """Ray Train logs every report and checkpoint at INFO (some of its loggers
    are named after their file); our epoch line already says it."""
    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith("ray.train") or "ray/train/" in name:
            logging.getLogger(name).setLevel(logging.WARNING)


@dataclass
class WorkerData:
    vocab: Vocabulary
    standardizer: Standardizer
    train: BatchSource
    val: Any  # () -> batches of this rank's part of val, or None
    counts: dict[str, int]
    description: str
    timings: dict[str, float] = field(default_factory=dict)  # val_build / val_wait seconds, once known


def _worker_data(cfg: Config, loop_config: dict[str, Any], loaded: Any, rank: int, world: int) -> WorkerData:
    if cfg.train.ingest == "ray_data":
        from asl_ray.ingest_worker import worker_sources

        vocab = Vocabulary(tuple(loop_config["glosses"]))
        standardizer = Standardizer(np.asarray(loop_config["mean"], np.float32),
                                    np.asarray(loop_config["std"], np.float32))
        cache, timings = loop_config.get("val_cache"), dict[str, float]()
        train, val = worker_sources(cfg, rank, cache, timings)
        counts = dict(loop_config["counts"])
        return WorkerData(vocab, standardizer, train, val, counts, loop_config["description"], timings)
    splits = load_data(cfg, loaded.vocab if loaded else None)
    standardizer = loaded.standardizer if loaded else fit_standardizer(splits.train, cfg.features)
    train = memory_batches(splits.train, cfg.features, standardizer, cfg.train.batch_size, cfg.train.augment,
                           cfg.train.seed, rank, world)
    mine = splits.val[rank::world]  # each rank scores its part; the metrics are added up
    val = (lambda: memory_batches(mine, cfg.features, standardizer, 64)(0, splits.vocab.num_glosses)
           ) if splits.val else None
    counts = {"train": len(splits.train), "val": len(splits.val), "dropped": sum(splits.dropped.values())}
    return WorkerData(splits.vocab, standardizer, train, val, counts, splits.describe())


def train_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train worker function: the adapter between Ray and ``loop.fit``."""
    import ray.train
    import ray.train.torch

    from asl_ray.ingest_worker import all_reduce_metrics

    entered = time.time()
    _quiet_ray_train_logs()
    cfg = Config.model_validate(loop_config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.train.seed)
    device = ray.train.torch.get_device()

    # Where to continue from. Ray 2.60's Train V2 hands a restarted worker
    # group no checkpoint (ray.train.get_checkpoint() is None after a worker
    # died: measured, and the fault tests check it), and where it hands one
    # it is the last one its controller registered, which can trail the last
    # one written. So the worker takes the most advanced of that, of
    # train.resume_from and of the complete checkpoints in this run's folder
    # (local or URI, downloaded on this node).
    handed = ray.train.get_checkpoint()
    where = resume_point(loop_config.get("resume_from"), loop_config["run_location"],
                         handed.to_directory() if handed is not None else None)
    loaded: LoadedCheckpoint | None = load_checkpoint(where, with_state=True) if where else None
    data = _worker_data(cfg, loop_config, loaded, rank, world)
    num_classes = data.vocab.num_glosses

    model: torch.nn.Module = loaded.model if loaded else build_model(cfg, num_classes)
    if not loaded and cfg.train.init_encoder:  # a resumed run has its own, further trained, weights
        from asl_ray.pretrain import load_encoder, read_encoder

        load_encoder(model, read_encoder(cfg.train.init_encoder), cfg.train.init_encoder)
    model = ray.train.torch.prepare_model(model)
    optimizer = make_optimizer(model, cfg.train)
    total = len(stage_plan(cfg.train, num_classes))
    scheduler = make_scheduler(optimizer, cfg.train, total)
    # The average starts as a copy of model.pt: the checkpoint's average, when it kept one.
    state = FitState(model, optimizer, scheduler, average=make_average(model, cfg.train.ema_decay))
    if loaded:
        state.restore(loaded.state, loaded.history)

    tracker = None
    if rank == 0 and loop_config.get("mlflow_run_id"):
        tracker = RunTracker.attach(loop_config["mlflow_uri"], loop_config["mlflow_run_id"])
        tracker.log_params({"num_parameters": count_parameters(unwrap(model)),
                            "train_samples": data.counts["train"], "val_samples": data.counts["val"],
                            "num_glosses": num_classes, "dropped_samples": data.counts.get("dropped", 0),
                            "ingest": cfg.train.ingest})
    say = emit if rank == 0 and loop_config.get("progress", True) else (lambda _: None)
    if rank == 0:
        # The data's description is the driver's line just above; this one adds what the workers hold.
        say(f"train: {count_parameters(unwrap(model)):,} parameters; "
             f"{world} worker(s) on {device}, ingest {cfg.train.ingest}"
             + (f"; resuming after epoch {state.epoch}" if loaded else ""))

    first_step: list[float] = []
    collapse = CollapseNotice()
    # The rest of the wait before the first step, measured here (wall clocks of
    # one node; on a cluster the driver's clock may differ a little): Ray
    # Train starting this worker, then its own set-up (checkpoint, model).
    startup = dict(loop_config.get("startup", {}))
    handed_over = startup.pop("handed_over", None)
    if handed_over is not None and loaded is None:  # a restart's wait includes the run before it
        startup["train_workers"] = entered - handed_over
    startup["worker_setup"] = time.time() - entered
    ready = time.time()

    def train_batches(epoch: int, limit: int) -> Any:
        for batch in data.train(epoch, limit):
            if not first_step:
                first_step.append(time.time())
            yield batch

    def on_epoch_end(st: FitState, metrics: dict[str, float]) -> None:
        metrics = {**metrics, "score": metrics.get("val_top1", metrics["train_top1"])}
        if first_step and len(first_step) == 1:
            # Wall clock of the run's first training step (benchmarks/scale.py reads it from the history).
            metrics["first_step_time"] = st.history[-1]["first_step_time"] = first_step[0]
            startup["first_batch"] = first_step[0] - ready  # the data pipeline's start and first batch
            for step, seconds in startup.items():
                metrics[f"startup_{step}_s"] = st.history[-1][f"startup_{step}_s"] = seconds
            first_step.append(0.0)
        for step, seconds in data.timings.items():  # the evaluation that waited for the val cache
            metrics[f"{step}_s"] = st.history[-1][f"{step}_s"] = seconds
        data.timings.clear()
        if rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        say(epoch_line(metrics, total))
        notice = collapse.update(collapse_warning(
            {"blank_ratio": metrics.get("val_blank_ratio", metrics["train_blank_ratio"]), "top1": metrics["score"]},
            num_classes), int(metrics["epoch"]))
        if notice:
            say(notice)
        if tracker is not None:
            tracker.log_metrics(metrics, step=int(metrics["epoch"]))
        report_with_checkpoint(st, metrics)

    def report_with_checkpoint(st: FitState, metrics: dict[str, float], confusion: Path | None = None) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(Path(tmp), cfg, st.scored_model(), data.vocab, data.standardizer, st.saved(),
                            st.history)
            if st.last_val is not None:
                np.save(Path(tmp) / "val_confusion.npy", st.last_val.confusion())
            elif confusion is not None and confusion.is_file():
                shutil.copy(confusion, Path(tmp) / "val_confusion.npy")
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    start_epoch = state.epoch
    teacher = load_teacher(cfg, data.vocab, data.standardizer, device)  # checked on the driver already
    fit(state, cfg.train, train_batches, data.val, num_classes, device, on_epoch_end,
        amp=device.type == "cuda" and cfg.train.amp, reduce=all_reduce_metrics(device), teacher=teacher)
    if state.epoch == start_epoch and loaded is not None and state.history:
        # Every epoch was done before this start: a run (or tune trial) whose
        # driver died after its workers wrote the last checkpoint. Report that
        # epoch again, checkpoint included, so Ray Train and Tune get the
        # run's result rather than none (Tune fails a trial without metrics).
        last = {**state.history[-1]}
        last["score"] = last.get("val_top1", last["train_top1"])
        say(f"all {int(last['epoch'])} epochs were done before this start: reporting the last one")
        if rank == 0:
            assert where is not None
            report_with_checkpoint(state, last, local_folder(where) / "val_confusion.npy")
        else:
            ray.train.report(last, checkpoint=None)


# Where `ray up` leaves the cluster launcher's config on the head node (where
# `ray job submit` runs the driver).
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"


def autoscaler_offers_gpu(description: dict[str, Any] | None) -> bool:
    """Whether a cluster launcher config has a node type with GPUs that may be
    started (``max_workers`` > 0, or the head itself)."""
    if not description:
        return False
    head = description.get("head_node_type")
    for name, node in (description.get("available_node_types") or {}).items():
        gpus = float((node.get("resources") or {}).get("GPU", 0) or 0)
        if gpus > 0 and (name == head or int(node.get("max_workers", 0) or 0) > 0):
            return True
    return False


def wants_gpu(cfg: Config, resources: dict[str, float], description: dict[str, Any] | None) -> bool:
    """``train.use_gpu`` when set; else GPUs if the cluster has some now, or can
    start some: the shipped cluster.yaml scales its GPU nodes from zero, so at
    submit time ``ray.cluster_resources()`` shows none, and asking for CPUs
    would put training on the extraction nodes for good."""
    if cfg.train.use_gpu is not None:
        return cfg.train.use_gpu
    return resources.get("GPU", 0) > 0 or autoscaler_offers_gpu(description)


def cluster_description() -> dict[str, Any] | None:
    """The launcher config of this cluster, if it was started with `ray up`
    (ASL_RAY_CLUSTER_CONFIG names another file)."""
    import os

    import yaml

    path = Path(os.environ.get("ASL_RAY_CLUSTER_CONFIG", BOOTSTRAP_CONFIG)).expanduser()
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _use_gpu(cfg: Config) -> bool:
    import ray

    return wants_gpu(cfg, ray.cluster_resources(), cluster_description())


def _check_room_for_data_prep(cfg: Config, use_gpu: bool) -> None:
    """Ray Data builds the inputs on CPUs the training workers do not hold: on a
    fixed-size local Ray with none left over, the first epoch would wait
    forever. (A cluster may autoscale, so it is not checked there.)"""
    import os

    import ray

    if cfg.ray.address or os.environ.get("RAY_ADDRESS"):
        return
    cpus = ray.cluster_resources().get("CPU", 0.0)
    held = 0.0 if use_gpu else cfg.train.num_workers * cfg.train.cpus_per_worker
    if cpus - held < cfg.train.prep_cpus:
        raise UserError(
            f"train.ingest=ray_data needs train.prep_cpus={cfg.train.prep_cpus:g} CPU(s) beside the "
            f"{cfg.train.num_workers} worker(s) x train.cpus_per_worker={cfg.train.cpus_per_worker:g}, and this Ray "
            f"has {cpus:g}: lower train.cpus_per_worker or train.prep_cpus, raise ray.num_cpus, or set "
            f"train.ingest=worker")


def build_trainer(cfg: Config, name: str, mlflow_run_id: str | None = None, mlflow_uri: str | None = None,
                  callbacks: list[Any] | None = None, progress: bool = True,
                  summary: DataSummary | None = None, startup: dict[str, float] | None = None,
                  echo: Any = None) -> Any:
    """One function that builds the TorchTrainer; ``train`` and ``tune`` both call it.
    ``progress``: rank 0 prints a line per epoch (off in a tune, which prints a
    line per trial event instead of interleaving every trial's epochs).
    ``summary``: the run's :func:`data_summary` if the caller has it already
    (the metadata pass takes ~8 s on 100k sequences; not worth doing twice).
    ``startup``: seconds of the caller's own steps before training; the
    standardiser and val passes are added, and the first epoch's metrics
    carry them all (``startup_<step>_s``: where the time to the first step goes).
    ``echo``: where to say what the long driver passes took."""
    startup = dict(startup or {})
    say = echo or (lambda _: None)
    if cfg.train.init_encoder and not cfg.train.resume_from:
        from asl_ray.pretrain import check_encoder

        check_encoder(cfg)  # on the driver: a one-line error, before any worker starts
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    storage = absolute(cfg.train.run_dir)
    use_gpu = _use_gpu(cfg)
    resume_from = resolve_checkpoint(cfg.train.resume_from) if cfg.train.resume_from else None
    if cfg.train.distill_from:  # on the driver: a one-line error, before any worker starts
        if summary is None:
            summary = data_summary(cfg, load_checkpoint(resume_from).vocab if resume_from else None)
        check_teachers(cfg, summary.vocab)
    loop_config: dict[str, Any] = {"cfg": cfg.model_dump(mode="json"), "mlflow_run_id": mlflow_run_id,
                                   "mlflow_uri": mlflow_uri, "resume_from": resume_from,
                                   "run_location": join(storage, name), "progress": progress}
    datasets, data_config = None, None
    if cfg.train.ingest == "ray_data":
        _check_room_for_data_prep(cfg, use_gpu)
        from asl_ray.ingest import fit_standardizer as stream_standardizer
        from asl_ray.ingest import sharded_ingest, training_datasets, val_cache

        # Vocabulary and standardiser are fixed here, once, for every worker
        # (and every restart): from the checkpoint when resuming.
        loaded = load_checkpoint(resume_from) if resume_from else None
        if summary is None:
            summary = data_summary(cfg, loaded.vocab if loaded else None)
        exclude = summary.duplicates.ids
        t0 = time.perf_counter()
        if loaded:
            standardizer = loaded.standardizer
        else:
            standardizer = stream_standardizer(cfg, summary.vocab, exclude)
            startup["standardizer"] = time.perf_counter() - t0
            rows = cfg.train.standardizer_rows
            seen = summary.kept["train"] if rows is None else min(rows, summary.kept["train"])
            say(f"train: input mean/std from {seen:,} train sequences in {startup['standardizer']:.1f} s")
        t0 = time.perf_counter()
        n_val = summary.kept["val"]
        datasets = training_datasets(cfg, summary.vocab, standardizer, n_val, exclude)
        if 0 < n_val <= cfg.train.cache_val_rows:
            loop_config["val_cache"] = val_cache(datasets.pop("val"), cfg.train.num_workers)
            say(f"train: val inputs of {n_val:,} sequences are built once, at the first evaluation")
        elif n_val:
            say(f"train: val inputs of {n_val:,} sequences will be built at each evaluation (more than "
                f"train.cache_val_rows={cfg.train.cache_val_rows:,})")
        startup["datasets"] = time.perf_counter() - t0
        data_config = sharded_ingest(cfg.train.ingest_memory_mb)
        loop_config |= {"glosses": list(summary.vocab.glosses), "mean": standardizer.mean.tolist(),
                        "std": standardizer.std.tolist(), "description": summary.describe(),
                        "counts": {**summary.kept, "dropped": sum(summary.dropped.values())}}
    loop_config["startup"] = {**startup, "handed_over": time.time()}  # Ray Train takes over from here
    return TorchTrainer(
        train_worker,
        train_loop_config=loop_config,
        datasets=datasets,
        dataset_config=data_config,
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
    """Where a run's outputs are: locations (local paths or URIs, as train.run_dir)."""

    name: str
    run_dir: str
    best_checkpoint: str | None
    best_metrics: dict[str, float]
    history: list[dict[str, float]]
    mlflow_run_id: str | None
    tracking_uri: str | None
    curves_png: str | None = None
    confusion_png: str | None = None


def run_training(cfg: Config, echo: Any = print) -> TrainOutcome:
    """Train with Ray Train, then write plots and log the best checkpoint to MLflow."""
    from asl_ray.raylocal import init_ray

    cfg = resolve_paths(cfg)
    check_tracking(cfg)
    name = cfg.train.name or time.strftime("train-%Y%m%d-%H%M%S")
    if cfg.train.resume_from is None:
        # Re-running a named run that was interrupted continues it.
        previous = latest_checkpoint(join(cfg.train.run_dir, name))
        if previous is not None:
            echo(f"train: {name} exists; resuming from its latest checkpoint {previous}")
            cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"resume_from": previous})})
    # Fail fast (and on the driver, with a one-line error) on data problems.
    t0 = time.perf_counter()
    summary = data_summary(cfg, load_checkpoint(cfg.train.resume_from).vocab if cfg.train.resume_from else None)
    startup = {"metadata": time.perf_counter() - t0}
    echo(f"train: {name}: {summary.describe()}")
    if summary.duplicates.reasons:
        echo(f"train: {summary.duplicates.line()}")
    t0 = time.perf_counter()
    init_ray(cfg.ray)
    startup["ray_start"] = time.perf_counter() - t0
    tracker = RunTracker(cfg, name, tags={"asl_ray.kind": "train"})
    tracker.log_params({**_config_params(cfg), **summary.duplicates.params()})
    trainer = build_trainer(cfg, name, tracker.run_id or None, tracker.uri or None, summary=summary,
                            startup=startup, echo=echo)
    try:
        result = trainer.fit()
    except Exception:
        tracker.end("FAILED")
        raise
    finally:
        close_bars()
    return finish_run(join(cfg.train.run_dir, name), result, tracker, echo)


def _config_params(cfg: Config) -> dict[str, str]:
    from asl_ray.tracking import flatten

    return flatten(cfg.model_dump(mode="json"))


def finish_run(run_dir: str, result: Any, tracker: RunTracker, echo: Any) -> TrainOutcome:
    """Plots, ``best_checkpoint.txt`` and MLflow artifacts of a finished run.

    Everything is addressed through the run folder the user gave
    (``train.run_dir/name``, local or URI), never through ``result.path``,
    which is a path of Ray's storage filesystem (``bucket/runs/x`` for S3)."""
    from asl_ray.plots import confusion_matrix, training_curves

    best = None
    if result.best_checkpoints:
        best_ckpt, _ = max(result.best_checkpoints, key=lambda cm: cm[1].get("score", -1))
        best = join(run_dir, best_ckpt.path.rstrip("/").rsplit("/", 1)[-1])
    history: list[dict[str, float]] = []
    best_metrics: dict[str, float] = {}
    curves = conf = None
    if result.checkpoint is not None:
        history = load_checkpoint(join(run_dir, result.checkpoint.path.rstrip("/").rsplit("/", 1)[-1])).history
    if best is not None:
        loaded = load_checkpoint(best)
        best_metrics = loaded.history[-1] if loaded.history else {}
        with tempfile.TemporaryDirectory() as tmp:
            pngs = [training_curves(history or loaded.history, Path(tmp) / "training_curves.png")]
            # The val confusion of that epoch, as the workers added it up.
            cm_file = local_folder(best) / "val_confusion.npy"
            if cm_file.is_file() and loaded.vocab.num_glosses <= 100:
                pngs.append(confusion_matrix(np.load(cm_file), loaded.vocab.glosses,
                                             Path(tmp) / "confusion_matrix.png",
                                             f"val confusion, best epoch {int(best_metrics.get('epoch', 0))}"))
            for png in pngs:
                tracker.log_artifact(png, "plots")
            published = [put_file(png, join(run_dir, png.name)) for png in pngs]
        curves = published[0]
        conf = published[1] if len(published) > 1 else None
        tracker.log_artifact(local_folder(best), "best_checkpoint")
        write_text(join(run_dir, "best_checkpoint.txt"), f"{best}\n")
    tracker.set_tag("best_checkpoint", str(best))
    tracker.end("FINISHED")
    outcome = TrainOutcome(run_dir.rstrip("/").rsplit("/", 1)[-1], run_dir, best, best_metrics, history,
                           tracker.run_id, tracker.uri if tracker.enabled else None, curves, conf)
    echo(summary_lines(outcome))
    return outcome


def summary_lines(o: TrainOutcome) -> str:
    m = o.best_metrics
    lines = [f"train: {o.name} done, {len(o.history)} epochs"]
    if m:
        lines.append(f"best epoch {int(m.get('epoch', 0))}: val top1 {m.get('val_top1', float('nan')):.1%}, "
                     f"top5 {m.get('val_top5', float('nan')):.1%}, mean per-class "
                     f"{m.get('val_mean_class_acc', float('nan')):.1%}, greedy "
                     f"{m.get('val_greedy_acc', float('nan')):.1%}, blank ratio "
                     f"{m.get('val_blank_ratio', float('nan')):.2f}; train top1 {m.get('train_top1', 0):.1%}")
        if "val_wer_greedy" in m:
            lines.append(f"val sentences: WER greedy {m['val_wer_greedy']:.1%}"
                         + (f", beam {m['val_wer_beam']:.1%}" if "val_wer_beam" in m else ""))
    collapse = collapse_summary(o.history)
    if collapse:
        lines.append(collapse)
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
