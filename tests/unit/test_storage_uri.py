"""Run folders on an S3-compatible server (moto on 127.0.0.1), no Ray:
URI joins, small files, checkpoint discovery and loading, configs read from a
bucket; and the tune pieces that pick trials (per-vocabulary ASHA, best epoch).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from asl_ray.checkpoint import best_checkpoint, latest_checkpoint, load_checkpoint, resolve_checkpoint, save_checkpoint
from asl_ray.config import Config, dump_config, load_config
from asl_ray.errors import UserError
from asl_ray.inputs import Standardizer, input_size
from asl_ray.search import _best_epoch, grouped_asha, vocab_key
from asl_ray.storage import is_dir, join, local_folder, put_file, read_text, subfolders, write_text
from asl_ray.vocab import Vocabulary
from tests.conftest import ROOT


def test_join_keeps_uris_uris_and_their_options() -> None:
    # The old tune root, Path("s3://b/runs").resolve() / "tune", was a local folder ".../s3:/b/runs/tune".
    assert join("s3://b/runs", "tune") == "s3://b/runs/tune"
    assert join("s3://b/runs/", "tune", "t1") == "s3://b/runs/tune/t1"
    assert join("gs://b/x", "y") == "gs://b/x/y"
    opts = "endpoint_override=127.0.0.1:9000&scheme=http"
    assert join(f"s3://b/runs?{opts}", "tune") == f"s3://b/runs/tune?{opts}"
    assert join("runs", "a") == str(Path("runs").resolve() / "a")


def test_small_files_on_s3(s3_bucket: str, tmp_path: Path) -> None:
    base = join(s3_bucket, "files")
    assert read_text(join(base, "none.txt")) is None
    write_text(join(base, "a", "note.txt"), "hello")
    assert read_text(join(base, "a", "note.txt")) == "hello"
    (tmp_path / "p.bin").write_bytes(b"\x00\x01")
    put_file(tmp_path / "p.bin", join(base, "a", "sub", "p.bin"))
    assert is_dir(join(base, "a")) and subfolders(base) == [join(base, "a")]
    local = local_folder(join(base, "a"))
    assert (local / "note.txt").read_text() == "hello" and (local / "sub" / "p.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(UserError, match="no such folder"):
        local_folder(join(base, "missing"))


def _checkpoint(folder: Path, epochs: list[float], cfg: Config) -> Path:
    from asl_ray.checkpoint import build_model

    vocab = Vocabulary(("a", "b", "c"))
    n = input_size(cfg.features.inputs)
    history = [{"epoch": float(i + 1), "val_top1": v} for i, v in enumerate(epochs)]
    return save_checkpoint(folder, cfg, build_model(cfg, vocab.num_glosses), vocab,
                           Standardizer(np.zeros(n, np.float32), np.ones(n, np.float32)),
                           {"epoch": len(epochs)}, history)


def _upload(local: Path, location: str) -> None:
    for f in local.iterdir():
        put_file(f, join(location, f.name))


def test_checkpoints_in_a_bucket_are_found_resolved_and_loaded(s3_bucket: str, tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs/quickstart.yaml", ["model.hidden_size=8", "model.num_layers=1"])
    run = join(s3_bucket, "runs", "r1")
    # epoch 2 scored best, epoch 3 is the latest; a cut-off checkpoint_4 (no state.pt) never counts.
    for i, hist in enumerate([[0.1], [0.1, 0.5], [0.1, 0.5, 0.3], [0.1, 0.5, 0.3, 0.9]], 1):
        local = _checkpoint(tmp_path / f"c{i}", hist, cfg)
        if i == 4:
            (local / "state.pt").unlink()
        _upload(local, join(run, f"checkpoint_{i}"))
    assert latest_checkpoint(run) == join(run, "checkpoint_3")
    assert best_checkpoint(run) == join(run, "checkpoint_2")
    assert resolve_checkpoint(run) == join(run, "checkpoint_2")
    write_text(join(run, "best_checkpoint.txt"), join(run, "checkpoint_1") + "\n")
    assert resolve_checkpoint(run) == join(run, "checkpoint_1")
    loaded = load_checkpoint(join(run, "checkpoint_3"), with_state=True)
    assert [h["val_top1"] for h in loaded.history] == [0.1, 0.5, 0.3] and loaded.state["epoch"] == 3
    assert loaded.vocab.glosses == ("a", "b", "c")
    with pytest.raises(UserError, match="neither a checkpoint folder"):
        resolve_checkpoint(join(s3_bucket, "runs", "nothing"))


def test_config_reads_from_a_bucket(s3_bucket: str) -> None:
    cfg = load_config(ROOT / "configs/quickstart.yaml", ["model.hidden_size=24"])
    where = write_text(join(s3_bucket, "tune", "best_config.yaml"), dump_config(cfg))
    assert load_config(where).model.hidden_size == 24
    with pytest.raises(UserError, match="not found"):
        load_config(join(s3_bucket, "tune", "missing.yaml"))


def _trial(tid: str, vocab: int) -> SimpleNamespace:
    return SimpleNamespace(trial_id=tid, config={"base": {"train": {"vocab_size": None}},
                                                 "overrides": {"train.vocab_size": vocab}})


def test_asha_ranks_trials_within_their_vocabulary_size() -> None:
    """Four small-vocabulary trials score high, a 100-gloss trial scores lower than
    all of them but best among its own size: one ASHA over all trials stops it
    at the first rung; the grouped one lets it go on (and still stops the
    weaker 100-gloss trial)."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    results = [("s1", 10, 0.90), ("s2", 10, 0.85), ("s3", 10, 0.80), ("s4", 10, 0.82),
               ("b1", 100, 0.30), ("b2", 100, 0.10)]

    def decisions(sched: TrialScheduler) -> dict[str, str]:
        sched.set_search_properties("val_top1", "max")
        trials = {tid: _trial(tid, v) for tid, v, _ in results}
        for t in trials.values():
            sched.on_trial_add(None, t)  # type: ignore[arg-type]
        return {tid: sched.on_trial_result(None, trials[tid], {"training_iteration": 1, "val_top1": s})  # type: ignore[arg-type]
                for tid, _, s in results}

    asha = {"time_attr": "training_iteration", "max_t": 8, "grace_period": 1, "reduction_factor": 2}
    flat = decisions(ASHAScheduler(**asha))
    grouped = decisions(grouped_asha(**asha))
    assert flat["b1"] == TrialScheduler.STOP  # the cross-vocabulary comparison this fixes
    assert grouped["b1"] == TrialScheduler.CONTINUE and grouped["b2"] == TrialScheduler.STOP
    assert vocab_key(_trial("x", 100).config) == "100"
    assert vocab_key({"base": {"train": {"vocab_size": None}}, "overrides": {}}) == "all"


def test_a_trial_is_judged_by_its_best_epoch() -> None:
    df = pd.DataFrame({"epoch": [1, 2, 3], "val_top1": [0.2, 0.6, 0.4], "training_iteration": [1, 2, 3]})
    res = SimpleNamespace(metrics={"epoch": 3, "val_top1": 0.4, "training_iteration": 3}, metrics_dataframe=df)
    best = _best_epoch(res, "val_top1", "max")
    assert best["val_top1"] == 0.6 and best["epoch"] == 2 and best["training_iteration"] == 3
    assert _best_epoch(res, "val_loss", "min") == res.metrics  # no such column: the last epoch
    assert json.dumps(best)  # plain Python numbers (they go into MLflow and the summary)


def test_a_restarted_worker_resumes_from_the_most_advanced_checkpoint(s3_bucket: str, tmp_path: Path) -> None:
    """Ray 2.60 hands a restarted worker group no checkpoint: the worker takes
    the more advanced of train.resume_from and its run folder's latest."""
    from asl_ray.checkpoint import resume_point

    cfg = load_config(ROOT / "configs/quickstart.yaml", ["model.hidden_size=8", "model.num_layers=1"])
    start = join(s3_bucket, "elsewhere", "checkpoint_a")
    _upload(_checkpoint(tmp_path / "a", [0.1, 0.2], cfg), start)
    run = join(s3_bucket, "runs", "resumed")
    assert resume_point(None, run) is None
    assert resume_point(start, run) == start  # first start: nothing of this run yet
    _upload(_checkpoint(tmp_path / "b", [0.1, 0.2, 0.3], cfg), join(run, "checkpoint_b"))
    assert resume_point(start, run) == join(run, "checkpoint_b")  # after a failure: what this run has done
    assert resume_point(None, run) == join(run, "checkpoint_b")
    # The checkpoint Ray Train hands over can trail the run folder's latest, or lead it.
    assert resume_point(None, run, handed=start) == join(run, "checkpoint_b")
    ahead = str(_checkpoint(tmp_path / "c", [0.1, 0.2, 0.3, 0.4], cfg))
    assert resume_point(start, run, handed=ahead) == ahead
