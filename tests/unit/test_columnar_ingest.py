"""The columnar data path without Ray: Arrow buffers -> samples, the Ray Data
batch functions against the in-memory path, length grouping, metric merging
and the storage layer's errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from asl_ray.config import AugmentConfig, FeaturesConfig
from asl_ray.dataset import SignDataset, pad_batch, padding_share
from asl_ray.decode import MetricAccumulator
from asl_ray.errors import UserError
from asl_ray.extract import rows_to_table
from asl_ray.ingest import prepare_table, split_counts, standardizer_sums_table
from asl_ray.ingest_worker import shard_batches
from asl_ray.inputs import StandardizerSums
from asl_ray.samples import fit_standardizer, length_batches, load_splits
from asl_ray.storage import read_features, write_atomically
from asl_ray.synthetic import synthetic_rows
from asl_ray.vocab import Vocabulary

FEATURES = FeaturesConfig(inputs=["phono", "masks", "hands", "pose", "velocity", "bones"], max_frames=40)


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return rows_to_table(synthetic_rows(num_glosses=4, per_gloss=10, seed=3))


def _root(a: np.ndarray) -> object:
    while isinstance(getattr(a, "base", None), np.ndarray):
        a = a.base  # type: ignore[assignment]
    return a.base if a.base is not None else a


def test_samples_are_views_of_one_contiguous_buffer(table: pa.Table) -> None:
    splits = load_splits(table, None, FEATURES.model_copy(update={"max_frames": 1000}))
    samples = splits.train + splits.val
    assert len(samples) == table.num_rows
    assert len({id(_root(s.landmarks)) for s in samples}) == 1  # no per-sample copies
    rows = {r["video_id"]: r for r in table.to_pylist()}
    for s in samples[:5]:
        expected = np.asarray(rows[s.video_id]["landmarks"], np.float32).reshape(-1, 75, 3)
        np.testing.assert_array_equal(s.landmarks, expected)


def test_prepare_table_matches_the_in_memory_inputs(table: pa.Table) -> None:
    splits = load_splits(table, None, FEATURES)
    std = fit_standardizer(splits.train, FEATURES)
    out = prepare_table(table, FEATURES, std, splits.vocab)
    assert out.num_rows == table.num_rows
    ds = SignDataset(splits.train + splits.val, FEATURES, std)
    by_id = {s.video_id: i for i, s in enumerate(ds.samples)}
    ids = table.column("video_id").to_pylist()
    width = ds.inputs(0).shape[1]
    for r in range(out.num_rows):
        x = np.asarray(out.column("x")[r].as_py(), np.float32).reshape(-1, width)
        i = by_id[ids[r]]
        np.testing.assert_allclose(x, ds.inputs(i), rtol=1e-6, atol=1e-6)
        assert out.column("label")[r].as_py() == ds.samples[i].label
        assert out.column("frames")[r].as_py() == x.shape[0]


def test_prepare_table_augments_by_row_seed_and_drops_glosses_outside_the_vocabulary(table: pa.Table) -> None:
    splits = load_splits(table, None, FEATURES)
    std = fit_standardizer(splits.train, FEATURES)
    seeded = table.append_column("aug_seed", pa.array(np.linspace(0.1, 0.9, table.num_rows)))
    aug = AugmentConfig(mirror=0.5)
    a = prepare_table(seeded, FEATURES, std, splits.vocab, aug, seed=1)
    b = prepare_table(seeded, FEATURES, std, splits.vocab, aug, seed=1)
    plain = prepare_table(seeded, FEATURES, std, splits.vocab)
    assert a.equals(b)  # same row seeds -> same augmentation
    assert not a.column("x").equals(plain.column("x"))
    other = seeded.set_column(seeded.column_names.index("aug_seed"), "aug_seed",
                              pa.array(np.linspace(0.2, 0.8, table.num_rows)))
    assert not prepare_table(other, FEATURES, std, splits.vocab, aug, seed=1).column("x").equals(a.column("x"))
    small = Vocabulary(splits.vocab.glosses[:2])
    kept = prepare_table(table, FEATURES, std, small)
    assert kept.num_rows == sum(g in small.glosses for g in table.column("gloss").to_pylist())
    kept_counts, dropped = split_counts(table, small)
    assert kept_counts["train"] + kept_counts["val"] == kept.num_rows
    assert sum(dropped.values()) == table.num_rows - kept.num_rows


def test_streamed_standardizer_sums_equal_the_in_memory_fit(table: pa.Table) -> None:
    splits = load_splits(table, None, FEATURES)
    train = table.filter(pa.compute.equal(table.column("split"), "train"))
    total = StandardizerSums()
    for part in (train.slice(0, 7), train.slice(7)):  # any split of the rows adds up
        row = standardizer_sums_table(part, FEATURES, splits.vocab).to_pylist()[0]
        total.merge(StandardizerSums(row["count"], np.asarray(row["total"]), np.asarray(row["squares"])))
    expected = fit_standardizer(splits.train, FEATURES)
    np.testing.assert_allclose(total.standardizer().mean, expected.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(total.standardizer().std, expected.std, rtol=1e-5, atol=1e-6)


def test_length_grouping_cuts_padding_and_keeps_every_row() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 160, 256)
    xs = [np.ones((n, 3), np.float32) for n in lengths]
    for by_length in (False, True):
        groups = length_batches(lengths, 16, np.random.default_rng(1), by_length)
        assert sorted(np.concatenate(groups).tolist()) == list(range(256))
    plain = [pad_batch([xs[i] for i in g], [1] * len(g)) for g in length_batches(lengths, 16, rng, False)]
    grouped = [pad_batch([xs[i] for i in g], [1] * len(g)) for g in length_batches(lengths, 16, rng, True)]
    assert padding_share(grouped) < 0.5 * padding_share(plain)


def test_shard_batches_pads_and_applies_the_curriculum_limit(table: pa.Table) -> None:
    splits = load_splits(table, None, FEATURES)
    std = fit_standardizer(splits.train, FEATURES)
    prepared = prepare_table(table, FEATURES, std, splits.vocab)
    width = int(len(prepared.column("x")[0].as_py()) / prepared.column("frames")[0].as_py())
    batches = list(shard_batches([prepared.slice(0, 20), prepared.slice(20)], 8, width,
                                 np.random.default_rng(0), by_length=True, limit=2))
    labels = torch.cat([b["labels"] for b in batches])
    assert int((labels <= 2).sum()) == len(labels) == int((prepared.column("label").to_numpy() <= 2).sum())
    for b in batches:
        assert b["x"].shape[0] == len(b["lengths"]) and b["x"].shape[1] == int(b["lengths"].max())


def test_metric_accumulators_of_disjoint_parts_add_up() -> None:
    torch.manual_seed(0)
    lp = torch.log_softmax(torch.randn(10, 7, 6), -1)
    lengths = torch.randint(3, 8, (10,))
    labels = torch.randint(1, 6, (10,))
    whole = MetricAccumulator(5)
    whole.add(lp, lengths, labels, 1.5)
    a, b = MetricAccumulator(5), MetricAccumulator(5)
    a.add(lp[:4], lengths[:4], labels[:4], 1.5)
    b.add(lp[4:], lengths[4:], labels[4:], 1.5)
    merged = a.merge(b)
    assert merged.compute() == pytest.approx(whole.compute())
    np.testing.assert_array_equal(merged.confusion(), whole.confusion())
    again = MetricAccumulator.from_vector(5, whole.to_vector())
    assert again.compute() == pytest.approx(whole.compute())


def test_storage_errors_are_one_line_and_name_the_file(tmp_path: Path, table: pa.Table) -> None:
    assert read_features(str(tmp_path / "absent")).num_rows == 0
    write_atomically(table, str(tmp_path), "part-a.parquet")
    assert read_features(str(tmp_path)).num_rows == table.num_rows
    (tmp_path / "part-b.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(UserError) as err:
        read_features(str(tmp_path))
    assert "part-b.parquet" in str(err.value) and "\n" not in str(err.value)


def test_a_later_file_wins_for_a_repeated_video(tmp_path: Path, table: pa.Table) -> None:
    from asl_ray.storage import repeated_rows

    write_atomically(table, str(tmp_path), "part-a.parquet")
    again = table.slice(0, 2)
    write_atomically(again, str(tmp_path), "part-b.parquet")
    assert read_features(str(tmp_path)).num_rows == table.num_rows
    repeats = repeated_rows(str(tmp_path))
    assert set(repeats) == set(again.column("video_id").to_pylist())
    assert all(p.endswith("part-b.parquet") for p in repeats.values())


def test_empty_dataset_and_no_train_rows_are_one_line_errors(tmp_path: Path, table: pa.Table) -> None:
    from asl_ray.config import load_config
    from asl_ray.trainer import data_summary

    cfg = load_config(None, ["data.wlasl_json=x.json", f"extract.output_dir={tmp_path}"])
    with pytest.raises(UserError, match="no ok rows: run `asl-ray extract` first"):
        data_summary(cfg)
    val_only = table.filter(pa.compute.equal(table.column("split"), "val"))
    write_atomically(val_only, str(tmp_path), "part-val.parquet")
    with pytest.raises(UserError, match="no train split rows"):
        data_summary(cfg)
    write_atomically(table, str(tmp_path), "part-all.parquet")
    assert data_summary(cfg).kept["train"] == sum(s == "train" for s in table.column("split").to_pylist())
    with pytest.raises(UserError, match="no train samples in the vocabulary"):
        data_summary(cfg, Vocabulary(("not-a-gloss",)))


def test_rows_of_another_extractor_or_feature_version_are_refused(table: pa.Table, tmp_path: Path) -> None:
    """A dataset that mixes rows of an older asl-ray with new ones is a one-line
    error naming the fix, for both ingest paths (it trained silently before)."""
    from asl_ray.config import load_config
    from asl_ray.trainer import data_summary, load_data
    from tests.conftest import ROOT

    write_atomically(table.slice(0, 30), str(tmp_path), "part-a.parquet")
    old = table.slice(30)
    old = old.set_column(old.column_names.index("feature_version"), "feature_version",
                         pa.array(["phono36-v0"] * old.num_rows))
    write_atomically(old, str(tmp_path), "part-b.parquet")
    cfg = load_config(ROOT / "configs/quickstart.yaml", [f"extract.output_dir={tmp_path}"])
    for read in (data_summary, load_data):
        with pytest.raises(UserError, match=rf"{old.num_rows} of {table.num_rows} rows were extracted by another "
                                            r"asl-ray version \(.*phono36-v0.*\).*re-extract them"):
            read(cfg)
    (tmp_path / "part-b.parquet").unlink()
    assert data_summary(cfg).kept["train"] > 0  # the current rows alone are fine


def test_ray_data_workers_import_no_torch() -> None:
    """What Ray Data's CPU workers and its planning actors import to run our map
    functions (``ingest.py`` and through it ``samples.py``) stays free of
    torch: with it each of those processes took ~3 CPU-s more to start and
    ~190 MB more memory."""
    import subprocess
    import sys

    code = ("import sys, asl_ray.ingest, asl_ray.samples; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
