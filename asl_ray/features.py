r"""Sim(3) normalisation and 36-D phonological features. Plain numpy, no Ray.

Inputs are landmarks of one video: pose ``P`` (T, 33, 3) and the signer's
left/right hands ``L``, ``R`` (T, 21, 3), NaN where not found.

Body frame (one per video, from the frames where the pose was found)
--------------------------------------------------------------------
With ``s_l, s_r`` the mean left/right shoulder (pose 11, 12) and ``h_l, h_r``
the mean hips (23, 24) over those frames::

    o = (s_l + s_r) / 2                      origin: shoulder midpoint
    σ = ‖s_l − s_r‖                          scale: shoulder width
    e_x = (s_l − s_r) / σ                    x along the shoulders
    u   = o − (h_l + h_r) / 2                up the torso (nose − o if hips are missing)
    e_y = (u − (u·e_x) e_x) / ‖…‖            y: u made orthogonal to x
    e_z = e_x × e_y                          z: a right-handed frame
    Q   = [e_x; e_y; e_z]                    rows are the axes
    p̂   = Q (p − o) / σ                      every landmark p

Means (not medians) so that the frame moves exactly with the data: for any
similarity ``p ↦ λ R p + t`` (R a rotation, λ > 0) the body frame becomes
``(λ R o + t, λ σ, Q Rᵀ)`` and every ``p̂`` is unchanged. Every feature below
is a function of the ``p̂`` only, so the features are Sim(3)-invariant.

Phonological features, 18 per hand (left hand first, then right)
----------------------------------------------------------------
With hand points ``q_0..q_20`` (wrist 0; finger chains thumb 1-4, index 5-8,
middle 9-12, ring 13-16, pinky 17-20) in the body frame:

* handshape (6): for each finger chain ``c_0..c_3``, its extension
  ``‖c_3 − c_0‖ / Σ_k ‖c_{k+1} − c_k‖`` (1 = straight, smaller = bent), and
  the thumb–index aperture ``‖q_4 − q_8‖ / ‖q_9 − q_0‖`` (palm-size units).
* orientation (6): palm normal ``n = ±(q_5 − q_0) × (q_17 − q_0) / ‖…‖``
  (sign flipped for the left hand so both point out of the palm) and
  pointing direction ``(q_9 − q_0) / ‖q_9 − q_0‖``.
* location (3): the wrist ``q_0`` in shoulder widths from the shoulder midpoint.
* movement (3): wrist velocity ``(q_0(t) − q_0(t−1)) · fps`` in shoulder
  widths per second (forward difference at t = 0; NaN if a neighbour is missing).

A hand that is missing in a frame gives NaN for its 18 features in that
frame; the masks say which frames had it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEATURE_VERSION = "phono36-v1"
FEATURES_PER_HAND = 18
NUM_FEATURES = 2 * FEATURES_PER_HAND
NUM_LANDMARKS = 33 + 21 + 21  # pose, left hand, right hand
NUM_LIPS = 40  # Face Mesh lip points (landmarks.LIPS), stored apart from the 75
DEFAULT_FPS = 30.0

L_SHOULDER, R_SHOULDER, L_HIP, R_HIP, NOSE = 11, 12, 23, 24, 0
FINGERS = ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))
FEATURE_NAMES = [
    f"{side}_{name}"
    for side in ("left", "right")
    for name in (
        "ext_thumb", "ext_index", "ext_middle", "ext_ring", "ext_pinky", "aperture",
        "normal_x", "normal_y", "normal_z", "point_x", "point_y", "point_z",
        "loc_x", "loc_y", "loc_z", "vel_x", "vel_y", "vel_z",
    )
]


class NoBodyFrame(ValueError):
    """The pose was never found, so there is no body to normalise against."""


@dataclass(frozen=True)
class BodyFrame:
    origin: np.ndarray  # (3,)
    scale: float
    axes: np.ndarray  # (3, 3), rows e_x, e_y, e_z

    def apply(self, points: np.ndarray) -> np.ndarray:
        """``Q (p − o) / σ`` for points of shape (..., 3)."""
        return ((points - self.origin) @ self.axes.T) / self.scale


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return v / norm


def body_frame(pose: np.ndarray) -> BodyFrame:
    """The per-video body frame of pose landmarks (T, 33, ≥3)."""
    xyz = np.asarray(pose, dtype=np.float64)[..., :3]
    seen = np.all(np.isfinite(xyz[:, [L_SHOULDER, R_SHOULDER]]), axis=(1, 2))
    if not seen.any():
        raise NoBodyFrame("no pose found in any frame")
    pts = xyz[seen]
    s_l, s_r = pts[:, L_SHOULDER].mean(0), pts[:, R_SHOULDER].mean(0)
    origin = (s_l + s_r) / 2
    scale = float(np.linalg.norm(s_l - s_r))
    if not scale > 1e-9:
        raise NoBodyFrame("shoulders coincide: no usable body scale")
    e_x = (s_l - s_r) / scale
    hips = pts[:, [L_HIP, R_HIP]]
    hips_seen = bool(np.all(np.isfinite(hips)))
    up = origin - hips.mean(axis=(0, 1)) if hips_seen else np.nanmean(pts[:, NOSE], axis=0) - origin
    e_y = up - (up @ e_x) * e_x
    if not np.linalg.norm(e_y) > 1e-9:
        raise NoBodyFrame("torso direction is parallel to the shoulders")
    e_y /= np.linalg.norm(e_y)
    e_z = np.cross(e_x, e_y)
    return BodyFrame(origin, scale, np.stack([e_x, e_y, e_z]))


def hand_features(hand: np.ndarray, fps: float | np.ndarray, is_left: bool,
                  first: np.ndarray | None = None) -> np.ndarray:
    """18 features per frame of one hand (T, 21, 3) already in the body frame.

    Several sequences can be done in one call (numpy's per-call cost is most
    of the time on short clips): frames concatenated, ``fps`` per frame and
    ``first`` marking each sequence's first frame, so no velocity crosses
    from one sequence into the next."""
    q = np.asarray(hand, dtype=np.float64)
    t = q.shape[0]
    out = np.full((t, FEATURES_PER_HAND), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        for k, chain in enumerate(FINGERS):
            c = q[:, chain]
            path = np.linalg.norm(np.diff(c, axis=1), axis=-1).sum(-1)
            out[:, k] = np.linalg.norm(c[:, -1] - c[:, 0], axis=-1) / path
        palm = np.linalg.norm(q[:, 9] - q[:, 0], axis=-1)
        out[:, 5] = np.linalg.norm(q[:, 4] - q[:, 8], axis=-1) / palm
        normal = _unit(np.cross(q[:, 5] - q[:, 0], q[:, 17] - q[:, 0]))
        out[:, 6:9] = -normal if is_left else normal
        out[:, 9:12] = _unit(q[:, 9] - q[:, 0])
        wrist = q[:, 0]
        out[:, 12:15] = wrist
        out[:, 15:18] = _wrist_velocity(wrist, fps, first)
    return out


def _wrist_velocity(wrist: np.ndarray, fps: float | np.ndarray, first: np.ndarray | None) -> np.ndarray:
    """Backward differences times the frame rate; a sequence's first frame takes
    its second frame's value (a forward difference), or 0 in a 1-frame sequence."""
    t = wrist.shape[0]
    vel = np.full((t, 3), np.nan)
    # Per frame (several sequences) or one rate for the sequence.
    rate = np.asarray(fps, np.float64)[1:, None] if isinstance(fps, np.ndarray) else float(fps or DEFAULT_FPS)
    if first is None:
        first = np.zeros(t, bool)
        first[:1] = True
    if t > 1:
        vel[1:] = np.diff(wrist, axis=0) * rate
    starts = np.flatnonzero(first)
    nxt = starts + 1
    has_next = nxt < t
    has_next[has_next] = ~first[nxt[has_next]]
    vel[starts[has_next]] = vel[nxt[has_next]]
    alone = starts[~has_next]
    vel[alone] = np.where(np.isfinite(wrist[alone]), 0.0, np.nan)
    return vel


@dataclass
class VideoFeatures:
    landmarks: np.ndarray  # (T, 75, 3) pose + left + right in the body frame
    features: np.ndarray  # (T, 36)
    pose_mask: np.ndarray  # (T,) bool
    left_mask: np.ndarray
    right_mask: np.ndarray
    lips: np.ndarray | None = None  # (T, 40, 3) in the body frame, when extracted


def video_features(pose: np.ndarray, left: np.ndarray, right: np.ndarray, fps: float,
                   lips: np.ndarray | None = None) -> VideoFeatures:
    """Normalise one video's landmarks (and lips, if given: into the same body
    frame) and compute its phonological features."""
    frame = body_frame(pose)
    pose_n = frame.apply(np.asarray(pose, np.float64)[..., :3])
    left_n = frame.apply(np.asarray(left, np.float64))
    right_n = frame.apply(np.asarray(right, np.float64))
    feats = np.concatenate(
        [hand_features(left_n, fps, is_left=True), hand_features(right_n, fps, is_left=False)], axis=1
    )
    return VideoFeatures(
        landmarks=np.concatenate([pose_n, left_n, right_n], axis=1).astype(np.float32),
        features=feats.astype(np.float32),
        pose_mask=np.all(np.isfinite(pose_n), axis=(1, 2)),
        left_mask=np.all(np.isfinite(left_n), axis=(1, 2)),
        right_mask=np.all(np.isfinite(right_n), axis=(1, 2)),
        lips=None if lips is None else frame.apply(np.asarray(lips, np.float64)).astype(np.float32),
    )


def features_from_landmarks(landmarks: np.ndarray, fps: float | np.ndarray,
                            first: np.ndarray | None = None) -> np.ndarray:
    """The 36 features of already-normalised landmarks (T, 75, 3) (several
    sequences at once: see :func:`hand_features`).

    Training-time spatial augmentation perturbs the stored landmarks and calls
    this, so augmented and stored features come from the same code.
    """
    lm = np.asarray(landmarks, np.float64)
    return np.concatenate(
        [hand_features(lm[:, 33:54], fps, True, first), hand_features(lm[:, 54:75], fps, False, first)],
        axis=1,
    ).astype(np.float32)
