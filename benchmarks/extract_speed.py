"""Extraction speed, measured side by side in one run on the same videos.

    python benchmarks/extract_speed.py [--videos 40]

(a) a plain single-process loop with asl-ray's MediaPipe settings
    (Pose + Hands, model_complexity 1, tracking mode);
(b) asl-ray's Ray Data pipeline (`run_extract`, 2 actors, 1 CPU each);
(c) the peer `pose-format` package: `videos_to_poses --num-workers 2`
    (Holistic, model_complexity 1; pose-format is a project dependency).

Prints frames/s of each, b/c, CPU seconds per frame of (a), MediaPipe's own
time per frame, the machine limit 2 cores / (CPU s per frame of a), b as a
share of it, and peak memory per worker. Goals: b >= 1.3 c, b >= 90% of limit.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procmem import TreeMemory  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "data" / "wlasl100" / "videos"


def plain_loop(paths: list[str], queue: mp.Queue) -> None:
    from asl_ray.landmarks import LandmarkExtractor

    ext = LandmarkExtractor()
    frames, mp_s = 0, 0.0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for p in paths:
        lm = ext.extract(p)
        frames += lm.num_frames
        mp_s += lm.mediapipe_seconds
    queue.put({"frames": frames, "wall": time.perf_counter() - wall0, "cpu": time.process_time() - cpu0,
               "mediapipe": mp_s, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=40)
    args = ap.parse_args()
    paths = sorted(VIDEOS.glob("*.mp4"))[: args.videos]
    if len(paths) < args.videos:
        sys.exit(f"need {args.videos} videos in {VIDEOS}")
    work = Path(tempfile.mkdtemp(prefix="asl-ray-bench-"))
    folder = work / "videos"
    folder.mkdir()
    for p in paths:
        (folder / p.name).symlink_to(p)

    # (a) plain single-process loop, in a fresh process so its memory is its own.
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=plain_loop, args=([str(p) for p in paths], q))
    proc.start()
    a = q.get()
    proc.join()

    # (b) asl-ray Ray Data pipeline on 2 CPUs.
    from asl_ray.config import load_config
    from asl_ray.extract import run_extract
    from asl_ray.raylocal import init_ray

    cfg = load_config(ROOT / "configs/wlasl100.yaml", [
        "data.source=folder", f"data.videos_dir={folder}", f"extract.output_dir={work / 'features'}",
        "extract.num_actors=2", "extract.progress_seconds=1000"])
    init_ray(cfg.ray)
    s = run_extract(cfg, echo=lambda _: None)
    import ray

    ray.shutdown()
    b_fps = s.frames / s.seconds

    # (c) pose-format videos_to_poses with 2 workers.
    exe = shutil.which("videos_to_poses") or str(Path(sys.executable).with_name("videos_to_poses"))
    t0 = time.perf_counter()
    proc = subprocess.Popen([exe, "--num-workers", "2", "-d", str(folder)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "GLOG_minloglevel": "2"})
    watch = TreeMemory(proc.pid, interval=0.2)  # its own processes' peaks, not (a)'s via RUSAGE_CHILDREN
    _, err = proc.communicate()
    c_wall = time.perf_counter() - t0
    watch.finish()
    if proc.returncode:
        raise SystemExit(f"videos_to_poses failed: {err.decode()[-2000:]}")
    c_peaks = {p: v / 1024 for p, v in watch.peak_rss.items() if p != proc.pid}  # pool workers
    c_parent = watch.peak_rss.get(proc.pid, 0) / 1024
    poses = len(list(folder.glob("*.pose")))
    c_fps = a["frames"] / c_wall  # the same videos, every frame

    a_fps = a["frames"] / a["wall"]
    cpu_per_frame = a["cpu"] / a["frames"]
    limit = 2 / cpu_per_frame
    print(f"videos {len(paths)}, frames {a['frames']} (pipeline counted {s.frames}, pose-format wrote {poses} files)")
    print(f"(a) plain loop:          {a_fps:6.1f} frames/s  | CPU {cpu_per_frame * 1000:.1f} ms/frame, "
          f"MediaPipe {a['mediapipe'] / a['frames'] * 1000:.1f} ms/frame, peak {a['peak_mb']:.0f} MB")
    print(f"(b) asl-ray Ray Data:    {b_fps:6.1f} frames/s  | {s.ok} ok, {s.failed} failed, peak per worker "
          + ", ".join(f"{v:.0f} MB" for v in s.worker_peak_mb.values()))
    print(f"(c) pose-format 2 procs: {c_fps:6.1f} frames/s  | peak per worker "
          + ", ".join(f"{v:.0f} MB" for v in c_peaks.values()) + f" (parent {c_parent:.0f} MB)")
    print(f"b/c = {b_fps / c_fps:.2f} (goal >= 1.30); machine limit 2 cores / {cpu_per_frame * 1000:.1f} ms = "
          f"{limit:.1f} frames/s; b/limit = {b_fps / limit:.0%} (goal >= 90%)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
