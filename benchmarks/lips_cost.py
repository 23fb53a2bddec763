"""What `extract.lips` costs: the same videos extracted with and without the
Face Mesh graph, side by side in one process.

    python benchmarks/lips_cost.py [--videos 20]

Videos alternate between the two extractors (one each, built once, as an
extraction actor holds them), so a machine that slows down mid-run slows both.
Prints per extractor: frames, MediaPipe ms per frame, CPU ms per frame (the
process's user + system time over the frames), and the ratio with/without;
plus the share of frames where a face was found and the bytes a frame's lips
add to the feature dataset.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "data" / "wlasl100" / "videos"


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=20)
    args = p.parse_args()
    os.environ.setdefault("GLOG_minloglevel", "2")
    from asl_ray.features import NUM_LIPS
    from asl_ray.landmarks import LandmarkExtractor

    paths = sorted(VIDEOS.glob("*.mp4"))[: args.videos]
    if not paths:
        raise SystemExit(f"no videos in {VIDEOS}")
    extractors = {"without lips": LandmarkExtractor(), "with lips": LandmarkExtractor(lips=True)}
    stats = {name: {"frames": 0, "mp": 0.0, "cpu": 0.0, "wall": 0.0, "face": 0} for name in extractors}
    for path in paths:
        for name, ext in extractors.items():
            c0, t0 = _cpu(), time.perf_counter()
            lm = ext.extract(path)
            s = stats[name]
            s["cpu"] += _cpu() - c0
            s["wall"] += time.perf_counter() - t0
            s["frames"] += lm.num_frames
            s["mp"] += lm.mediapipe_seconds
            if lm.lips is not None:
                s["face"] += int(np.isfinite(lm.lips).all(axis=(1, 2)).sum())
    print(f"{len(paths)} videos from {VIDEOS}")
    for name, s in stats.items():
        n = s["frames"]
        print(f"{name:13s} {n} frames | MediaPipe {1000 * s['mp'] / n:.1f} ms/frame | CPU {1000 * s['cpu'] / n:.1f} "
              f"ms/frame | wall {n / s['wall']:.1f} frames/s")
    a, b = stats["without lips"], stats["with lips"]
    print(f"with/without: MediaPipe {b['mp'] / a['mp']:.2f}x, CPU {b['cpu'] / a['cpu']:.2f}x, "
          f"wall {b['wall'] / a['wall']:.2f}x")
    print(f"face found in {100 * b['face'] / b['frames']:.1f}% of frames; lips add {NUM_LIPS * 3 * 4} bytes a frame "
          f"(landmarks: {75 * 3 * 4})")


if __name__ == "__main__":
    main()
