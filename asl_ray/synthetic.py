"""A small, clearly labelled SYNTHETIC landmark dataset, for a clone with no data.

Each synthetic "gloss" is a distinct movement of the right hand (direction
and shape of its path) over a noisy, randomly placed upper body; the
left hand is sometimes missing, as in real MediaPipe output. The samples go
through the same feature code and Parquet schema as real extraction, so the
rest of the pipeline (train, tune, evaluate) runs unchanged. Nothing here
says anything about sign language: it exists so the tool can be tried and
tested anywhere. Every row has source="synthetic".
"""

from __future__ import annotations

import numpy as np

from asl_ray.extract import rows_to_table, write_atomically
from asl_ray.features import FEATURE_VERSION, video_features
from asl_ray.versions import SYNTHETIC_VERSION


def _body(rng: np.random.Generator, t: int) -> np.ndarray:
    pose = np.zeros((t, 33, 4))
    cx, cy, width = rng.uniform(250, 390), rng.uniform(180, 230), rng.uniform(120, 200)
    pose[..., :3] = rng.normal(0, 10, (33, 3)) + [cx, cy + 100, 0]
    pose[:, 11, :3] = [cx + width / 2, cy, 0]
    pose[:, 12, :3] = [cx - width / 2, cy, 0]
    pose[:, 23, :3] = [cx + width / 3, cy + 1.6 * width, 0]
    pose[:, 24, :3] = [cx - width / 3, cy + 1.6 * width, 0]
    pose[:, 0, :3] = [cx, cy - 0.7 * width, -20]
    pose[..., :3] += rng.normal(0, 1.0, (t, 33, 3))
    pose[..., 3] = 0.95
    return pose


def _hand(rng: np.random.Generator, start: np.ndarray, path: np.ndarray, curl: float) -> np.ndarray:
    shape = np.zeros((21, 3))
    for f, angle in enumerate(np.linspace(-0.6, 0.6, 5)):
        for j in range(4):
            bend = curl * j
            shape[1 + 4 * f + j] = [np.sin(angle) * 12 * (j + 1), -np.cos(angle + bend) * 12 * (j + 1), 3 * j]
    return start + path[:, None, :] + shape[None] + rng.normal(0, 0.8, (len(path), 21, 3))


def synthetic_rows(num_glosses: int = 6, per_gloss: int = 24, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(num_glosses):
        angle = 2 * np.pi * g / num_glosses
        for i in range(per_gloss):
            t = int(rng.integers(24, 48))
            pose = _body(rng, t)
            s = np.linspace(0, 1, t)[:, None]
            wiggle = np.sin(2 * np.pi * s * (1 + g % 3)) * 15
            path = np.hstack([np.cos(angle) * 90 * s + wiggle, np.sin(angle) * 90 * s, np.zeros_like(s)])
            right = _hand(rng, pose[0, 16, :3], path, curl=0.25 * (g % 4))
            left = _hand(rng, pose[0, 15, :3], np.zeros((t, 3)), curl=0.1)
            if rng.random() < 0.5:
                left[: t // 3] = np.nan
            vf = video_features(pose, left, right, fps=30.0)
            split = "val" if i % 5 == 0 else "train"
            rows.append({
                "video_id": f"synthetic-{g:02d}-{i:03d}", "gloss": f"SYNTH-{g}", "label": g, "split": split,
                "signer_id": f"synthetic-{i % 7}", "source": "synthetic", "path": "(generated)", "fps": 30.0,
                "num_frames": t, "width": 640, "height": 480, "landmarks": vf.landmarks.ravel(),
                "features": vf.features.ravel(), "pose_mask": vf.pose_mask, "left_mask": vf.left_mask,
                "right_mask": vf.right_mask, "extractor_version": SYNTHETIC_VERSION, "feature_version": FEATURE_VERSION,
                "status": "ok", "error": None, "note": "SYNTHETIC sample, not a real sign", "seconds": 0.0,
                "mediapipe_seconds": 0.0,
            })
    return rows


def write_synthetic(out_dir: str, num_glosses: int = 6, per_gloss: int = 24, seed: int = 0) -> int:
    """Write the synthetic dataset into ``out_dir`` (the feature-dataset layout)."""
    from pathlib import Path

    if "://" not in out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    rows = synthetic_rows(num_glosses, per_gloss, seed)
    write_atomically(rows_to_table(rows), out_dir, "part-synthetic.parquet")
    return len(rows)


def write_islr_folder(root: str, sequences: int, signs: int = 25, frames: int = 10, participants: int = 20,
                      seed: int = 0, with_face: bool = True) -> int:
    """A SYNTHETIC folder in the Kaggle ISLR ("asl-signs") layout: ``train.csv``
    plus one landmark Parquet file per sequence (``frame, row_id, type,
    landmark_index, x, y, z``; face, left_hand, pose, right_hand, NaN where a
    hand is missing), each sign a distinct right-hand movement. For tests and
    benchmarks of the importer at scale; returns the number of files."""
    import csv
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    out = Path(root)
    parts = [("face", 468), ("left_hand", 21), ("pose", 33), ("right_hand", 21)]
    if not with_face:
        parts = parts[1:]
    per_frame = sum(n for _, n in parts)
    types = np.concatenate([[name] * n for name, n in parts])
    index = np.concatenate([np.arange(n) for _, n in parts])
    rows = []
    for i in range(sequences):
        sign = i % signs
        pid = 1000 + i % participants
        rel = f"train_landmark_files/{pid}/{i}.parquet"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        s = np.linspace(0, 1, frames)[:, None]
        angle = 2 * np.pi * sign / signs
        xyz = rng.normal(0, 0.01, (frames, per_frame, 3)) + [0.5, 0.5, 0.0]
        start = per_frame - 21  # right hand, last block
        xyz[:, start:, 0] += 0.2 * np.cos(angle) * s
        xyz[:, start:, 1] += 0.2 * np.sin(angle) * s
        pose0 = per_frame - 21 - 33
        xyz[:, pose0 + 11, :2] = [0.6, 0.4]  # shoulders, so the body frame is defined
        xyz[:, pose0 + 12, :2] = [0.4, 0.4]
        if rng.random() < 0.5:
            xyz[: frames // 2, 468 if with_face else 0:(468 if with_face else 0) + 21] = np.nan  # left hand missing
        frame_ids = np.repeat(np.arange(frames) + 20, per_frame)
        table = pa.table({
            "frame": frame_ids.astype(np.int16),
            "row_id": pc.binary_join_element_wise(pa.array(frame_ids).cast(pa.string()),
                                                  pa.array(np.tile(types, frames)),
                                                  pa.array(np.tile(index, frames)).cast(pa.string()), "-"),
            "type": np.tile(types, frames),
            "landmark_index": np.tile(index, frames).astype(np.int16),
            "x": xyz[..., 0].ravel(), "y": xyz[..., 1].ravel(), "z": xyz[..., 2].ravel(),
        })
        pq.write_table(table, out / rel)
        rows.append({"path": rel, "participant_id": pid, "sequence_id": i, "sign": f"sign{sign:03d}"})
    with (out / "train.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "participant_id", "sequence_id", "sign"])
        writer.writeheader()
        writer.writerows(rows)
    return sequences
