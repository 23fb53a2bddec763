from __future__ import annotations

import json
from pathlib import Path

import pytest

from asl_ray.config import DataConfig
from asl_ray.errors import UserError
from asl_ray.manifest import MANIFEST_SCHEMA, asl_signs_manifest, wlasl_manifest


def _fake_wlasl(root: Path) -> DataConfig:
    """A 3-gloss WLASL index; video 'v5' and 'v6' are listed but not on disk."""
    index = [
        {"gloss": "book", "instances": [
            {"video_id": "v1", "split": "train", "frame_start": 1, "frame_end": -1, "fps": 25,
             "signer_id": 1, "source": "x"},
            {"video_id": "v2", "split": "val", "frame_start": 3, "frame_end": 40, "fps": 25,
             "signer_id": 2, "source": "x"},
            {"video_id": "v5", "split": "train", "frame_start": 1, "frame_end": -1, "fps": 25,
             "signer_id": 3, "source": "x"},
        ]},
        {"gloss": "drink", "instances": [
            {"video_id": "v3", "split": "train", "frame_start": 1, "frame_end": -1, "fps": 30,
             "signer_id": 1, "source": "y"},
        ]},
        {"gloss": "zzz", "instances": [
            {"video_id": "v4", "split": "test", "frame_start": 1, "frame_end": -1, "fps": 30,
             "signer_id": 1, "source": "y"},
            {"video_id": "v6", "split": "train", "frame_start": 1, "frame_end": -1, "fps": 30,
             "signer_id": 1, "source": "y"},
        ]},
    ]
    (root / "WLASL_v0.3.json").write_text(json.dumps(index))
    (root / "nslt_100.json").write_text(json.dumps(
        {v: {"subset": "train", "action": [0, 1, 10]} for v in ["v1", "v2", "v3", "v5"]}))
    videos = root / "videos"
    videos.mkdir()
    for vid in ["v1", "v2", "v3", "v4"]:
        (videos / f"{vid}.mp4").write_bytes(b"")
    return DataConfig(wlasl_json=root / "WLASL_v0.3.json", videos_dir=videos)


def test_wlasl_rows_and_missing(tmp_path: Path) -> None:
    cfg = _fake_wlasl(tmp_path)
    m = wlasl_manifest(cfg)
    assert m.table.schema == MANIFEST_SCHEMA
    assert m.table.column("video_id").to_pylist() == ["v1", "v2", "v3", "v4"]
    assert m.missing == ["v5", "v6"]
    row = m.table.slice(1, 1).to_pylist()[0]
    assert row["gloss"] == "book" and row["label"] == 0 and row["split"] == "val"
    assert (row["frame_start"], row["frame_end"]) == (3, 40)
    assert row["path"].endswith("videos/v2.mp4")
    assert m.split_counts() == {"test": 1, "train": 2, "val": 1}


def test_wlasl_subset_and_top_k(tmp_path: Path) -> None:
    cfg = _fake_wlasl(tmp_path)
    sub = wlasl_manifest(cfg.model_copy(update={"subset": 100}))
    assert sub.table.column("video_id").to_pylist() == ["v1", "v2", "v3"]
    assert sub.missing == ["v5"]
    top = wlasl_manifest(cfg.model_copy(update={"top_k_glosses": 1}))
    assert set(top.table.column("gloss").to_pylist()) == {"book"}
    assert top.missing == ["v5"]


def test_malformed_json_names_file_and_position(tmp_path: Path) -> None:
    cfg = _fake_wlasl(tmp_path)
    assert cfg.wlasl_json is not None
    cfg.wlasl_json.write_text('[{"gloss": "book",\n "instances": [}]')
    with pytest.raises(UserError, match=r"WLASL_v0.3.json: malformed JSON at line 2, column \d+"):
        wlasl_manifest(cfg)


def test_missing_videos_dir_is_a_user_error(tmp_path: Path) -> None:
    cfg = _fake_wlasl(tmp_path)
    with pytest.raises(UserError, match="not a folder"):
        wlasl_manifest(cfg.model_copy(update={"videos_dir": tmp_path / "nope"}))


def test_asl_signs_split_keeps_participants_together(tmp_path: Path) -> None:
    lines = ["path,participant_id,sequence_id,sign"]
    for p in range(10):
        for s in range(4):
            rel = f"train_landmark_files/{p}/{p}{s}.parquet"
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_bytes(b"")
            lines.append(f"{rel},{p},{p}{s},{'hello' if s % 2 else 'thankyou'}")
    lines.append("train_landmark_files/99/gone.parquet,99,gone,hello")
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    m = asl_signs_manifest(DataConfig(source="asl-signs", asl_signs_dir=tmp_path, val_fraction=0.3))
    assert m.table.num_rows == 40 and m.missing == ["gone"]
    split_of: dict[str, set[str]] = {}
    for row in m.table.to_pylist():
        split_of.setdefault(row["signer_id"], set()).add(row["split"])
    assert all(len(s) == 1 for s in split_of.values())
    assert {"train", "val"} == set().union(*split_of.values())
    assert sorted(set(m.table.column("label").to_pylist())) == [0, 1]
