"""Small generated landmark fixtures (no files, no downloads)."""

from __future__ import annotations

import numpy as np

from asl_ray.features import L_HIP, L_SHOULDER, NOSE, R_HIP, R_SHOULDER


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
