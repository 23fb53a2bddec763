"""How often ``asl-ray predict`` reads both signs of a video made of two real val clips.

    python scripts/sentence_videos.py --checkpoint runs/ctc/ctc-all-s0 [--pairs 20] [--seed 0] [--merge-repeats]

Seeded pairs of val videos of the checkpoint's vocabulary (duplicates left
out as training leaves them out, two different glosses per pair) are joined
with OpenCV into one video each, then read exactly as ``asl-ray predict``
reads a video: MediaPipe extraction, then the CTC beam search over the
whole video. Prints each pair's reading and how many read exactly the two
glosses in order, how many contain both in order, and the mean WER.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asl_ray.checkpoint import load_checkpoint  # noqa: E402
from asl_ray.continuous.wer import edits  # noqa: E402
from asl_ray.duplicates import usable_rows  # noqa: E402
from asl_ray.evaluation import Prediction, predict_videos  # noqa: E402
from asl_ray.extract import read_features  # noqa: E402
from tests.videos import join_videos  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--merge-repeats", action=argparse.BooleanOptionalAction, default=None,
                   help="read a gloss read twice in a row as one (default: the checkpoint's "
                   "train.sentences.merge_repeats), as asl-ray predict --merge-repeats")
    args = p.parse_args()
    ck = load_checkpoint(args.checkpoint).with_decoding(merge_repeats=args.merge_repeats)
    table, _ = usable_rows(read_features(ck.cfg.extract.output_dir), ck.cfg.data.duplicates)
    rows = [r for r in table.select(["video_id", "gloss", "split", "path"]).to_pylist()
            if r["split"] == "val" and ck.vocab.id_of(r["gloss"]) is not None]
    rng = np.random.default_rng(args.seed)
    pairs: list[tuple[dict, dict]] = []
    while len(pairs) < args.pairs:
        a, b = (rows[i] for i in rng.choice(len(rows), 2, replace=False))
        if a["gloss"] != b["gloss"]:
            pairs.append((a, b))
    exact = ordered = errors = 0
    with tempfile.TemporaryDirectory() as tmp:
        videos = [join_videos(Path(tmp) / f"{a['video_id']}+{b['video_id']}.mp4", [Path(a["path"]), Path(b["path"])])
                  for a, b in pairs]
        for (a, b), pred in zip(pairs, predict_videos(ck, videos), strict=True):
            if not isinstance(pred, Prediction):
                print(f"failed: {pred}")
                errors += 2
                continue
            got = [g for g, _, _ in pred.sequence]
            ref = [a["gloss"], b["gloss"]]
            exact += got == ref
            it = iter(got)
            ordered += all(g in it for g in ref)  # both, in order, maybe with extra glosses between
            errors += edits(ref, got).total
            spans = ", ".join(f"{g} {s}-{e}" for g, s, e in pred.sequence) or "-"
            print(f"{a['video_id']}+{b['video_id']}: {' '.join(ref):<28} -> {spans} ({pred.frames} frames)")
    n = len(pairs)
    print(f"{n} two-sign videos: exactly both glosses in order {exact}/{n} ({exact / n:.0%}); both in order "
          f"among others {ordered}/{n} ({ordered / n:.0%}); WER {errors / (2 * n):.1%}")


if __name__ == "__main__":
    main()
