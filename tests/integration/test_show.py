"""`asl-ray show` draws real MediaPipe landmarks over real frames."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from click.testing import CliRunner

from asl_ray.cli import main
from tests.conftest import ROOT, require_shared

pytestmark = pytest.mark.integration


def test_show_writes_a_contact_sheet_with_the_skeleton(tmp_path: Path) -> None:
    video = require_shared("wlasl100", "videos", "00624.mp4")
    out = tmp_path / "sheet.png"
    result = CliRunner().invoke(main, ["show", str(video), "-o", str(out), "--frames", "4"])
    assert result.exit_code == 0, result.output
    assert "pose in 100% of frames" in result.output
    img = mpimg.imread(out)[..., :3]
    # The pose is drawn in green (#2ca02c): many such pixels, which the video itself lacks.
    green = np.all(np.abs(img - np.array([0x2C, 0xA0, 0x2C]) / 255) < 0.08, axis=-1)
    assert green.sum() > 500


def test_show_on_a_corrupt_video_is_a_one_line_error(tmp_path: Path) -> None:
    bad = require_shared("corrupt", "00335.mp4")
    result = CliRunner().invoke(main, ["show", str(bad), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert "cannot open" in result.output


def test_show_augment_draws_training_views_of_a_real_video(tmp_path: Path) -> None:
    video = require_shared("wlasl100", "videos", "00624.mp4")
    out = tmp_path / "aug.png"
    config = str(ROOT / "configs" / "wlasl100_attention.yaml")
    result = CliRunner().invoke(main, ["show", str(video), "-o", str(out), "--augment", "3", "-c", config,
                                       "--set", "train.augment.hand_shift=0.1"])
    assert result.exit_code == 0, result.output
    assert "in 3 augmented views (seeds 0-2)" in result.output
    img = mpimg.imread(out)[..., :3]
    green = np.all(np.abs(img - np.array([0x2C, 0xA0, 0x2C]) / 255) < 0.08, axis=-1)
    assert green.sum() > 300  # the pose, in every panel
    for args, words in ((["--augment", "3"], "needs -c CONFIG"), (["-c", config], "go with --augment N"),
                        (["--augment", "2", "-c", config, "--checkpoint", str(tmp_path)], "give one of them")):
        bad = CliRunner().invoke(main, ["show", str(video), *args])
        assert bad.exit_code == 2 and words in bad.output, bad.output
        assert len(bad.output.strip().splitlines()) == 1
