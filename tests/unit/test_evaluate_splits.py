"""`asl-ray evaluate --split` scores any split the feature dataset has (test
included, as papers report it) and names the splits present when asked for
one that is not there."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from asl_ray.checkpoint import build_model, save_checkpoint
from asl_ray.cli import main
from asl_ray.config import load_config
from asl_ray.dataset import fit_standardizer, load_splits
from asl_ray.extract import rows_to_table
from asl_ray.storage import write_atomically
from asl_ray.synthetic import synthetic_rows


def _checkpoint(tmp_path: Path) -> Path:
    rows = synthetic_rows(num_glosses=3, per_gloss=10, seed=1)
    for i, r in enumerate(rows):
        if i % 5 == 1:
            r["split"] = "test"
    features = tmp_path / "features"
    features.mkdir()
    write_atomically(rows_to_table(rows), str(features), "part-0.parquet")
    cfg = load_config(None, ["data.wlasl_json=x.json", f"extract.output_dir={features}", "model.hidden_size=16",
                             "model.num_layers=1"])
    splits = load_splits(rows_to_table(rows), None, cfg.features.max_frames)
    std = fit_standardizer(splits.train, cfg.features)
    return save_checkpoint(tmp_path / "ck", cfg, build_model(cfg, splits.vocab.num_glosses), splits.vocab, std,
                           {"epoch": 0}, [])


def test_test_split_evaluates_and_a_missing_split_names_those_present(tmp_path: Path) -> None:
    ck = _checkpoint(tmp_path)
    ok = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(ck), "--split", "test", "--out",
                                   str(tmp_path / "eval")])
    assert ok.exit_code == 0, ok.output
    assert "test: 6 samples, 3 glosses" in ok.output  # 2 of every gloss's 10 rows
    assert (tmp_path / "eval" / "per_class.csv").is_file()

    bad = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(ck), "--split", "dev"])
    assert bad.exit_code == 2
    lines = [line for line in bad.output.splitlines() if line.strip()]
    assert lines == ["error: --split 'dev': not in the feature dataset, whose splits are: test, train, val"]
