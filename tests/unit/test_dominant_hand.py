"""features.dominant_hand: sequences signed with the left hand are mirrored,
the same way on the in-memory path, the Ray Data ingest path and at inference."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from asl_ray.augment import dominant_hand_right, mirror
from asl_ray.config import FeaturesConfig
from asl_ray.extract import rows_to_table
from asl_ray.ingest import prepare_table
from asl_ray.inputs import LEFT, RIGHT
from asl_ray.samples import landmark_views, load_splits
from asl_ray.synthetic import synthetic_rows
from tests.fixtures import ingest_matches_memory

FEATURES = FeaturesConfig(inputs=["phono", "masks", "hands", "pose", "velocity", "bones"], max_frames=40,
                          dominant_hand=True)


def _clip(left_frames: int, right_frames: int, t: int = 10) -> np.ndarray:
    rng = np.random.default_rng(0)
    lm = rng.normal(size=(t, 75, 3)).astype(np.float32)
    lm[left_frames:, LEFT] = np.nan  # MediaPipe's "not found"
    lm[right_frames:, RIGHT] = np.nan
    return lm


def test_a_left_handed_clip_is_mirrored_and_a_right_handed_one_is_left_alone() -> None:
    left = _clip(8, 3)
    np.testing.assert_array_equal(dominant_hand_right(left), mirror(left))
    out = dominant_hand_right(left)
    # The mirrored clip's right hand is the one found on 8 frames now.
    assert np.count_nonzero(~np.isnan(out[:, 54, 0])) == 8 and np.count_nonzero(~np.isnan(out[:, 33, 0])) == 3
    right = _clip(3, 8)
    assert dominant_hand_right(right) is right
    tie = _clip(5, 5)
    assert dominant_hand_right(tie) is tie  # a two-handed sign seen as often on each side keeps its side


def test_with_lip_points_the_mirror_swaps_them_too() -> None:
    lm = np.concatenate([_clip(8, 3), np.random.default_rng(1).normal(size=(10, 40, 3)).astype(np.float32)], 1)
    np.testing.assert_array_equal(dominant_hand_right(lm), mirror(lm))


@pytest.fixture(scope="module")
def table() -> pa.Table:
    rows = synthetic_rows(num_glosses=4, per_gloss=10, seed=3)
    for r in rows[::3]:  # every third video signed with the left hand: its right hand mostly not found
        lm = np.asarray(r["landmarks"], np.float32).reshape(-1, 75, 3)
        lm[: 2 * len(lm) // 3, RIGHT] = np.nan
        lm[np.isnan(lm[:, 33, 0]), LEFT] = 0.1  # and its left hand found on every frame
        r["landmarks"] = lm.reshape(-1).tolist()
    return rows_to_table(rows)


def test_only_the_left_handed_rows_are_mirrored(table: pa.Table) -> None:
    plain = landmark_views(table)
    turned = landmark_views(table, FEATURES)
    mirrored = [not np.array_equal(a, b, equal_nan=True) for a, b in zip(plain, turned, strict=True)]
    assert sum(mirrored) == len(range(0, table.num_rows, 3))
    for a, b, m in zip(plain, turned, mirrored, strict=True):
        np.testing.assert_array_equal(b, mirror(a) if m else a)
    splits = load_splits(table, None, FEATURES.model_copy(update={"max_frames": 1000}))  # no resampling
    by_id = dict(zip(table.column("video_id").to_pylist(), turned, strict=True))
    for s in splits.train + splits.val:
        np.testing.assert_array_equal(s.landmarks, by_id[s.video_id])


def test_the_ray_data_ingest_mirrors_as_the_in_memory_path_does(table: pa.Table) -> None:
    out, std, vocab = ingest_matches_memory(table, FEATURES)
    # ... and differs from reading them unmirrored, so the comparison above can fail.
    unmirrored = prepare_table(table, FEATURES.model_copy(update={"dominant_hand": False}), std, vocab)
    assert not unmirrored.column("x").equals(out.column("x"))
