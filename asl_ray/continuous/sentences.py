r"""Continuous signing from isolated clips: 2-5 clips of one split joined into a sentence.

WLASL has no continuous video, so sentences are made: clips of the *same
split* are joined in a random order, and the CTC target is their glosses in
that order. Each clip is handled so that the seam looks like a signer going
from one sign to the next rather than a cut:

1. **Rest frames trimmed.** Clips start and end with the hands down or out of
   view (a lead-in and lead-out at rest). Frames before the first and after
   the last frame with a hand found are cut, keeping ``keep_rest`` frames on
   each side, so a sentence is not mostly rest.
2. **One frame rate.** Each clip is resampled (nearest frame) to ``fps``
   (WLASL mixes 25 and 30 fps), so velocities mean the same across the seam.
3. **Interpolated transition.** ``gap`` frames are inserted between two
   clips, each landmark moving linearly from the last frame of one clip to
   the first of the next (a point missing on either side stays missing: a
   hand that appears is not invented mid-air).

Landmarks are in each clip's own body frame (Sim(3)-normalised), so two
signers line up without further alignment. The spans of the clips inside the
sentence are returned too: each gloss lies inside its clip's span, which the
peak loss (losses.py) uses as the window where the gloss must win.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from asl_ray.augment import change_speed

HANDS = slice(33, 75)


def trim_rest(landmarks: np.ndarray, keep_rest: int = 2) -> np.ndarray:
    """The clip from its first to its last frame with a hand found (± ``keep_rest``);
    unchanged when no frame has a hand."""
    found = np.isfinite(landmarks[:, HANDS]).all(axis=2).any(axis=1)
    hit = np.flatnonzero(found)
    if hit.size == 0:
        return landmarks
    return landmarks[max(0, hit[0] - keep_rest): hit[-1] + 1 + keep_rest]


def transition(a: np.ndarray, b: np.ndarray, gap: int) -> np.ndarray:
    """``gap`` frames moving linearly from pose ``a`` (75, 3) to pose ``b``."""
    w = (np.arange(1, gap + 1, dtype=np.float32) / (gap + 1))[:, None, None]
    return (1 - w) * a[None] + w * b[None]  # NaN on either side stays NaN


def join_clips(clips: Sequence[tuple[np.ndarray, float | None]], fps: float = 25.0, gap: int = 4,
               keep_rest: int = 2) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """One sentence (T, 75, 3) at ``fps`` from clips (landmarks, fps), and each
    clip's [start, end) frame span in it."""
    parts: list[np.ndarray] = []
    spans: list[tuple[int, int]] = []
    at = 0
    for lm, clip_fps in clips:
        lm = trim_rest(np.asarray(lm, np.float32), keep_rest)
        lm = change_speed(lm, float(clip_fps or fps) / fps)
        if parts and gap:
            parts.append(transition(parts[-1][-1], lm[0], gap))
            at += gap
        parts.append(lm)
        spans.append((at, at + len(lm)))
        at += len(lm)
    return np.concatenate(parts).astype(np.float32), spans


def group_sizes(n: int, rng: np.random.Generator, min_clips: int = 2, max_clips: int = 5) -> list[int]:
    """Random sentence lengths in [min_clips, max_clips] that use ``n`` clips
    (a remainder too short for a sentence is left out)."""
    sizes: list[int] = []
    left = n
    while left >= min_clips:
        k = int(rng.integers(min_clips, min(max_clips, left) + 1))
        if 0 < left - k < min_clips:  # do not strand a remainder that could not form a sentence
            k = left if left <= max_clips else left - min_clips
        sizes.append(k)
        left -= k
    return sizes


def sentence_plan(n_clips: int, n_sentences: int, seed: int, min_clips: int = 2, max_clips: int = 5
                  ) -> list[list[int]]:
    """A fixed, seeded set of ``n_sentences`` sentences over clip indices
    ``0..n_clips-1``: each round shuffles all clips and cuts them into
    sentences, so every clip is used before any is used again."""
    if n_clips < min_clips:
        raise ValueError(f"{n_clips} clips cannot make a sentence of {min_clips}")
    rng = np.random.default_rng(seed)
    out: list[list[int]] = []
    while len(out) < n_sentences:
        order = rng.permutation(n_clips)
        at = 0
        for k in group_sizes(n_clips, rng, min_clips, max_clips):
            out.append([int(i) for i in order[at:at + k]])
            at += k
    return out[:n_sentences]
