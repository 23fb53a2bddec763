"""The real extraction pipeline: local Ray Data, real MediaPipe, real videos."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from asl_ray.cli import main
from asl_ray.config import load_config
from asl_ray.extract import read_features, run_extract
from asl_ray.schema import FEATURE_SCHEMA, sample_arrays
from tests.conftest import ROOT, require_shared

pytestmark = pytest.mark.integration
REAL_IDS = ["00623", "00624", "00626"]


def _video_folder(tmp: Path) -> Path:
    """A folder source: 3 real WLASL videos, the 3 corrupt ones, a text file
    named .mp4 and an empty .mp4 (links, so nothing is copied)."""
    videos = require_shared("wlasl100", "videos")
    corrupt = require_shared("corrupt")
    folder = tmp / "videos"
    (folder / "real").mkdir(parents=True)
    (folder / "bad").mkdir()
    for vid in REAL_IDS:
        (folder / "real" / f"{vid}.mp4").symlink_to(videos / f"{vid}.mp4")
    for p in sorted(corrupt.glob("*.mp4")):
        (folder / "bad" / p.name).symlink_to(p)
    (folder / "bad" / "notes.mp4").write_text("this is not a video\n")
    (folder / "bad" / "empty.mp4").write_bytes(b"")
    return folder


def test_real_videos_and_bad_input(local_ray, tmp_path: Path) -> None:
    folder = _video_folder(tmp_path)
    out = tmp_path / "features"
    overrides = ["data.source=folder", f"data.videos_dir={folder}", f"extract.output_dir={out}",
                 "extract.videos_per_file=2"]
    result = CliRunner().invoke(main, ["extract", "-c", "configs/wlasl100.yaml", *[a for o in overrides
                                                                                   for a in ("--set", o)]])
    assert result.exit_code == 0, result.output
    assert "3 ok, 5 failed, 0 skipped" in result.output

    table = read_features(str(out), status=None)
    assert table.schema == FEATURE_SCHEMA
    for f in out.glob("*.parquet"):
        assert pq.read_schema(f).remove_metadata() == FEATURE_SCHEMA
    status = dict(zip(table.column("video_id").to_pylist(), table.column("status").to_pylist(), strict=True))
    assert Counter(status.values()) == {"ok": 3, "failed": 5}
    errors = {r["video_id"]: r["error"] for r in table.to_pylist() if r["status"] == "failed"}
    assert all("cannot open" in errors[f"bad/{n}"] for n in ("00335", "00338", "00339", "notes"))
    assert "empty file" in errors["bad/empty"]

    for row in table.to_pylist():
        if row["status"] != "ok":
            continue
        arr = sample_arrays(row)
        assert arr.features.shape == (row["num_frames"], 36) and row["num_frames"] > 20
        assert arr.pose_mask.mean() > 0.9
        for mask, cols in ((arr.left_mask, slice(0, 15)), (arr.right_mask, slice(18, 33))):
            # Features are finite exactly where the hand is present (velocity
            # also needs the previous frame, so it is left out here).
            assert np.isfinite(arr.features[mask, cols]).all()
            assert np.isnan(arr.features[~mask, cols]).all()
        assert arr.left_mask.any() or arr.right_mask.any()

    again = CliRunner().invoke(main, ["extract", "-c", "configs/wlasl100.yaml",
                                      *[a for o in overrides for a in ("--set", o)]])
    assert again.exit_code == 0
    assert "nothing to do (8 videos already in" in again.output


def test_asl_signs_landmark_files_import(local_ray, tmp_path: Path) -> None:
    require_shared("asl-signs", "train.csv")
    cfg = load_config(ROOT / "configs/asl_signs.yaml", [f"extract.output_dir={tmp_path}"])
    summary = run_extract(cfg, echo=lambda _: None)
    assert (summary.ok, summary.failed) == (84, 0)
    table = read_features(str(tmp_path))
    assert set(table.column("gloss").to_pylist()) == {"hello", "thankyou"}
    row = table.slice(0, 1).to_pylist()[0]
    assert row["extractor_version"] == "asl-signs-import-v1"
    arr = sample_arrays(row)
    assert np.isfinite(arr.landmarks[arr.pose_mask][:, :33]).all()


def test_killed_run_resumes_exactly_once(local_ray, tmp_path: Path) -> None:
    """Kill the driver of a real extraction part-way (batches of two videos, the
    actor still writing), re-run: every video once, by the rule that the row
    written last counts (storage.py), not by luck of file names."""
    videos = require_shared("wlasl100", "videos")
    folder = tmp_path / "videos"
    folder.mkdir()
    ids = ["00623", "00624", "00626", "00631", "00632", "00633", "00627", "00628"]
    for vid in ids:
        (folder / f"{vid}.mp4").symlink_to(videos / f"{vid}.mp4")
    out = tmp_path / "features"
    cmd = [sys.executable, "-m", "asl_ray.cli", "extract", "-c", "configs/wlasl100.yaml",
           "--set", "data.source=folder", "--set", f"data.videos_dir={folder}",
           "--set", f"extract.output_dir={out}", "--set", "extract.videos_per_file=2",
           "--set", "extract.num_actors=1"]
    env = {**os.environ, "RAY_ADDRESS": local_ray.get_runtime_context().gcs_address}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*.parquet"))) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(2)  # the dead driver's actor may finish the file it was writing
    done_before = sum(pq.read_metadata(f).num_rows for f in out.glob("*.parquet"))
    assert 4 <= done_before < len(ids), "the run must be killed part-way"

    resumed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # Only the missing videos are processed.
    assert f"{len(ids) - done_before} videos to do, {done_before} already done" in resumed.stdout
    table = read_features(str(out), status=None)
    assert sorted(table.column("video_id").to_pylist()) == sorted(ids)  # each exactly once: none lost, none twice
    assert set(table.column("status").to_pylist()) == {"ok"}
    assert not list(out.glob("*.tmp-*"))
