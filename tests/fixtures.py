"""Small generated landmark fixtures (no files, no downloads)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from asl_ray.config import FeaturesConfig
from asl_ray.dataset import SignDataset
from asl_ray.features import L_HIP, L_SHOULDER, NOSE, R_HIP, R_SHOULDER
from asl_ray.ingest import prepare_table
from asl_ray.inputs import Standardizer
from asl_ray.samples import fit_standardizer, load_splits
from asl_ray.vocab import Vocabulary


def fake_landmarks(t: int = 12, seed: int = 0, hand_gap: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A plausible upper body and two moving hands in pixel-like units.

    Returns pose (T, 33, 4), left (T, 21, 3), right (T, 21, 3); with
    ``hand_gap`` the left hand is missing (NaN) in frames 3-5, as real
    MediaPipe output often is.
    """
    rng = np.random.default_rng(seed)
    pose = np.zeros((t, 33, 4))
    pose[..., :3] = rng.normal(0, 20, (t, 33, 3)) + [320, 240, 0]
    pose[:, L_SHOULDER, :3] = [400, 200, 0]
    pose[:, R_SHOULDER, :3] = [240, 200, 10]
    pose[:, L_HIP, :3] = [380, 420, 0]
    pose[:, R_HIP, :3] = [260, 420, 5]
    pose[:, NOSE, :3] = [320, 100, -30]
    pose[..., :3] += rng.normal(0, 1.5, (t, 33, 3))
    pose[..., 3] = 0.9
    hands = []
    for cx in (420, 220):
        base = rng.normal(0, 15, (21, 3)) + [cx, 260, 0]
        drift = np.linspace(0, 40, t)[:, None, None] * np.array([0.3, -1.0, 0.2])
        hands.append(base[None] + drift + rng.normal(0, 0.5, (t, 21, 3)))
    left, right = hands
    if hand_gap:
        left[3:6] = np.nan
    return pose, left, right


def ingest_matches_memory(table: pa.Table, features: FeaturesConfig) -> tuple[pa.Table, Standardizer, Vocabulary]:
    """The Ray Data ingest's rows (``prepare_table``) of every row of ``table``
    equal the in-memory path's inputs (``SignDataset``) for the same video, as
    ``features`` reads them; returns the ingest's table, the standardiser and
    the vocabulary, so a test can prepare the table another way to compare."""
    splits = load_splits(table, None, features)
    std = fit_standardizer(splits.train, features)
    out = prepare_table(table, features, std, splits.vocab)
    ds = SignDataset(splits.train + splits.val, features, std)
    by_id = {s.video_id: i for i, s in enumerate(ds.samples)}
    width = ds.inputs(0).shape[1]
    for r, vid in enumerate(table.column("video_id").to_pylist()):
        x = np.asarray(out.column("x")[r].as_py(), np.float32).reshape(-1, width)
        np.testing.assert_allclose(x, ds.inputs(by_id[vid]), rtol=1e-6, atol=1e-6)
    return out, std, splits.vocab
