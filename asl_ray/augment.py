"""Training-time augmentation of normalised landmarks (T, 75, 3), or (T, 115, 3)
with the lips. Plain numpy.

Each step is switchable in ``train.augment``. Spatial steps act on the
landmarks in the body frame (shoulder midpoint at the origin, shoulder width
1), before the features are recomputed from them:

* temporal: speed change (resample to ``T / s`` frames, s in the range) and
  random frame drop (at least half the frames are kept);
* spatial: a small rotation about each axis, a scale change and a shear;
* each hand on its own (``hand_rotate_deg``, ``hand_scale``, ``hand_shift``):
  turned and resized about its wrist and moved, the same for the whole
  clip, so the model sees other signers' hand sizes, hand angles and how
  near they place a sign to the body, none of which the whole-body steps
  change (the body frame already removes the body's own pose and size);
* Gaussian noise on every coordinate;
* mirror: x -> -x with the signer's left and right swapped (hands, pose and
  lip points), so a right-handed sign becomes its left-handed form;
* landmark dropout: a hand hidden over a span of frames (``hand_drop``), or
  everything hidden over a shorter span (``time_mask``). Hidden means NaN,
  exactly what MediaPipe gives for a part it did not find (a hand is missing
  in a third of WLASL100's frames), so the model learns to read a sign
  from what is left instead of from one cue, as the Kaggle ISLR winners'
  part and span dropout does.
"""

from __future__ import annotations

import numpy as np

from asl_ray.config import AugmentConfig
from asl_ray.inputs import LEFT, RIGHT

# MediaPipe pose left/right pairs (the signer's left first).
_POSE_PAIRS = [(1, 4), (2, 5), (3, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16), (17, 18),
               (19, 20), (21, 22), (23, 24), (25, 26), (27, 28), (29, 30), (31, 32)]
MIRROR_ORDER = np.arange(75)
for _a, _b in _POSE_PAIRS:
    MIRROR_ORDER[_a], MIRROR_ORDER[_b] = _b, _a
MIRROR_ORDER[33:54], MIRROR_ORDER[54:75] = np.arange(54, 75), np.arange(33, 54)
# Face Mesh lip points that are each other's mirror image (landmarks.LIPS
# order; 0, 17, 13 and 14 lie on the midline), checked on real faces in the tests.
_LIP_PAIRS = [(61, 291), (185, 409), (40, 270), (39, 269), (37, 267), (146, 375), (91, 321), (181, 405),
              (84, 314), (78, 308), (191, 415), (80, 310), (81, 311), (82, 312), (95, 324), (88, 318),
              (178, 402), (87, 317)]


def _lips_mirror_order() -> np.ndarray:
    from asl_ray.landmarks import LIPS

    at = {face: 75 + i for i, face in enumerate(LIPS)}
    order = np.concatenate([MIRROR_ORDER, np.arange(75, 75 + len(LIPS))])
    for a, b in _LIP_PAIRS:
        order[at[a]], order[at[b]] = at[b], at[a]
    return order


MIRROR_ORDER_LIPS = _lips_mirror_order()


def mirror(landmarks: np.ndarray) -> np.ndarray:
    order = MIRROR_ORDER if landmarks.shape[1] == len(MIRROR_ORDER) else MIRROR_ORDER_LIPS
    out = landmarks[:, order].copy()
    out[..., 0] = -out[..., 0]
    return out


def dominant_hand_right(landmarks: np.ndarray) -> np.ndarray:
    """``landmarks`` mirrored when the signer's left hand is found on more
    frames than the right (a left-handed signer, or a one-handed sign made with
    the left hand: 22% of WLASL100's train videos), else ``landmarks`` itself,
    so every sign is read in its right-handed form (``features.dominant_hand``).
    MediaPipe's hand detection, not motion, picks the side: a hand held still
    in view counts. On WLASL100, in place of random mirroring, it costs 3.6
    val top-1 (README, row 23)."""
    # The wrists, NaN where the hand was not found.
    left = np.count_nonzero(~np.isnan(landmarks[:, LEFT.start, 0]))
    right = np.count_nonzero(~np.isnan(landmarks[:, RIGHT.start, 0]))
    return mirror(landmarks) if left > right else landmarks


def change_speed(landmarks: np.ndarray, factor: float) -> np.ndarray:
    """The sequence played ``factor`` times as fast: T / factor frames (nearest frame)."""
    t = landmarks.shape[0]
    if t <= 2 or factor == 1.0:
        return landmarks
    n = max(2, int(round(t / factor)))
    return landmarks[np.clip(np.round(np.linspace(0, t - 1, n)).astype(int), 0, t - 1)]


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    rot = np.eye(3)
    for axis in range(3):
        a = np.deg2rad(rng.uniform(-max_deg, max_deg))
        c, s = np.cos(a), np.sin(a)
        i, j = [k for k in range(3) if k != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        rot = r @ rot
    return rot


# The pose's own points of each hand (wrist, pinky, index, thumb), which move
# with that hand: left (signer's) first, as LEFT / RIGHT.
POSE_HAND_POINTS = ((15, 17, 19, 21), (16, 18, 20, 22))


def move_hands(lm: np.ndarray, rotate_deg: float, scale: float, shift: float,
               rng: np.random.Generator) -> np.ndarray:
    """Each hand turned by up to ``rotate_deg`` about each axis and resized by
    up to ``scale`` about its wrist, then moved by up to ``shift`` along each
    axis; one draw per hand for the whole clip. The pose's points of that hand
    move with it, about the hand's wrist (the pose's wrist in a frame where the
    hand was not found); the rest of the body stays."""
    out = lm.copy()
    for part, pose_pts in ((LEFT, POSE_HAND_POINTS[0]), (RIGHT, POSE_HAND_POINTS[1])):
        m = _rotation(rng, rotate_deg) if rotate_deg else np.eye(3)
        if scale:
            m = m * rng.uniform(1 - scale, 1 + scale)
        move = rng.uniform(-shift, shift, 3) if shift else np.zeros(3)
        idx = np.r_[np.arange(part.start, part.stop), pose_pts]
        centre = lm[:, part.start]  # (T, 3): the hand's wrist
        centre = np.where(np.isfinite(centre), centre, lm[:, pose_pts[0]])
        pts = lm[:, idx] - centre[:, None]
        out[:, idx] = pts @ m.T.astype(np.float32) + centre[:, None] + move.astype(np.float32)
    return out


def augment(landmarks: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    lm = np.asarray(landmarks, np.float32)
    if not cfg.enabled:
        return lm
    if cfg.speed is not None:
        lm = change_speed(lm, rng.uniform(*cfg.speed))
    if cfg.frame_drop > 0 and lm.shape[0] > 4:
        keep = np.asarray(rng.random(lm.shape[0]) >= cfg.frame_drop)
        if int(keep.sum()) >= lm.shape[0] // 2:
            lm = lm[keep]
    if cfg.hand_rotate_deg or cfg.hand_scale or cfg.hand_shift:
        lm = move_hands(lm, cfg.hand_rotate_deg, cfg.hand_scale, cfg.hand_shift, rng)
    m = _rotation(rng, cfg.rotate_deg) if cfg.rotate_deg else np.eye(3)
    if cfg.scale:
        m = m * rng.uniform(1 - cfg.scale, 1 + cfg.scale)
    if cfg.shear:
        sh = np.eye(3)
        sh[0, 1], sh[1, 0] = rng.uniform(-cfg.shear, cfg.shear, 2)
        m = m @ sh
    lm = (lm @ m.T.astype(np.float32)).astype(np.float32)
    if cfg.noise:
        lm = lm + rng.normal(0, cfg.noise, lm.shape).astype(np.float32)
    if cfg.mirror and rng.random() < cfg.mirror:
        lm = mirror(lm)
    if cfg.hand_drop or cfg.time_mask:
        lm = drop_landmarks(lm, cfg.hand_drop, cfg.time_mask, rng)
    return lm


def _span(rng: np.random.Generator, t: int, low: float, high: float) -> slice:
    n = max(1, int(round(t * rng.uniform(low, high))))
    start = int(rng.integers(0, t - n + 1))
    return slice(start, start + n)


def drop_landmarks(lm: np.ndarray, hand_drop: float, time_mask: float, rng: np.random.Generator) -> np.ndarray:
    """Hide (NaN) each hand over a span of 20-60% of the frames with probability
    ``hand_drop``, and all landmarks over a span of up to 20% with probability
    ``time_mask``. Never hides a whole clip: a span leaves frames out."""
    t = lm.shape[0]
    if t < 4:
        return lm
    lm = lm.copy()
    for hand in (slice(33, 54), slice(54, 75)):
        if hand_drop and rng.random() < hand_drop:
            lm[_span(rng, t, 0.2, 0.6), hand] = np.nan
    if time_mask and rng.random() < time_mask:
        lm[_span(rng, t, 0.05, 0.2)] = np.nan
    return lm
