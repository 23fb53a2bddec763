"""Duplicate videos: hashes, groups, what training leaves out; and velocities of resampled clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from asl_ray.config import DataConfig
from asl_ray.duplicates import drop_plan, duplicate_groups, file_hash, fill_hashes, usable_rows
from asl_ray.inputs import build_inputs, resample
from asl_ray.manifest import folder_manifest


def _table(rows: list[tuple[str, str, str, str | None]]) -> pa.Table:
    vid, gloss, split, h = zip(*rows, strict=True)
    return pa.table({"video_id": list(vid), "gloss": list(gloss), "split": list(split),
                     "content_hash": pa.array(list(h), pa.string()), "path": [f"/nowhere/{v}" for v in vid]})


# The WLASL100 cases from the issue, by shape: a same-gloss val copy of a train
# video, a cross-split copy under another gloss, a train-only conflict, and a
# harmless same-gloss pair inside train.
ROWS = [
    ("57949", "thin", "train", "a"), ("57948", "thin", "val", "a"),
    ("05742", "before", "train", "b"), ("32255", "last", "val", "b"),
    ("33273", "like", "train", "c"), ("49181", "same", "train", "c"),
    ("17721", "drink", "train", "d"), ("17722", "drink", "train", "d"),
    ("00001", "solo", "train", "e"), ("00002", "solo", "val", None),
]


def test_groups_are_marked_conflicting_and_cross_split() -> None:
    groups = {g.content_hash: g for g in duplicate_groups(_table(ROWS))}
    assert set(groups) == {"a", "b", "c", "d"}  # a single row and a row without hash make no group
    assert [(g.conflicting, g.cross_split) for g in (groups["a"], groups["b"], groups["c"], groups["d"])] == [
        (False, True), (True, True), (True, False), (False, False)]
    assert groups["b"].members[0].split == "train"  # train first in a group's listing
    assert "conflicting glosses; crosses splits" in groups["b"].line()


def test_training_drops_val_leaks_and_conflicts_only() -> None:
    plan = drop_plan(_table(ROWS))
    assert plan.reasons == {"57948": "leak", "05742": "conflict", "32255": "conflict", "33273": "conflict",
                            "49181": "conflict"}
    assert plan.params() == {"duplicate_groups": 4, "duplicates_dropped_leak": 1,
                             "duplicates_dropped_conflict": 4, "rows_without_hash": 1}
    kept, _ = usable_rows(_table(ROWS), "drop")
    assert sorted(kept.column("video_id").to_pylist()) == ["00001", "00002", "17721", "17722", "57949"]
    same, plan = usable_rows(_table(ROWS), "keep")
    assert same.num_rows == len(ROWS) and not plan.reasons


def test_manifest_hashes_files_and_finds_copies(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    for gloss, name, data in [("hello", "a", b"clip-1"), ("hello", "b", b"clip-2"), ("bye", "c", b"clip-1")]:
        (root / gloss).mkdir(parents=True, exist_ok=True)
        (root / gloss / f"{name}.mp4").write_bytes(data)
    m = folder_manifest(DataConfig(source="folder", videos_dir=root))
    hashes = dict(zip(m.table.column("video_id").to_pylist(), m.table.column("content_hash").to_pylist(),
                      strict=True))
    assert hashes["hello/a"] == hashes["bye/c"] == file_hash(root / "hello/a.mp4") != hashes["hello/b"]
    [group] = m.duplicates()
    assert group.conflicting and {x.video_id for x in group.members} == {"hello/a", "bye/c"}


def test_rows_without_hash_are_hashed_from_their_files(tmp_path: Path) -> None:
    (tmp_path / "x.mp4").write_bytes(b"same")
    (tmp_path / "y.mp4").write_bytes(b"same")
    table = pa.table({"video_id": ["x", "y", "z"], "gloss": ["g", "h", "g"], "split": ["train", "val", "val"],
                      "content_hash": pa.array([None, None, None], pa.string()),
                      "path": [str(tmp_path / "x.mp4"), str(tmp_path / "y.mp4"), str(tmp_path / "gone.mp4")]})
    filled = fill_hashes(table).column("content_hash").to_pylist()
    assert filled[0] == filled[1] == file_hash(tmp_path / "x.mp4") and filled[2] is None
    kept, plan = usable_rows(table, "drop")
    assert kept.column("video_id").to_pylist() == ["z"] and plan.unhashed == 1


def test_velocity_is_per_second_after_resampling() -> None:
    """A hand moving at constant speed has the same velocity input whether the
    clip is used whole or subsampled to max_frames (it used to double)."""
    t, fps = 200, 30.0
    lm = np.zeros((t, 75, 3), np.float32)
    lm[:, :, 0] = (np.arange(t, dtype=np.float32) / fps)[:, None] * 0.5  # every point: 0.5 units per second in x
    whole = build_inputs(*resample(lm, fps, 400), ["velocity"])
    short_lm, short_fps = resample(lm, fps, 100)
    assert short_lm.shape[0] == 100 and np.isclose(short_fps, fps * 99 / 199)
    short = build_inputs(short_lm, short_fps, ["velocity"])
    # Rounded indices step 2 or 3 frames; over the clip the steps add up exactly.
    assert np.allclose(whole[1:, 0], whole[1, 0], rtol=1e-3) and np.isclose(short[1:, 0].mean(), whole[1, 0], rtol=1e-4)
