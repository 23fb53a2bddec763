"""features.fill_gaps: short runs of frames where MediaPipe lost a hand are
filled by linear interpolation, the same way on the in-memory path, the Ray
Data ingest path and at inference (samples.as_read)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from asl_ray.config import FeaturesConfig, load_config
from asl_ray.errors import UserError
from asl_ray.extract import rows_to_table
from asl_ray.ingest import prepare_table
from asl_ray.inputs import LEFT, RIGHT, fill_hand_gaps
from asl_ray.samples import as_read, landmark_views, load_splits
from asl_ray.synthetic import synthetic_rows
from tests.fixtures import ingest_matches_memory

FEATURES = FeaturesConfig(inputs=["phono", "masks", "hands", "pose", "velocity", "bones"], max_frames=40,
                          fill_gaps=2)


def _clip(t: int = 12) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(t, 75, 3)).astype(np.float32)


def test_short_interior_gaps_are_interpolated_and_the_rest_left_missing() -> None:
    lm = _clip()
    lm[[0, 3, 4, 7, 8, 9, 11], RIGHT] = np.nan  # missing at the start, 2 frames, 3 frames, at the end
    lm[5, LEFT] = np.nan  # one frame of the other hand
    out = fill_hand_gaps(lm, 2)
    found = np.isfinite(out[:, RIGHT]).all(axis=(1, 2))
    assert found.tolist() == [False, True, True, True, True, True, True, False, False, False, True, False]
    # Frames 3 and 4 lie a third and two thirds of the way from frame 2 to frame 5.
    np.testing.assert_allclose(out[3, RIGHT], lm[2, RIGHT] + (lm[5, RIGHT] - lm[2, RIGHT]) / 3, atol=1e-6)
    np.testing.assert_allclose(out[4, RIGHT], lm[2, RIGHT] + 2 * (lm[5, RIGHT] - lm[2, RIGHT]) / 3, atol=1e-6)
    np.testing.assert_allclose(out[5, LEFT], (lm[4, LEFT] + lm[6, LEFT]) / 2, atol=1e-6)
    keep = np.isfinite(lm)
    np.testing.assert_array_equal(out[keep], lm[keep])  # what was found is left as it was
    np.testing.assert_array_equal(out[:, :33], lm[:, :33])  # the pose too
    assert np.isnan(lm[3, RIGHT]).all()  # the input is not changed
    # A longer limit fills the 3-frame gap; 0 fills nothing and returns the clip itself.
    assert np.isfinite(fill_hand_gaps(lm, 3)[7:10, RIGHT]).all()
    assert fill_hand_gaps(lm, 0) is lm
    full = _clip()
    assert fill_hand_gaps(full, 5) is full


def test_lip_points_pass_through() -> None:
    lm = np.concatenate([_clip(), np.ones((12, 40, 3), np.float32)], axis=1)
    lm[4, RIGHT] = np.nan
    out = fill_hand_gaps(lm, 1)
    assert out.shape == (12, 115, 3) and np.isfinite(out).all()
    np.testing.assert_array_equal(out[:, 75:], lm[:, 75:])


@pytest.fixture(scope="module")
def table() -> pa.Table:
    rows = synthetic_rows(num_glosses=4, per_gloss=10, seed=3)
    for i, r in enumerate(rows):
        lm = np.asarray(r["landmarks"], np.float32).reshape(-1, 75, 3)
        lm[1 + i % 3: 3 + i % 3, RIGHT] = np.nan  # a 2-frame gap in the right hand of every video
        r["landmarks"] = lm.reshape(-1).tolist()
    return rows_to_table(rows)


def test_training_samples_and_the_ray_data_ingest_read_gaps_filled(table: pa.Table) -> None:
    views = landmark_views(table, FEATURES)
    plain = landmark_views(table)
    for v, p in zip(views, plain, strict=True):
        np.testing.assert_array_equal(v, as_read(p, FEATURES))
        assert np.isnan(p[:, RIGHT]).any() and not np.isnan(v[:, RIGHT]).any()
    splits = load_splits(table, None, FEATURES.model_copy(update={"max_frames": 1000}))  # no resampling
    by_id = dict(zip(table.column("video_id").to_pylist(), views, strict=True))
    for s in splits.train + splits.val:
        np.testing.assert_array_equal(s.landmarks, by_id[s.video_id])

    out, std, vocab = ingest_matches_memory(table, FEATURES)
    unfilled = prepare_table(table, FEATURES.model_copy(update={"fill_gaps": 0}), std, vocab)
    assert not unfilled.column("x").equals(out.column("x"))  # so the comparison above can fail


def test_fill_gaps_out_of_range_is_a_config_error() -> None:
    with pytest.raises(UserError, match="fill_gaps"):
        load_config(None, ["features.fill_gaps=-1"])
