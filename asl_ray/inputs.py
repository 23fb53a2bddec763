"""Per-frame model inputs from stored landmarks. Plain numpy.

Training samples keep the normalised landmarks (T, 75, 3; T, 115, 3 with the
40 lip points after the hands when the ``lips`` block is used) and build their
inputs on the fly, so augmentation can move the landmarks first and the
phonological features are then recomputed by the same code as extraction.
NaN (a hand not found) becomes 0 in the inputs; the ``masks`` block tells the
model which zeros mean "missing".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from asl_ray.features import DEFAULT_FPS, NUM_FEATURES, features_from_landmarks

POSE_UPPER = (0, 11, 12, 13, 14, 15, 16, 23, 24)  # nose, shoulders, elbows, wrists, hips
LEFT = slice(33, 54)
RIGHT = slice(54, 75)
LIPS = slice(75, 115)
# MediaPipe hand topology: the parent joint of joints 1..20 (0 is the wrist).
HAND_PARENTS = np.array([0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19])
BLOCK_SIZES = {"phono": NUM_FEATURES, "masks": 3, "hands": 126, "pose": 27, "velocity": 3 * (2 + len(POSE_UPPER)),
               "bones": 2 * 20 * 3, "palm": 2 * 20 * 3, "lips": 40 * 3 + 1}


def input_size(kinds: Sequence[str]) -> int:
    return sum(BLOCK_SIZES[k] for k in kinds)


# Which body part each column of a block describes, in the block's order:
# (part, count) runs. Sizes are checked against BLOCK_SIZES (tested).
PARTS = ("left", "right", "body", "face")
_BLOCK_PARTS: dict[str, tuple[tuple[str, int], ...]] = {
    "phono": (("left", NUM_FEATURES // 2), ("right", NUM_FEATURES // 2)),
    "masks": (("body", 1), ("left", 1), ("right", 1)),
    "hands": (("left", 63), ("right", 63)),
    "pose": (("body", 3 * len(POSE_UPPER)),),
    "velocity": (("left", 3), ("right", 3), ("body", 3 * len(POSE_UPPER))),
    "bones": (("left", 60), ("right", 60)),
    "palm": (("left", 60), ("right", 60)),
    "lips": (("face", 121),),
}


def part_columns(kinds: Sequence[str]) -> dict[str, list[int]]:
    """Column indices of the inputs built from ``kinds`` that describe each
    body part (left hand, right hand, body, face), in :data:`PARTS` order; parts
    with no column are left out. Every column belongs to exactly one part."""
    cols: dict[str, list[int]] = {p: [] for p in PARTS}
    at = 0
    for kind in kinds:
        for part, n in _BLOCK_PARTS[kind]:
            cols[part].extend(range(at, at + n))
            at += n
    return {p: c for p, c in cols.items() if c}


def fill_hand_gaps(landmarks: np.ndarray, max_gap: int) -> np.ndarray:
    """``landmarks`` (T, ≥75, 3) with each hand's runs of at most ``max_gap``
    frames not found, between two frames where it was, filled by linear
    interpolation of its 21 points (a copy; ``landmarks`` itself when nothing is
    filled). A hand missing at the start or the end stays missing.

    MediaPipe loses a moving hand for a frame or two (motion blur) far more
    often than for longer: of WLASL100's interior gaps in hand tracking, 1,510
    of 2,097 are one frame and 2,002 at most 6 (measured 2026-12-08). The
    model reads such a frame as "no hand here", in the middle of a sign."""
    out = landmarks
    t = np.arange(landmarks.shape[0])
    for part in (LEFT, RIGHT):
        found = np.isfinite(landmarks[:, part]).all(axis=(1, 2))
        if found.all() or found.sum() < 2:
            continue
        prev = np.maximum.accumulate(np.where(found, t, -1))
        nxt = np.minimum.accumulate(np.where(found, t, t.size)[::-1])[::-1]
        fill = ~found & (prev >= 0) & (nxt < t.size) & (nxt - prev - 1 <= max_gap)
        if not fill.any():
            continue
        if out is landmarks:
            out = landmarks.copy()
        a, b = prev[fill], nxt[fill]
        w = ((t[fill] - a) / (b - a)).astype(landmarks.dtype)[:, None, None]
        out[fill, part] = (1 - w) * landmarks[a, part] + w * landmarks[b, part]
    return out


def bone_directions(hand: np.ndarray) -> np.ndarray:
    """(T, 20, 3) unit direction of each bone of hands (T, 21, 3), parent to child."""
    vec = hand[:, 1:] - hand[:, HAND_PARENTS]
    return vec / np.maximum(np.linalg.norm(vec, axis=-1, keepdims=True), 1e-6)


def palm_frame_bones(hand: np.ndarray, is_left: bool) -> np.ndarray:
    """(T, 20, 3) the bone directions of hands (T, 21, 3) in each frame's own
    palm frame: y from the wrist to the middle finger's base, x across the
    knuckles from the little finger's base to the index's (made orthogonal to
    y), z = x × y, out of the palm.

    This is handshape without hand orientation: turning a hand about its wrist
    changes every body-frame bone direction (the ``bones`` block) and none of
    these, so a handshape seen at one angle in training is the same input at
    another; the orientation itself stays in ``phono`` (palm normal, pointing
    direction) and ``bones``. Hand-model-aware pose models (SignBERT+'s MANO
    joint rotations, Siformer's kinematic hand rectification) separate the two
    the same way. A left hand's z is negated, so a left hand and its mirror
    image (a right hand) read alike, as their palm normals do in ``phono``."""
    h = np.asarray(hand, np.float32)
    y = h[:, 9] - h[:, 0]
    y = y / np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), 1e-6)
    x = h[:, 5] - h[:, 17]
    x = x - np.sum(x * y, axis=-1, keepdims=True) * y
    x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)
    z = np.cross(x, y)
    if is_left:
        z = -z
    axes = np.stack([x, y, z], axis=1)  # (T, 3, 3), rows x, y, z
    return np.einsum("tbk,tjk->tbj", bone_directions(h), axes)


def build_inputs(landmarks: np.ndarray, fps: float | None | np.ndarray, kinds: Sequence[str],
                 first: np.ndarray | None = None) -> np.ndarray:
    """(T, F) float32 inputs from normalised landmarks (T, 75, 3). For several
    sequences at once, ``fps`` per frame and ``first`` (bool per frame) marking
    where each begins: use :func:`build_inputs_many`."""
    lm = np.asarray(landmarks, np.float32)
    t = lm.shape[0]
    rate = fps if isinstance(fps, np.ndarray) else (fps or DEFAULT_FPS)
    blocks: list[np.ndarray] = []
    for kind in kinds:
        if kind == "phono":
            blocks.append(features_from_landmarks(lm, rate, first))
        elif kind == "masks":
            found = [np.isfinite(lm[:, part]).all(axis=(1, 2)) for part in (slice(0, 33), LEFT, RIGHT)]
            blocks.append(np.stack(found, axis=1).astype(np.float32))
        elif kind == "hands":
            rel = [lm[:, part] - lm[:, part][:, :1] for part in (LEFT, RIGHT)]
            blocks.append(np.concatenate(rel, axis=1).reshape(t, -1))
        elif kind == "bones":
            # Unit direction of each finger bone: the hand's articulation, free
            # of its size and of how far it is from the camera.
            bones = [bone_directions(lm[:, part]) for part in (LEFT, RIGHT)]
            blocks.append(np.concatenate(bones, axis=1).reshape(t, -1))
        elif kind == "palm":
            palm = [palm_frame_bones(lm[:, part], is_left=part is LEFT) for part in (LEFT, RIGHT)]
            blocks.append(np.concatenate(palm, axis=1).reshape(t, -1))
        elif kind == "lips":
            if lm.shape[1] < LIPS.stop:
                raise ValueError("the lips input block needs landmarks with the lips (T, 115, 3)")
            # The mouth's shape, free of where the head is (the pose block has
            # the nose): each point relative to the lips' centre.
            lips = lm[:, LIPS]
            blocks.append(np.concatenate([(lips - lips.mean(axis=1, keepdims=True)).reshape(t, -1),
                                          np.asarray(np.isfinite(lips).all(axis=(1, 2)), np.float32).reshape(t, 1)],
                                         axis=1))
        elif kind == "pose":
            blocks.append(lm[:, POSE_UPPER].reshape(t, -1))
        elif kind == "velocity":
            pts = np.concatenate([lm[:, [33]], lm[:, [54]], lm[:, POSE_UPPER]], axis=1).reshape(t, -1)
            vel = np.zeros_like(pts)
            if isinstance(rate, np.ndarray):
                vel[1:] = (pts[1:] - pts[:-1]) * rate[1:, None].astype(np.float32) / DEFAULT_FPS
                if first is not None:
                    vel[first] = 0.0  # no motion across two sequences
            else:
                vel[1:] = (pts[1:] - pts[:-1]) * rate / DEFAULT_FPS
            blocks.append(vel)
        else:
            raise ValueError(f"unknown input block {kind!r}")
    x = np.concatenate(blocks, axis=1)
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def build_inputs_many(clips: Sequence[tuple[np.ndarray, float | None]], kinds: Sequence[str]) -> list[np.ndarray]:
    """:func:`build_inputs` of each (landmarks, fps) clip, computed in one pass
    over all their frames: the same numbers (tested), at a fraction of the cost
    on short clips, where numpy's per-call overhead dominates (1.35 ms a
    40-frame clip one by one)."""
    if not clips:
        return []
    lengths = np.array([c[0].shape[0] for c in clips])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    first = np.zeros(int(lengths.sum()), bool)
    first[starts[lengths > 0]] = True
    rate = np.repeat([float(f or DEFAULT_FPS) for _, f in clips], lengths)
    x = build_inputs(np.concatenate([np.asarray(c[0], np.float32) for c in clips]), rate, kinds, first)
    return np.split(x, np.cumsum(lengths)[:-1])


def resample(landmarks: np.ndarray, fps: float | None, max_frames: int) -> tuple[np.ndarray, float]:
    """Uniformly subsample a sequence longer than ``max_frames``; the frame rate
    of what is returned. Velocities are per second: a clip subsampled to half its
    frames has half the frame rate, else its motion would look twice as fast."""
    fps = float(fps or DEFAULT_FPS)
    t = landmarks.shape[0]
    if t <= max_frames:
        return landmarks, fps
    idx = np.round(np.linspace(0, t - 1, max_frames)).astype(int)
    return landmarks[idx], fps * (max_frames - 1) / (t - 1)


@dataclass
class Standardizer:
    """Per-input mean/std from the train split; saved with every checkpoint."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, arrays: Sequence[np.ndarray]) -> Standardizer:
        sums = StandardizerSums()
        for x in arrays:
            sums.add(x)
        return sums.standardizer()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def save(self, path: str) -> None:
        np.savez(path, mean=self.mean, std=self.std)

    @classmethod
    def load(cls, path: str) -> Standardizer:
        with np.load(path) as z:
            return cls(z["mean"], z["std"])


@dataclass
class StandardizerSums:
    """Streaming form of the standardiser's statistics: frame count, sum and
    sum of squares per input, in float64. Partial sums of any split of the data
    add up (``merge``), so workers can each sum a part and the driver combines."""

    count: int = 0
    total: np.ndarray | None = None
    squares: np.ndarray | None = None

    def add(self, x: np.ndarray) -> None:
        x64 = np.asarray(x, np.float64)
        s, q = x64.sum(0), np.square(x64).sum(0)
        self.merge(StandardizerSums(x64.shape[0], s, q))

    def merge(self, other: StandardizerSums) -> None:
        if other.total is None or other.squares is None:
            return
        if self.total is None or self.squares is None:
            self.total, self.squares = other.total.copy(), other.squares.copy()
        else:
            self.total = self.total + other.total
            self.squares = self.squares + other.squares
        self.count += other.count

    def standardizer(self) -> Standardizer:
        if not self.count or self.total is None or self.squares is None:
            raise ValueError("no frames to fit the standardiser on")
        mean = self.total / self.count
        var = np.maximum(self.squares / self.count - mean**2, 0.0)
        return Standardizer(mean.astype(np.float32), np.maximum(np.sqrt(var), 1e-3).astype(np.float32))
