"""Val top-1 by how MediaPipe saw the hands, for groups of runs.

    python scripts/missing_hands.py recipe-bones=runs/abl15/recipe-bones-s0,runs/abl15/recipe-bones-s1 \\
                                    recipe-parts=runs/abl15/recipe-parts-s0,runs/abl15/recipe-parts-s1
    python scripts/missing_hands.py --by side recipe-parts=runs/abl15/recipe-parts-s0

Each argument is NAME=RUN[,RUN...] (run folders or checkpoints, each scored
at its best epoch). Videos of the split (duplicates left out, as evaluate
leaves them out) are put in buckets, from the stored landmarks as extracted
(before any features.dominant_hand mirroring), and per group the top-1 of
each bucket is the mean over its runs. The buckets are fixed, not chosen on
the results:

* ``--by missing`` (the default): the share of a video's frames in which at
  least one hand was not found (most signs are one-handed, so the median is
  high): under 50%, 50-80%, 80% and more;
* ``--by side``: whether the left hand is found on more frames than the
  right (the videos features.dominant_hand mirrors) or not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asl_ray.augment import dominant_hand_right  # noqa: E402
from asl_ray.checkpoint import load_checkpoint  # noqa: E402
from asl_ray.duplicates import usable_rows  # noqa: E402
from asl_ray.evaluation import gloss_posteriors  # noqa: E402
from asl_ray.extract import read_features  # noqa: E402
from asl_ray.inputs import LEFT, RIGHT  # noqa: E402
from asl_ray.samples import split_samples  # noqa: E402

# (low, high, label) of the value each --by computes per video.
BUCKETS = {
    "missing": ((0.0, 0.5, "under 50%"), (0.5, 0.8, "50-80%"), (0.8, 1.01, "80% and more")),
    "side": ((0.0, 0.5, "right hand more, or as often"), (0.5, 1.5, "left hand more")),
}


def missing_share(landmarks: np.ndarray) -> float:
    """Share of frames in which the left or the right hand is missing."""
    found = [np.isfinite(landmarks[:, part]).all(axis=(1, 2)) for part in (LEFT, RIGHT)]
    return float(np.mean(~(found[0] & found[1])))


def left_handed(landmarks: np.ndarray) -> float:
    """1 when the left hand is found on more frames than the right, else 0."""
    return float(dominant_hand_right(landmarks) is not landmarks)


VALUE = {"missing": missing_share, "side": left_handed}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("groups", nargs="+", help="NAME=RUN[,RUN...]")
    p.add_argument("--split", default="val")
    p.add_argument("--by", choices=sorted(BUCKETS), default="missing", help="what puts videos in buckets")
    args = p.parse_args()
    groups = []
    for g in args.groups:
        name, _, runs = g.partition("=")
        if not runs:
            p.error(f"{g!r}: expected NAME=RUN[,RUN...]")
        groups.append((name, runs.split(",")))
    rows = []
    shares: np.ndarray | None = None
    for name, runs in groups:
        correct = []
        for run in runs:
            ck = load_checkpoint(run)
            table, _ = usable_rows(read_features(ck.cfg.extract.output_dir), ck.cfg.data.duplicates)
            samples = split_samples(table, args.split, ck.vocab, ck.cfg.features)
            ids = [s.video_id for s in samples]
            as_extracted = split_samples(table, args.split, ck.vocab,
                                         ck.cfg.features.model_copy(update={"dominant_hand": False}))
            these = np.array([VALUE[args.by](s.landmarks) for s in as_extracted])
            if shares is None:
                shares, first_ids = these, ids
            elif ids != first_ids:
                raise SystemExit(f"{run}: scores other {args.split} videos than the first run")
            probs = gloss_posteriors(ck, samples)
            correct.append(probs.argmax(1) + 1 == np.array([s.label for s in samples]))
        rows.append((name, len(runs), np.mean(correct, axis=0)))
    assert shares is not None
    buckets = BUCKETS[args.by]
    if args.by == "missing":
        print(f"{args.split}: {len(shares)} videos; median share of frames with a hand missing "
              f"{100 * np.median(shares):.0f}%")
    else:
        print(f"{args.split}: {len(shares)} videos; left hand found more often in {int(shares.sum())}")
    print("| runs | " + " | ".join(f"{label} ({int(((shares >= lo) & (shares < hi)).sum())} videos)"
                                   for lo, hi, label in buckets) + " | all |")
    print("| --- " * (len(buckets) + 2) + "|")
    for name, n, acc in rows:
        cells = [f"{100 * acc[(shares >= lo) & (shares < hi)].mean():.1f}" for lo, hi, _ in buckets]
        print(f"| {name} (mean of {n}) | " + " | ".join(cells) + f" | {100 * acc.mean():.1f} |")


if __name__ == "__main__":
    main()
