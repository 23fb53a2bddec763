"""``asl-ray show``: what MediaPipe found in a video, as a PNG contact sheet;
with ``--augment``, what training's augmentation makes of it.

A few evenly spaced frames, each with the pose (upper body) and both hands
drawn over it, the signer's left hand in orange and right hand in blue, and a
note on every frame where a hand was not found, so a user can see at a glance
whether the landmarks behind their features are any good. Given the gloss
spans a model decoded (``asl-ray show --checkpoint``), the frames inside a
span are framed in red with their gloss, and the middle frame of every span
is among those drawn.

The augmentation sheet draws one frame of the clip in the body frame (the
landmarks as training reads them: shoulder midpoint at the origin, shoulder
width 1) as extracted, then as ``draws`` seeded augmented views of the whole
clip each show it, over the original in grey, on common axes: so a user sees
what their ``train.augment`` ranges do before spending a training run on them.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from asl_ray.config import AugmentConfig  # noqa: E402

HAND_EDGES = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11),
              (11, 12), (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (17, 18), (18, 19), (19, 20), (0, 17)]
POSE_EDGES = [(11, 12), (11, 13), (13, 15), (12, 14), (14, 16), (11, 23), (12, 24), (23, 24), (0, 11), (0, 12)]
UPPER_BODY = 25  # pose points 0-24: face, arms, hips; the legs are rarely in sign videos
COLOURS = {"pose": "#2ca02c", "left": "#ff7f0e", "right": "#1f77b4"}


SPAN_COLOUR = "#d62728"


def contact_sheet(video: Path, out: Path, frames: int = 8, columns: int = 4,
                  spans: list[tuple[str, int, int]] | None = None) -> tuple[Path, dict[str, float]]:
    """Draw the landmarks of ``frames`` evenly spaced frames (plus the middle of
    every decoded span, 0-based [first, last] video frames); returns the PNG and
    hand-presence rates."""
    from asl_ray.landmarks import LandmarkExtractor

    ext = LandmarkExtractor()
    try:  # closed on a bad video too, so its graph is not torn down (and heard) at exit
        lm = ext.extract(video)
        spans = [(g, max(0, a), min(b, lm.num_frames - 1)) for g, a, b in spans or []]
        even = np.linspace(0, lm.num_frames - 1, min(frames, lm.num_frames)).round().astype(int)
        picks = np.unique(np.concatenate([even, np.array([(a + b) // 2 for _, a, b in spans], int)]))
        images = {i: rgb for i, rgb in enumerate(ext.frames(video)) if i in set(picks.tolist())}
    finally:
        ext.close()
    rows = -(-len(picks) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), picks, strict=False):
        h, w = images[int(i)].shape[:2]
        ax.imshow(images[int(i)])
        _draw(ax, lm.pose[i, :UPPER_BODY, :2], POSE_EDGES, COLOURS["pose"])
        missing = []
        for side, hand in (("left", lm.left[i]), ("right", lm.right[i])):
            if np.isfinite(hand).all():
                _draw(ax, hand[:, :2], HAND_EDGES, COLOURS[side])
            else:
                missing.append(side)
        note = f"frame {i + 1}" + (f" - no {' / '.join(missing)} hand" if missing else "")
        inside = [g for g, a, b in spans if a <= i <= b]
        if inside:
            note = f"{' + '.join(inside)} | " + note
            ax.add_patch(plt.Rectangle((0, 0), w, h, fill=False, ec=SPAN_COLOUR, lw=5))  # axis("off"): no spines
        ax.set_title(note, fontsize=9, color=SPAN_COLOUR if inside else "#b00" if missing else "black")
        ax.set_xlim(0, w)  # points MediaPipe places outside the image stay out of the picture
        ax.set_ylim(h, 0)
    presence = {
        "pose": float(np.isfinite(lm.pose[..., 0]).all(1).mean()),
        "left": float(np.isfinite(lm.left[..., 0]).all(1).mean()),
        "right": float(np.isfinite(lm.right[..., 0]).all(1).mean()),
    }
    decoded = ("\ndecoded (red frames): " + ", ".join(f"{g} (frames {a + 1}-{b + 1})" for g, a, b in spans)
               if spans else "")
    fig.suptitle(f"{video.name}: {lm.num_frames} frames; pose in {presence['pose']:.0%}, signer's left hand "
                 f"(orange) in {presence['left']:.0%}, right hand (blue) in {presence['right']:.0%}{decoded}",
                 fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out, presence


def _draw(ax: plt.Axes, pts: np.ndarray, edges: list[tuple[int, int]], colour: str) -> None:
    for a, b in edges:
        if np.isfinite(pts[[a, b]]).all():
            ax.plot(pts[[a, b], 0], pts[[a, b], 1], "-", color=colour, lw=1.6)
    ok = np.isfinite(pts).all(1)
    ax.plot(pts[ok, 0], pts[ok, 1], "o", color=colour, ms=2.2)


def _key_frame(lm: np.ndarray) -> int:
    """The frame nearest the middle with both hands found (else one hand, else the middle)."""
    t = lm.shape[0]
    left = np.isfinite(lm[:, 33:54]).all(axis=(1, 2))
    right = np.isfinite(lm[:, 54:75]).all(axis=(1, 2))
    order = np.argsort(np.abs(np.arange(t) - (t - 1) / 2), kind="stable")
    for found in (left & right, left | right):
        hits = [int(i) for i in order if found[i]]
        if hits:
            return hits[0]
    return int(order[0])


def augment_sheet(landmarks: np.ndarray, out: Path, cfg: AugmentConfig, draws: int = 7, seed: int = 0,
                  columns: int = 4, title: str = "") -> np.ndarray:
    """Draw one frame of normalised ``landmarks`` (T, 75, 3) as extracted and as
    ``draws`` augmented views of the clip (seeds ``seed``, ``seed``+1, ...)
    show it; returns the frames drawn, (draws + 1, 75, 3). The frame is the
    one nearest the middle with both hands; in a view whose speed changed,
    the frame at the same point of the clip."""
    from asl_ray.augment import augment

    lm = np.asarray(landmarks, np.float32)[:, :75]
    k = _key_frame(lm)
    where = k / max(lm.shape[0] - 1, 1)
    shown = [lm[k]]
    for i in range(draws):
        view = augment(lm, cfg, np.random.default_rng(seed + i))
        shown.append(view[int(round(where * (view.shape[0] - 1)))])
    frames = np.stack(shown)
    xy = frames[..., :2][np.isfinite(frames[..., :2]).all(-1)]
    lo, hi = (xy.min(0), xy.max(0)) if len(xy) else (np.full(2, -1.5), np.full(2, 1.5))
    pad = 0.1 * float(np.max(hi - lo) + 1e-6)
    rows = -(-len(frames) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (ax, pts) in enumerate(zip(axes.ravel(), frames, strict=False)):
        if i:
            _skeleton(ax, frames[0], colour="#c8c8c8")
        _skeleton(ax, pts)
        ax.set_xlim(lo[0] - pad, hi[0] + pad)
        ax.set_ylim(lo[1] - pad, hi[1] + pad)  # y points up the torso
        ax.set_aspect("equal")
        ax.set_title("as extracted" if i == 0 else f"augmented, seed {seed + i - 1}", fontsize=9)
    fig.suptitle(title or "one frame, as training's augmentation shows it (body frame; grey: as extracted)",
                 fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return frames


def _skeleton(ax: plt.Axes, frame: np.ndarray, colour: str | None = None) -> None:
    """Pose (upper body), signer's left and right hand of one normalised frame (75, 3)."""
    _draw(ax, frame[:UPPER_BODY, :2], POSE_EDGES, colour or COLOURS["pose"])
    _draw(ax, frame[33:54, :2], HAND_EDGES, colour or COLOURS["left"])
    _draw(ax, frame[54:75, :2], HAND_EDGES, colour or COLOURS["right"])
