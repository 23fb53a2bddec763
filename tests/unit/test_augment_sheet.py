"""The augmentation sheet (`asl-ray show --augment`): what is drawn, without MediaPipe."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np

from asl_ray.augment import POSE_HAND_POINTS
from asl_ray.config import AugmentConfig
from asl_ray.features import video_features
from asl_ray.show import _key_frame, augment_sheet
from tests.fixtures import fake_landmarks


def _clip(t: int = 20) -> np.ndarray:
    pose, left, right = fake_landmarks(t=t, seed=4)
    lm = video_features(pose, left, right, fps=25).landmarks
    lm[8:12, 33:54] = np.nan  # the left hand lost around the middle
    return lm


def test_the_key_frame_is_the_middlemost_with_both_hands() -> None:
    lm = _clip()
    assert _key_frame(lm) in (7, 12)  # 9.5 is the middle; frames 8-11 lack the left hand
    lm[:, 33:75] = np.nan
    assert _key_frame(lm) in (9, 10)  # no hand anywhere: the middle


def test_sheet_draws_the_frame_as_extracted_then_each_view(tmp_path: Path) -> None:
    lm = _clip()
    k = _key_frame(lm)
    off = augment_sheet(lm, tmp_path / "off.png", AugmentConfig(enabled=False), draws=3)
    assert off.shape == (4, 75, 3)
    np.testing.assert_array_equal(off, np.broadcast_to(lm[k], off.shape))

    quiet = dict(speed=None, frame_drop=0.0, rotate_deg=0.0, scale=0.0, shear=0.0, noise=0.0)
    moved = augment_sheet(lm, tmp_path / "hands.png", AugmentConfig(**quiet, hand_shift=0.2), draws=5, seed=3)
    body = np.setdiff1d(np.arange(33), np.r_[POSE_HAND_POINTS[0], POSE_HAND_POINTS[1]])
    np.testing.assert_array_equal(moved[:, body], np.broadcast_to(lm[k, body], (6, len(body), 3)))
    assert all(not np.allclose(view[54:75], lm[k, 54:75]) for view in moved[1:])
    again = augment_sheet(lm, tmp_path / "again.png", AugmentConfig(**quiet, hand_shift=0.2), draws=5, seed=3)
    np.testing.assert_array_equal(moved, again)  # seeded

    img = mpimg.imread(tmp_path / "hands.png")[..., :3]
    # The right hand is drawn in blue (#1f77b4) and the original beneath in grey.
    blue = np.all(np.abs(img - np.array([0x1F, 0x77, 0xB4]) / 255) < 0.08, axis=-1)
    grey = np.all(np.abs(img - 0xC8 / 255) < 0.03, axis=-1)
    assert blue.sum() > 100 and grey.sum() > 100
