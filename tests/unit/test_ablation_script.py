"""scripts/ablation.py: the README's WLASL100 table from run histories."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

from tests.conftest import ROOT


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ablation", ROOT / "scripts" / "ablation.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(run_dir: Path, name: str, top1: list[float], top5: list[float]) -> None:
    ck = run_dir / name / "checkpoint_000"
    ck.mkdir(parents=True)
    hist = [{"epoch": i + 1, "val_top1": a, "val_top5": b} for i, (a, b) in enumerate(zip(top1, top5, strict=True))]
    (ck / "history.json").write_text(json.dumps(hist))


def test_table_averages_seeds_at_the_best_and_the_last_epoch(tmp_path: Path) -> None:
    ab = _script()
    first = ab.ROWS[0][0]
    _run(tmp_path, f"{first}-s0", [0.1, 0.5, 0.4], [0.3, 0.6, 0.7])
    _run(tmp_path, f"{first}-s1", [0.2, 0.3, 0.3], [0.4, 0.5, 0.9])
    _run(tmp_path, f"{ab.ROWS[1][0]}-s0", [0.1, 0.2], [0.2, 0.3])  # unfinished: 2 of 3 epochs
    lines = ab.table(tmp_path, [0, 1], 3, str(tmp_path)).splitlines()
    # best epoch: seed 0 -> 50/60, seed 1 -> 30/50 (first of the tied epochs); last: 40/70 and 30/90
    assert lines[2] == f"| 1 | {ab.ROWS[0][1]} | 0,1 | 40.0 / 55.0 | 35.0 / 80.0 |"
    assert len(lines) == 3  # the unfinished run and the rows never run are left out


def test_every_row_is_a_valid_config() -> None:
    from asl_ray.config import load_config

    ab = _script()
    names = [r[0] for r in ab.ROWS + ab.CTC_ROWS]
    assert len(set(names)) == len(names) and ab.RECIPE in names
    for _, _, overrides in ab.ROWS + ab.CTC_ROWS:
        load_config(ab.CONFIG, overrides)


def test_the_recipe_row_is_the_config_as_it_is_and_no_row_depends_on_it() -> None:
    """Each row states its inputs, smoothing and mirroring, so shipping a new
    recipe in the config file changes no row's meaning."""
    from asl_ray.config import load_config

    ab = _script()
    recipe = dict((name, o) for name, _, o in ab.ROWS)[ab.RECIPE]
    assert load_config(ab.CONFIG, recipe) == load_config(ab.CONFIG, [])
    for name, _, overrides in ab.ROWS:
        keys = {o.split("=", 1)[0] for o in overrides}
        assert {"features.inputs", "model.part_embed", "train.label_smoothing", "train.augment.mirror",
                "train.augment.speed", "train.augment.rotate_deg", "train.augment.scale",
                "train.augment.shear"} <= keys, name
