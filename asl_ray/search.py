"""Ray Tune edge: search space from config -> Tuner over the same trainer.

Each trial is a Tune function that applies its sampled overrides to the base
config and builds the same ``TorchTrainer`` as ``asl-ray train`` (through
``trainer.build_trainer``) with a ``TuneReportCallback``, the Ray 2.60 way of
running Train inside Tune. ASHA stops weak trials early on the configured
metric. Every trial is a nested MLflow run under one parent run per tune; at
the end each child run is marked completed, stopped early or failed, and the
best trial's full config is written as a YAML file ``asl-ray train -c``
accepts as is.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asl_ray.config import Config, Domain, dump_config, resolve_paths, validate_tree
from asl_ray.console import Bar, on_terminal
from asl_ray.errors import UserError
from asl_ray.loop import stage_plan
from asl_ray.storage import is_dir, join, write_text
from asl_ray.tracking import RunTracker, check_tracking, flatten, tracking_uri

STATUS_TAG = "asl_ray.status"
TRIAL_DRIVER_MEMORY = 256 * 1024**2
TRIAL_TAG = "asl_ray.trial_id"


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """The base config with dotted-key overrides, validated like a YAML file."""
    tree = cfg.model_dump(mode="json")
    for key, value in overrides.items():
        node = tree
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return validate_tree(tree, "trial config")


def to_tune_domain(d: Domain) -> Any:
    from ray import tune

    if d.type == "choice":
        return tune.choice(d.values or [])
    if d.type == "grid":
        return tune.grid_search(d.values or [])
    assert d.low is not None and d.high is not None
    if d.type == "uniform":
        return tune.uniform(d.low, d.high)
    if d.type == "loguniform":
        return tune.loguniform(d.low, d.high)
    return tune.randint(int(d.low), int(d.high))


def trial_fn(config: dict[str, Any]) -> None:
    """One Tune trial: a full Ray Train run with this trial's overrides."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from asl_ray.trainer import build_trainer

    trial_id = tune.get_context().get_trial_id()
    base = Config.model_validate(config["base"])
    overrides = dict(config["overrides"])
    tracker = RunTracker(base, f"trial-{trial_id}", parent_run_id=config["parent_run_id"],
                         tags={TRIAL_TAG: trial_id, "asl_ray.kind": "trial"}, uri=config["mlflow_uri"])
    tracker.log_params({f"tuned.{k}": v for k, v in overrides.items()})
    try:
        cfg = apply_overrides(base, {**overrides, "train.name": trial_id,
                                     "train.run_dir": config["trials_dir"]})
        tracker.log_params({k: v for k, v in flatten(cfg.model_dump(mode="json")).items() if k not in overrides})
        trainer = build_trainer(cfg, trial_id, tracker.run_id or None, tracker.uri or None,
                                callbacks=[TuneReportCallback()], progress=False)
        trainer.fit()
    except BaseException as exc:
        # Stopped by ASHA or failed: the driver tells the two apart after the
        # run, from Tune's own record, and sets the final status.
        tracker.set_tag("asl_ray.error", f"{type(exc).__name__}: {exc}"[:5000])
        raise


def vocab_key(trial_config: dict[str, Any]) -> str:
    """The vocabulary size a trial trains on ("all" for every gloss)."""
    base = trial_config.get("base", {}).get("train", {}).get("vocab_size")
    return str(trial_config.get("overrides", {}).get("train.vocab_size", base) or "all")


def _vocab_order(key: str) -> float:
    return math.inf if key == "all" else float(key)


def grouped_asha(**asha: Any) -> Any:
    """ASHA that ranks a trial only against trials of the same vocabulary size.

    Val top-1 over 10 glosses and over 100 are different tasks with different
    val sets (chance alone differs tenfold), so one ASHA over all trials would
    stop every large-vocabulary trial in favour of small ones. Each vocabulary
    size gets its own ASHA (its own rungs and brackets); the Tune controller
    sees one scheduler."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    class GroupedASHA(FIFOScheduler):
        def __init__(self) -> None:
            super().__init__()
            self.groups: dict[str, ASHAScheduler] = {}
            self._metric: str | None = None
            self._mode: str | None = None

        def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
            self._metric, self._mode = metric or self._metric, mode or self._mode
            for g in self.groups.values():
                g.set_search_properties(metric, mode, **spec)
            return True

        def group(self, trial: Any) -> ASHAScheduler:
            key = vocab_key(trial.config)
            if key not in self.groups:
                sched = ASHAScheduler(**asha)
                sched.set_search_properties(self._metric, self._mode)
                self.groups[key] = sched
            return self.groups[key]

        def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
            self.group(trial).on_trial_add(tune_controller, trial)

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            return str(self.group(trial).on_trial_result(tune_controller, trial, result))

        def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
            self.group(trial).on_trial_complete(tune_controller, trial, result)

        def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
            self.group(trial).on_trial_remove(tune_controller, trial)

        def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
            self.group(trial).on_trial_error(tune_controller, trial)

        def debug_string(self) -> str:
            return "\n".join(f"vocab_size={k}: {g.debug_string()}" for k, g in self.groups.items())

    return GroupedASHA()


@dataclass
class TrialRow:
    trial_id: str
    overrides: dict[str, Any]
    status: str  # completed | stopped early | failed
    epochs: int
    metrics: dict[str, float]
    error: str | None = None


def _concurrency(cfg: Config) -> int:
    import ray

    if cfg.tune.max_concurrent_trials:
        return cfg.tune.max_concurrent_trials
    from asl_ray.trainer import _use_gpu

    res = ray.cluster_resources()
    if _use_gpu(cfg):
        return max(1, int(res.get("GPU", 0) // cfg.train.num_workers))
    # A Ray Data ingest also needs CPUs for building inputs beside each trial's workers.
    prep = cfg.train.prep_cpus if cfg.train.ingest == "ray_data" else 0.0
    return max(1, int(res.get("CPU", 1) // (cfg.train.num_workers * cfg.train.cpus_per_worker + prep)))


def _progress_callback(echo: Any, total: int, max_t: int) -> Any:
    from ray.tune import Callback

    class Progress(Callback):
        """One line whenever a trial starts, reports, stops or fails; on a
        terminal, a bar of trials ended instead, with failures above it."""

        def __init__(self) -> None:
            self.running: set[str] = set()
            self.done = 0
            self.stopped = 0
            self.failed = 0
            self.epochs: dict[str, int] = {}
            self.bar = Bar(total, "tune", "trial") if on_terminal() else None

        def _say(self, line: str, above_bar: bool = False) -> None:
            """A plain line off a terminal; on one, the bar moves, and only
            failures are written above it (each trial's start and end are
            in the bar's counts and in the ranking printed at the end)."""
            if self.bar is None:
                echo(line)
                return
            if above_bar:
                self.bar.write(line)
            self.bar.update(self.done + self.stopped + self.failed,
                            f"{len(self.running)} running, {self.done} done, {self.stopped} stopped, "
                            f"{self.failed} failed")

        def close(self) -> None:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

        def _state(self) -> str:
            return (f"[{len(self.running)} running, {self.done} completed, {self.stopped} stopped early, "
                    f"{self.failed} failed, {total} planned]")

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.running.add(trial.trial_id)
            self._say(f"tune: trial {trial.trial_id} started {trial.config.get('overrides')} {self._state()}")

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            self.epochs[trial.trial_id] = int(result.get("training_iteration", 0))
            if self.bar is not None:
                return  # the bar says it; a line per trial epoch would fill the screen
            echo(f"tune: trial {trial.trial_id} epoch {result.get('epoch')}: val top1 "
                 f"{result.get('val_top1', float('nan')):.1%}, val loss {result.get('val_loss', float('nan')):.3f}, "
                 f"blank {result.get('val_blank_ratio', float('nan')):.2f}")

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.running.discard(trial.trial_id)
            if self.epochs.get(trial.trial_id, 0) < max_t:
                self.stopped += 1
                self._say(f"tune: trial {trial.trial_id} stopped early by ASHA {self._state()}")
            else:
                self.done += 1
                self._say(f"tune: trial {trial.trial_id} completed {self._state()}")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.running.discard(trial.trial_id)
            self.failed += 1
            self._say(f"tune: trial {trial.trial_id} FAILED {self._state()}", above_bar=True)

    return Progress()


@dataclass
class TuneOutcome:
    name: str
    path: str  # the tune's folder: local path or URI
    rows: list[TrialRow]
    best: TrialRow | None
    best_per_vocab: dict[str, TrialRow]
    best_config: str | None
    parent_run_id: str | None
    tracking_uri: str | None


def run_tune(cfg: Config, resume: bool = False, echo: Any = print) -> TuneOutcome:
    from ray import tune

    from asl_ray.raylocal import init_ray
    from asl_ray.trainer import data_summary

    cfg = resolve_paths(cfg)
    check_tracking(cfg)
    if not cfg.tune.search_space:
        raise UserError("tune.search_space is empty: nothing to search (see configs/tune.yaml)")
    if not cfg.tune.name and resume:
        raise UserError("--resume needs tune.name (the name of the tune to continue)")
    name = cfg.tune.name or time.strftime("tune-%Y%m%d-%H%M%S")
    root = join(cfg.train.run_dir, "tune")
    path = join(root, name)
    if resume and not is_dir(path):
        raise UserError(f"--resume: no tune named {name!r} under {root}")
    data_summary(cfg)  # fail fast on the driver if there is no data (metadata columns only)
    init_ray(cfg.ray)
    uri = tracking_uri(cfg)
    parent = _parent_run(cfg, name, uri, resume)
    metric = cfg.tune.metric
    mode = "max" if metric == "val_top1" else "min"
    max_t = len(stage_plan(cfg.train, 10**9))  # epochs a trial runs when not stopped
    scheduler = grouped_asha(time_attr="training_iteration", max_t=max_t,
                             grace_period=min(cfg.tune.grace_period, max_t), reduction_factor=cfg.tune.reduction_factor)
    concurrency = _concurrency(cfg)
    search_alg: Any = None
    if cfg.tune.searcher == "optuna":
        if any(d.type == "grid" for d in cfg.tune.search_space.values()):
            raise UserError("tune.searcher=optuna cannot sample grid domains: use choice instead")
        try:
            from ray.tune.search.optuna import OptunaSearch
        except ImportError:
            raise UserError("tune.searcher=optuna needs the optuna extra: pip install 'asl-ray[optuna]'") from None
        from ray.tune.search import ConcurrencyLimiter

        search_alg = ConcurrencyLimiter(OptunaSearch(seed=cfg.tune.seed), max_concurrent=concurrency)
    else:
        from ray.tune.search import BasicVariantGenerator

        search_alg = BasicVariantGenerator(random_state=cfg.tune.seed, max_concurrent=concurrency)
    grid = math.prod(len(d.values or []) for d in cfg.tune.search_space.values() if d.type == "grid")
    total = cfg.tune.num_samples * grid
    echo(f"tune: {name}: {total} trials, up to {concurrency} at a time, ASHA on {metric} ({mode}), "
         f"max {max_t} epochs, grace {cfg.tune.grace_period}, trials ranked within their vocab_size; "
         f"MLflow parent run {parent.run_id}")
    # The trial function only drives its TorchTrainer, whose workers hold the
    # CPUs/GPUs; asking a CPU for it too would halve the trials that fit here.
    # Ray needs some resource in the request, so it reserves driver memory.
    trainable = tune.with_resources(trial_fn, {"CPU": 0, "memory": TRIAL_DRIVER_MEMORY})
    param_space = {
        "base": cfg.model_dump(mode="json"),
        "overrides": {k: to_tune_domain(d) for k, d in cfg.tune.search_space.items()},
        "parent_run_id": parent.run_id, "mlflow_uri": uri, "trials_dir": join(path, "trials"),
    }
    progress = _progress_callback(echo, total, max_t)
    if resume:
        tuner = tune.Tuner.restore(path, trainable=trainable, param_space=param_space,
                                   resume_unfinished=True, resume_errored=False, restart_errored=False)
    else:
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(metric=metric, mode=mode, scheduler=scheduler, search_alg=search_alg,
                                        num_samples=cfg.tune.num_samples),
            run_config=tune.RunConfig(name=name, storage_path=root, callbacks=[progress], verbose=0),
        )
    try:
        grid_result = tuner.fit()
    finally:
        progress.close()
    rows = _rows(grid_result, max_t, metric, mode)
    outcome = _finish(cfg, name, path, rows, parent, uri, metric, mode)
    echo(summary_table(outcome, metric))
    return outcome


def _parent_run(cfg: Config, name: str, uri: str, resume: bool) -> RunTracker:
    if resume:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(cfg.tracking.experiment)
        if exp is not None:
            found = client.search_runs([exp.experiment_id], f"tags.`asl_ray.tune_name` = '{name}'")
            if found:
                return RunTracker.attach(uri, found[0].info.run_id)
    parent = RunTracker(cfg, name, tags={"asl_ray.kind": "tune", "asl_ray.tune_name": name}, uri=uri)
    parent.log_params({f"search.{k}": d.model_dump(exclude_none=True) for k, d in cfg.tune.search_space.items()}
                      | {"tune.metric": cfg.tune.metric, "tune.num_samples": cfg.tune.num_samples})
    return parent


def _best_epoch(res: Any, metric: str, mode: str) -> dict[str, Any]:
    """A trial's metrics at its best epoch (by ``metric``), not its last: the
    training run is judged by its best epoch too, and best is compared with best."""
    last = dict(res.metrics or {})
    df = getattr(res, "metrics_dataframe", None)
    if df is None or metric not in getattr(df, "columns", ()) or df[metric].isna().all():
        return last
    row = df.loc[df[metric].idxmax() if mode == "max" else df[metric].idxmin()]
    best = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
    return {**best, "training_iteration": last.get("training_iteration", best.get("training_iteration"))}


def _rows(grid_result: Any, max_t: int, metric: str, mode: str = "max") -> list[TrialRow]:
    rows = []
    for res in grid_result:
        m = _best_epoch(res, metric, mode)
        trial_id = m.get("trial_id") or str(res.path).rstrip("/").rsplit("/", 1)[-1]
        epochs = int(m.get("training_iteration", 0) or 0)
        if res.error is not None:
            status = "failed"
        elif epochs < max_t:
            status = "stopped early"
        else:
            status = "completed"
        err = None if res.error is None else str(res.error).strip().splitlines()[-1][:300]
        config = res.config or m.get("config") or {}
        rows.append(TrialRow(str(trial_id), dict(config.get("overrides", {})), status, epochs, m, err))
    return rows


def _finish(cfg: Config, name: str, path: str, rows: list[TrialRow], parent: RunTracker, uri: str,
            metric: str, mode: str) -> TuneOutcome:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    children = {r.data.tags.get(TRIAL_TAG): r.info.run_id for r in client.search_runs(
        [client.get_run(parent.run_id).info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.run_id}'")}
    for row in rows:
        run_id = children.get(row.trial_id)
        if run_id is None:
            continue
        client.set_tag(run_id, STATUS_TAG, row.status)
        client.set_terminated(run_id, {"completed": "FINISHED", "stopped early": "KILLED"}.get(row.status, "FAILED"))

    def key(r: TrialRow) -> float:
        v = r.metrics.get(metric)
        return -math.inf if v is None else (v if mode == "max" else -v)

    scored = [r for r in rows if r.status != "failed" and metric in r.metrics]
    per_vocab: dict[str, TrialRow] = {}
    for r in scored:
        v = vocab_key({"base": cfg.model_dump(mode="json"), "overrides": r.overrides})
        if v not in per_vocab or key(r) > key(per_vocab[v]):
            per_vocab[v] = r
    # Scores of different vocabulary sizes are not comparable (a smaller
    # vocabulary is an easier task): the overall best is the best trial of the
    # largest vocabulary searched.
    best = per_vocab[max(per_vocab, key=_vocab_order)] if per_vocab else None
    best_config = None
    if best is not None:
        best_cfg = apply_overrides(cfg, best.overrides)
        best_cfg = best_cfg.model_copy(update={"tune": type(cfg.tune)()})
        best_config = join(path, "best_config.yaml")
        vocab = vocab_key({"base": cfg.model_dump(mode="json"), "overrides": best.overrides})
        text = (f"# Best trial {best.trial_id} of tune {name} ({metric} {best.metrics.get(metric, float('nan')):.4f} "
                f"at its best epoch, vocab_size={vocab}). Retrain with:\n"
                f"#   asl-ray train -c {best_config}\n" + dump_config(best_cfg))
        write_text(best_config, text)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "best_config.yaml"
            local.write_text(text)
            parent.log_artifact(local)
        parent.set_tag("best_trial", best.trial_id)
        parent.log_metrics({f"best_{metric}": float(best.metrics[metric])}, step=0)
    parent.end("FINISHED")
    return TuneOutcome(name, path, rows, best, per_vocab, best_config, parent.run_id, uri)


def summary_table(o: TuneOutcome, metric: str) -> str:
    ranked = sorted(o.rows, key=lambda r: (r.status == "failed", -(r.metrics.get("val_top1") or 0.0)))
    keys = sorted({k for r in o.rows for k in r.overrides})
    short = [k.split(".")[-1] for k in keys]
    head = f"{'rank':>4}  {'trial':<12} {'status':<13} {'ep':>3} {'val_top1':>8} {'val_top5':>8} {'val_loss':>8}  " + \
        "  ".join(short)
    lines = [f"tune: {o.name} finished: " + ", ".join(
        f"{sum(r.status == s for r in o.rows)} {s}" for s in ("completed", "stopped early", "failed")), head]
    for i, r in enumerate(ranked, 1):
        vals = "  ".join(_fmt(r.overrides.get(k)) for k in keys)
        m = r.metrics
        lines.append(f"{i:>4}  {r.trial_id[-12:]:<12} {r.status:<13} {r.epochs:>3} {_pct(m.get('val_top1'))} "
                     f"{_pct(m.get('val_top5'))} {m.get('val_loss', float('nan')):>8.3f}  {vals}"
                     + (f"  ({r.error})" if r.error else ""))
    for vocab, r in sorted(o.best_per_vocab.items(), key=lambda kv: kv[0]):
        lines.append(f"best for vocab_size={vocab}: trial {r.trial_id} {metric} {r.metrics.get(metric):.4f}")
    if o.best_config:
        lines.append(f"best of the largest vocabulary: trial {o.best.trial_id if o.best else '-'}; "
                     f"config {o.best_config}")
        lines.append(f"retrain it with: asl-ray train -c {o.best_config}")
    lines.append(f"compare the trials: asl-ray ui -c <config>  (or mlflow ui --backend-store-uri {o.tracking_uri} "
                 f"--host 127.0.0.1)")
    return "\n".join(lines)


def _pct(v: float | None) -> str:
    return f"{v:>8.1%}" if v is not None else f"{'-':>8}"


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
