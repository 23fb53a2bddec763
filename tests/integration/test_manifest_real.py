"""Manifests of the real data in ../shared/data."""

from __future__ import annotations

from click.testing import CliRunner

from asl_ray.cli import main
from asl_ray.config import DataConfig
from asl_ray.manifest import asl_signs_manifest, wlasl_manifest
from tests.conftest import require_shared


def test_wlasl100_manifest_counts() -> None:
    wl = require_shared("wlasl", "WLASL_v0.3.json")
    videos = require_shared("wlasl100", "videos")
    m = wlasl_manifest(DataConfig(wlasl_json=wl, videos_dir=videos, subset=100))
    assert m.table.num_rows == 784
    assert m.split_counts() == {"train": 641, "val": 143}
    assert len(m.gloss_counts()) == 100
    # Every WLASL100 video not on disk (the whole test split among them) is listed.
    assert len(m.missing) == 2038 - 784


def test_asl_signs_manifest_counts() -> None:
    root = require_shared("asl-signs")
    m = asl_signs_manifest(DataConfig(source="asl-signs", asl_signs_dir=root))
    assert m.table.num_rows == 84
    assert set(m.gloss_counts()) == {"hello", "thankyou"}


def test_manifest_command_on_real_data() -> None:
    require_shared("wlasl100", "videos")
    result = CliRunner().invoke(main, ["manifest", "-c", "configs/wlasl100.yaml"])
    assert result.exit_code == 0, result.output
    assert "784 samples present, 100 glosses" in result.output
    assert "train 641, val 143" in result.output
