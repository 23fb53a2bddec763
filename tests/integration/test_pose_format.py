"""pose-format's .pose files in and out, with the real `pose-format` package:
export -> import through Ray Data keeps the landmarks; a .pose made by
pose-format's own Holistic code from a real video imports; a corrupt .pose
is a failed row with its reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner

from asl_ray.cli import main
from asl_ray.config import ExtractConfig, load_config
from asl_ray.extract import SampleProcessor, read_features, rows_to_table, run_extract
from asl_ray.schema import sample_arrays
from asl_ray.storage import write_atomically
from asl_ray.synthetic import synthetic_rows
from tests.conftest import ROOT, require_shared

pytestmark = pytest.mark.integration


def _row(path: Path, vid: str = "v") -> dict:
    return {"video_id": vid, "gloss": "g", "label": 0, "split": "train", "frame_start": 1, "frame_end": -1,
            "fps": None, "signer_id": None, "source": "pose", "path": str(path)}


def test_export_then_import_through_ray_keeps_the_landmarks(local_ray, tmp_path: Path) -> None:
    rows = synthetic_rows(num_glosses=3, per_gloss=5, seed=2)
    features = tmp_path / "features"
    features.mkdir()
    write_atomically(rows_to_table(rows), str(features), "part-0.parquet")
    out = tmp_path / "poses"
    cfg_file = str(ROOT / "configs/wlasl100.yaml")
    exported = CliRunner().invoke(main, ["export", "-c", cfg_file, "--set", f"extract.output_dir={features}",
                                         "--format", "pose", "-o", str(out)])
    assert exported.exit_code == 0, exported.output
    assert len(list(out.glob("*.pose"))) == len(rows) and (out / "labels.csv").is_file()

    back = tmp_path / "imported"
    cfg = load_config(ROOT / "configs/wlasl100.yaml", [
        "data.source=pose", f"data.pose_labels={out / 'labels.csv'}", f"extract.output_dir={back}"])
    assert run_extract(cfg, echo=lambda _: None).ok == len(rows)
    table = read_features(str(back))
    for original in rows:
        row = table.filter(pc.equal(table.column("video_id"), original["video_id"])).to_pylist()[0]
        assert (row["gloss"], row["split"]) == (original["gloss"], original["split"])
        a = np.asarray(original["landmarks"], np.float32).reshape(-1, 75, 3)
        b = sample_arrays(row).landmarks
        assert np.array_equal(np.isnan(a), np.isnan(b))  # what was missing stays missing
        np.testing.assert_allclose(b, a, atol=1e-4)


def test_a_pose_file_from_pose_formats_own_holistic_imports(tmp_path: Path) -> None:
    import cv2
    from pose_format.utils.holistic import load_holistic

    video = require_shared("wlasl100", "videos", "00623.mp4")
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    h, w = frames[0].shape[:2]
    pose = load_holistic(frames, fps=fps, width=w, height=h)
    path = tmp_path / "00623.pose"
    with path.open("wb") as f:
        pose.write(f)

    row = SampleProcessor(ExtractConfig())(_row(path, "00623"))
    assert row["status"] == "ok", row["error"]
    assert row["num_frames"] == len(frames) and abs(row["fps"] - fps) < 1e-3
    arrays = sample_arrays(row)
    assert arrays.pose_mask.mean() > 0.9 and (arrays.left_mask | arrays.right_mask).any()
    both = arrays.right_mask
    hand = arrays.landmarks[both, 54:75]
    assert np.isfinite(hand).all()
    # Hands were moved to their pose wrist's depth: the right hand's wrist sits near the pose's right wrist.
    assert np.nanmedian(np.abs(hand[:, 0] - arrays.landmarks[both, 16])) < 0.5


def test_a_corrupt_pose_file_is_a_failed_row(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pose"
    garbage.write_bytes(b"\x00\x01not a pose file at all" * 10)
    empty = tmp_path / "empty.pose"
    empty.write_bytes(b"")
    proc = SampleProcessor(ExtractConfig())
    for path, reason in ((garbage, "not a readable .pose file"), (empty, "empty file")):
        row = proc(_row(path))
        assert row["status"] == "failed" and reason in row["error"], row["error"]
