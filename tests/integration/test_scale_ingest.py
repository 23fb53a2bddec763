"""The scalable data path on a real local Ray: a generated Kaggle-format folder
of 5,000 landmark files imported, trained on through Ray Data ingest and
evaluated; fresh augmentation every epoch and repeatable runs; two workers
that each score part of val and agree on the whole."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from asl_ray.checkpoint import load_checkpoint
from asl_ray.config import load_config
from asl_ray.evaluation import evaluate_checkpoint
from asl_ray.extract import run_extract
from asl_ray.synthetic import write_islr_folder, write_synthetic
from asl_ray.trainer import data_summary, run_training
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def _cfg(features: Path, runs: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(ROOT / "configs/asl_signs.yaml", [
        f"extract.output_dir={features}", f"train.run_dir={runs}", "tracking.enabled=false", *extra])


def test_kaggle_folder_of_5000_files_imports_trains_and_evaluates(local_ray, tmp_path: Path) -> None:
    src = tmp_path / "islr"
    assert write_islr_folder(str(src), 5000, signs=25, frames=8) == 5000
    feats = tmp_path / "features"
    cfg = _cfg(feats, tmp_path / "runs", f"data.asl_signs_dir={src}", "extract.videos_per_file=250",
               "extract.progress_seconds=2", "train.name=islr", "train.epochs=1", "train.batch_size=64")
    lines: list[str] = []
    summary = run_extract(cfg, echo=lines.append)
    assert summary.ok == 5000 and summary.failed == 0
    assert any(line.startswith("extract: ") and "videos (" in line and "ETA" in line for line in lines)
    again: list[str] = []
    assert run_extract(cfg, echo=again.append).processed == 0  # exactly once: nothing left to do
    assert "nothing to do (5000 videos already" in again[-1]
    assert len(list(feats.glob("*.parquet"))) == 20

    said: list[str] = []
    outcome = run_training(cfg, echo=said.append)
    assert len(outcome.history) == 1 and outcome.best_checkpoint is not None
    seen = data_summary(cfg)
    # What the wait before the first step was spent on: said, and kept with the first epoch.
    assert any(f"val inputs of {seen.kept['val']:,} sequences are built once" in line for line in said)
    assert any(line.startswith("train: input mean/std from ") for line in said)
    first = outcome.history[0]
    assert all(first[f"startup_{k}_s"] > 0 for k in ("metadata", "ray_start", "standardizer", "datasets",
                                                      "train_workers", "worker_setup", "first_batch"))
    assert first["first_step_time"] > 0
    # Val was built at the first evaluation, by the cache that evaluation waited on.
    assert first["val_build_s"] > 0 and first["val_wait_s"] >= 0
    ev = evaluate_checkpoint(load_checkpoint(outcome.best_checkpoint), "val")
    assert int(ev.confusion.sum()) == seen.kept["val"] > 0
    # The workers' sharded val adds up to the same metrics as scoring it in one piece.
    assert ev.metrics["top1"] == pytest.approx(outcome.best_metrics["val_top1"], abs=1e-9)


@pytest.fixture(scope="module")
def synthetic_features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic(str(out), num_glosses=6, per_gloss=24)
    return out


def test_train_epochs_are_augmented_afresh_and_runs_repeat(local_ray, synthetic_features: Path,
                                                           tmp_path: Path) -> None:
    from asl_ray.ingest import fit_standardizer, training_datasets

    def epochs(seed: int, count: int) -> list[list[tuple]]:
        cfg = _cfg(synthetic_features, tmp_path, "train.epochs=2", f"train.seed={seed}")
        vocab = data_summary(cfg).vocab
        ds = training_datasets(cfg, vocab, fit_standardizer(cfg, vocab), val_rows=0)["train"]
        return [sorted((int(r["label"]), tuple(np.round(r["x"][:6], 5))) for r in ds.iter_rows())
                for _ in range(count)]

    first, second = epochs(0, 2)
    assert [lab for lab, _ in first] == [lab for lab, _ in second]  # the same samples, every one once
    assert first != second  # augmented afresh
    (other,) = epochs(1, 1)
    assert [lab for lab, _ in other] == [lab for lab, _ in first] and other != first  # another seed, other draws

    def history(name: str) -> list[float]:
        run = run_training(_cfg(synthetic_features, tmp_path, "train.epochs=2", f"train.name={name}"),
                           echo=lambda _: None)
        return [h["train_loss"] for h in run.history]

    assert history("a") == history("b")  # same seed, same run


def test_two_workers_each_score_part_of_val_and_agree(local_ray, synthetic_features: Path, tmp_path: Path) -> None:
    """Val streamed (rebuilt at every evaluation, as a val larger than
    train.cache_val_rows is): each epoch the two shards together hold every val
    sequence once, and score as the whole does in one piece."""
    cfg = _cfg(synthetic_features, tmp_path, "train.epochs=2", "train.name=two", "train.num_workers=2",
               "train.cpus_per_worker=0.5", "train.prep_cpus=0.5", "train.cache_val_rows=0")
    lines: list[str] = []
    outcome = run_training(cfg, echo=lines.append)
    assert any("will be built at each evaluation" in line for line in lines)
    assert len(outcome.history) == 2
    last = load_checkpoint(outcome.best_checkpoint)
    ev = evaluate_checkpoint(last, "val")
    assert int(ev.confusion.sum()) == data_summary(cfg).kept["val"]
    assert ev.metrics["top1"] == pytest.approx(outcome.best_metrics["val_top1"], abs=1e-9)
    cm = np.load(Path(outcome.best_checkpoint) / "val_confusion.npy")
    np.testing.assert_array_equal(cm, ev.confusion)
    assert json.loads((Path(outcome.best_checkpoint) / "history.json").read_text())[-1]["val_top1"] == \
        outcome.best_metrics["val_top1"]


def test_ray_data_ingest_without_room_for_data_prep_is_a_one_line_error(local_ray, synthetic_features: Path,
                                                                        tmp_path: Path) -> None:
    from asl_ray.errors import UserError

    cfg = _cfg(synthetic_features, tmp_path, "train.num_workers=2", "train.name=full")
    with pytest.raises(UserError, match="train.prep_cpus=1 CPU"):
        run_training(cfg, echo=lambda _: None)


def _explode(batch: dict) -> dict:
    raise ValueError("val row 7 is unreadable")


def test_val_cache_hands_each_rank_its_part_once(local_ray) -> None:
    """The cached val: built once (whichever rank asks first starts it), split
    so the ranks' parts hold every row exactly once; a failed build reaches
    every rank that asks."""
    import ray.data

    from asl_ray.ingest import val_cache

    cache = val_cache(ray.data.range(100, override_num_blocks=7), 3)
    parts = [local_ray.get(cache.shard.remote(rank)) for rank in (2, 0, 1)]
    rows = sorted(int(r["id"]) for part, _ in parts for r in part.iter_rows())
    assert rows == list(range(100))
    assert all(part.count() > 0 for part, _ in parts)
    assert len({seconds for _, seconds in parts}) == 1 and parts[0][1] > 0  # one build
    broken = val_cache(ray.data.range(10).map_batches(_explode), 2)
    local_ray.get(broken.start.remote())
    for rank in (0, 1):
        with pytest.raises(Exception, match="val row 7 is unreadable"):
            local_ray.get(broken.shard.remote(rank))


def test_standardiser_pass_matches_memory_and_a_capped_one_repeats(local_ray, synthetic_features: Path,
                                                                    tmp_path: Path) -> None:
    """The streamed pass over every train sequence gives the in-memory
    statistics; capped (``train.standardizer_rows``), it reads the same rows
    under the same seed and stays close to the full statistics."""
    from asl_ray.ingest import fit_standardizer
    from asl_ray.samples import fit_standardizer as in_memory
    from asl_ray.trainer import load_data

    full_cfg = _cfg(synthetic_features, tmp_path, "train.standardizer_rows=null")
    vocab = data_summary(full_cfg).vocab
    full = fit_standardizer(full_cfg, vocab)
    memory = in_memory(load_data(full_cfg, vocab).train, full_cfg.features)
    np.testing.assert_allclose(full.mean, memory.mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(full.std, memory.std, rtol=1e-4, atol=1e-5)
    capped_cfg = _cfg(synthetic_features, tmp_path, "train.standardizer_rows=40")
    first, again = fit_standardizer(capped_cfg, vocab), fit_standardizer(capped_cfg, vocab)
    np.testing.assert_array_equal(first.mean, again.mean)
    assert not np.array_equal(first.mean, full.mean)  # fewer rows
    assert np.median(np.abs(first.mean - full.mean) / full.std) < 0.2
