from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asl_ray.features import (
    FEATURE_NAMES,
    NUM_FEATURES,
    NoBodyFrame,
    body_frame,
    features_from_landmarks,
    hand_features,
    video_features,
)
from tests.fixtures import fake_landmarks


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _similarity(x: np.ndarray, rot: np.ndarray, scale: float, shift: np.ndarray) -> np.ndarray:
    return scale * (x @ rot.T) + shift


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scale=st.floats(0.05, 50.0), data_seed=st.integers(0, 1000))
def test_features_are_sim3_invariant(seed: int, scale: float, data_seed: int) -> None:
    rng = np.random.default_rng(seed)
    rot, shift = _rotation(rng), rng.normal(0, 500, 3)
    pose, left, right = fake_landmarks(seed=data_seed)
    base = video_features(pose, left, right, fps=25.0)
    moved_pose = pose.copy()
    moved_pose[..., :3] = _similarity(pose[..., :3], rot, scale, shift)
    moved = video_features(moved_pose, _similarity(left, rot, scale, shift),
                           _similarity(right, rot, scale, shift), fps=25.0)
    np.testing.assert_allclose(moved.features, base.features, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(moved.landmarks, base.landmarks, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(moved.left_mask, base.left_mask)


def test_body_frame_axes_and_units() -> None:
    pose, _, _ = fake_landmarks(hand_gap=False)
    frame = body_frame(pose)
    np.testing.assert_allclose(frame.axes @ frame.axes.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(frame.axes) == pytest.approx(1.0)
    pts = frame.apply(pose[:, [11, 12], :3].mean(0))
    # Shoulders land at (±0.5, 0, 0) in shoulder widths.
    np.testing.assert_allclose(pts, [[0.5, 0, 0], [-0.5, 0, 0]], atol=1e-9)
    # The hips are below the origin (negative y): y points up the torso.
    assert (frame.apply(pose[:, 23, :3].mean(0))[1]) < 0


def test_missing_hand_gives_nan_and_mask() -> None:
    pose, left, right = fake_landmarks()
    vf = video_features(pose, left, right, fps=30)
    assert vf.features.shape == (12, NUM_FEATURES) == (12, len(FEATURE_NAMES))
    assert vf.landmarks.shape == (12, 75, 3)
    assert list(vf.left_mask) == [True] * 3 + [False] * 3 + [True] * 6
    assert np.isnan(vf.features[3:6, :18]).all()
    # Velocity also needs the previous frame: frame 6 follows a gap.
    assert np.isnan(vf.features[6, 15:18]).all()
    assert np.isfinite(vf.features[7:, :18]).all()
    assert np.isfinite(vf.features[:, 18:]).all()


def test_handshape_of_a_straight_and_a_curled_finger() -> None:
    hand = np.zeros((1, 21, 3))
    hand[0, :, 1] = np.arange(21) * 0.01  # every chain straight along y
    for chain in [(1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20)]:
        hand[0, list(chain), 0] = 0
    hand[0, 17:21] = [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]]  # pinky folded into a square
    f = hand_features(hand, fps=30, is_left=False)
    assert f[0, 1] == pytest.approx(1.0)  # index: straight
    assert f[0, 4] == pytest.approx(1 / 3)  # pinky: end-to-end 1, path 3


def test_palm_normals_of_mirror_hands_agree() -> None:
    _, _, right = fake_landmarks(hand_gap=False)
    mirrored = right.copy()
    mirrored[..., 0] = -mirrored[..., 0]
    n_right = hand_features(right, 30, is_left=False)[:, 6:9]
    n_left = hand_features(mirrored, 30, is_left=True)[:, 6:9]
    # Mirroring across x flips the x component only, once the left sign is applied.
    np.testing.assert_allclose(n_left[:, 1:], n_right[:, 1:], atol=1e-9)
    np.testing.assert_allclose(n_left[:, 0], -n_right[:, 0], atol=1e-9)


def test_features_from_stored_landmarks_match() -> None:
    pose, left, right = fake_landmarks()
    vf = video_features(pose, left, right, fps=25)
    np.testing.assert_allclose(features_from_landmarks(vf.landmarks, 25), vf.features, rtol=1e-5, atol=1e-5)


def test_no_pose_is_an_error() -> None:
    pose, left, right = fake_landmarks()
    pose[:] = np.nan
    with pytest.raises(NoBodyFrame, match="no pose"):
        video_features(pose, left, right, fps=25)
