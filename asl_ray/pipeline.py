"""``asl-ray run``: the whole pipeline in one command, for a first run.

extract (real videos when the configured dataset is on disk, else a clearly
labelled synthetic landmark set) -> train (Ray Train) -> a small tune (Ray
Tune + ASHA) -> evaluate the best checkpoint on val -> a summary that says
where everything is and how to open the MLflow UI.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from asl_ray.config import Config, DataConfig, resolve_paths
from asl_ray.storage import join
from asl_ray.tracking import check_tracking


def dataset_on_disk(data: DataConfig) -> bool:
    if data.source == "asl-signs":
        return data.asl_signs_dir is not None and (data.asl_signs_dir / "train.csv").is_file()
    if data.source == "folder":
        return data.videos_dir is not None and data.videos_dir.is_dir()
    return (data.wlasl_json is not None and data.wlasl_json.is_file()
            and data.videos_dir is not None and data.videos_dir.is_dir())


@dataclass
class PipelineSummary:
    synthetic: bool
    train_val_top1: float
    tune_best_val_top1: float | None
    best_checkpoint: str | None
    eval_metrics: dict[str, float]
    tracking_uri: str
    seconds: float


def run_pipeline(cfg: Config, echo: Callable[[str], None] = print) -> PipelineSummary:
    from asl_ray.checkpoint import load_checkpoint
    from asl_ray.evaluation import evaluate_checkpoint
    from asl_ray.extract import completed_ids, run_extract
    from asl_ray.search import run_tune
    from asl_ray.synthetic import write_synthetic
    from asl_ray.tracking import tracking_uri
    from asl_ray.trainer import run_training

    t0 = time.perf_counter()
    cfg = resolve_paths(cfg)
    check_tracking(cfg)
    synthetic = not dataset_on_disk(cfg.data)
    echo("== 1/4 extract ==")
    if synthetic:
        echo("run: no dataset on disk at the configured paths; using a SYNTHETIC landmark dataset (generated "
             "movements, not real signs) so the pipeline can run from features on. Point data.* at real "
             "videos for real results.")
        # A folder of its own, never extract.output_dir: generated rows must not
        # mix into (or stand in for) a real feature dataset.
        out = join(cfg.train.run_dir, "synthetic-features")
        cfg = cfg.model_copy(update={"extract": cfg.extract.model_copy(update={"output_dir": out})})
        if not completed_ids(out):
            echo(f"run: wrote {write_synthetic(out)} synthetic samples to {out}")
    else:
        run_extract(cfg, echo=echo)
    echo("== 2/4 train ==")
    trained = run_training(cfg, echo=echo)
    echo("== 3/4 tune ==")
    tuned = run_tune(cfg, echo=echo) if cfg.tune.search_space else None
    echo("== 4/4 evaluate ==")
    candidates = [(trained.best_metrics.get("val_top1", -1.0), trained.best_checkpoint)]
    if tuned is not None and tuned.best is not None:
        trial_dir = join(tuned.path, "trials", tuned.best.trial_id)
        from asl_ray.checkpoint import resolve_checkpoint

        try:
            candidates.append((float(tuned.best.metrics.get("val_top1", -1.0)), resolve_checkpoint(trial_dir)))
        except Exception as exc:  # a trial stopped before its first checkpoint
            echo(f"run: best trial has no checkpoint to evaluate ({exc})")
    score, best = max(((s, c) for s, c in candidates if c is not None), key=lambda sc: sc[0],
                      default=(-1.0, None))
    metrics: dict[str, float] = {}
    if best is not None:
        ev = evaluate_checkpoint(load_checkpoint(best), "val")
        metrics = ev.metrics
    summary = PipelineSummary(synthetic, trained.best_metrics.get("val_top1", float("nan")),
                              float(tuned.best.metrics["val_top1"]) if tuned and tuned.best else None, best,
                              metrics, tracking_uri(cfg), time.perf_counter() - t0)
    echo(summary_text(summary))
    return summary


def summary_text(s: PipelineSummary) -> str:
    kind = "SYNTHETIC data (not real signs)" if s.synthetic else "real videos"
    lines = [f"== done in {s.seconds / 60:.1f} min on {kind} =="]
    if s.eval_metrics:
        m = s.eval_metrics
        lines.append(f"best val accuracy: top-1 {m['top1']:.1%}, top-5 {m['top5']:.1%}, mean per-class "
                     f"{m['mean_class_acc']:.1%}, blank ratio {m['blank_ratio']:.2f}")
    tune = f"{s.tune_best_val_top1:.1%}" if s.tune_best_val_top1 is not None else "-"
    lines.append(f"(training run val top-1 {s.train_val_top1:.1%}; best tune trial {tune})")
    lines.append(f"best checkpoint: {s.best_checkpoint}")
    lines.append(f"pictures: training_curves.png and confusion_matrix.png next to the checkpoint's run folder "
                 f"({s.best_checkpoint.rstrip('/').rsplit('/', 1)[0] if s.best_checkpoint else '-'})")
    lines.append(f"MLflow UI: mlflow ui --backend-store-uri {s.tracking_uri} --host 127.0.0.1   "
                 f"(or: asl-ray ui -c <this config>), then open http://127.0.0.1:5000")
    return "\n".join(lines)
