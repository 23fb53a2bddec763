"""The training data path at scale, measured side by side in one run.

    python benchmarks/scale.py [--sizes 1000,10000,100000] [--workers 1,2] [--wlasl-epochs 3]

For each size N, a synthetic asl-signs-shaped feature dataset (250 glosses,
24-48 frames, 20% val; 1,000 distinct generated sequences tiled to N with new
ids, written in files of 1,000 rows) goes through the real path: `asl-ray
train` in a fresh process with its own local Ray (2 CPUs), the recipe model
(attention encoder, inputs phono+masks+hands+pose+velocity+bones), one epoch,
`train.ingest=ray_data`. Measured:

* time to first step: process start -> the first training batch (the
  worker's own clock), so it includes Ray start-up, the metadata pass, the
  streamed standardiser pass and defining the datasets (a cached val,
  ``train.cache_val_rows``, is built at the first evaluation);
* peak RSS of each Ray Train worker and its private part (RssAnon; the rest
  is mostly object-store pages shared with the node), and the node's peak
  memory: the sum of
  PSS (shared pages split between their users, so the object store counts
  once) over the run's whole process tree, sampled every 2 s (the sampler's own
  CPU time is printed: it shares the machine with the run);
* train samples/s of the epoch, val seconds of the epoch;
* where the time to the first step goes: the driver's metadata pass, Ray's
  start, the standardiser pass, defining the datasets, Ray Train starting the
  workers, a worker's own set-up, its first batch through Ray Data (each
  timed by `asl-ray train` and logged with the first epoch as
  ``startup_*_s``), and the rest (process start, imports).

Two workers on these 2 cores get 0.5 CPU each and Ray Data 0.5 CPU a task,
one worker 1 CPU and Ray Data 1 CPU.

With --wlasl-epochs, the WLASL100 recipe (configs/wlasl100_attention.yaml,
features already extracted) runs that many epochs with `train.ingest=worker`
(every worker loads the dataset, the path before Ray Data ingest) and with
`train.ingest=ray_data`; samples/s are the mean over epochs after the first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procmem import TreeMemory  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ["features.inputs=[phono,masks,hands,pose,velocity,bones]", "model.encoder=attention",
          "model.hidden_size=128", "model.num_layers=3", "train.batch_size=32", "train.lr=0.001",
          "train.label_smoothing=0.1", "train.augment.mirror=0.5", "ray.num_cpus=2", "tracking.enabled=false",
          "train.checkpoints_to_keep=1", "features.max_frames=64"]


def make_dataset(out: Path, n: int, base_rows: int = 1000) -> None:
    """N rows tiled from ``base_rows`` generated sequences (250 glosses), files of 1,000 rows."""
    import pyarrow as pa

    from asl_ray.extract import rows_to_table
    from asl_ray.storage import write_atomically
    from asl_ray.synthetic import synthetic_rows

    out.mkdir(parents=True, exist_ok=True)
    base = rows_to_table(synthetic_rows(num_glosses=250, per_gloss=max(1, base_rows // 250), seed=0))
    for start in range(0, n, 1000):
        idx = [i % base.num_rows for i in range(start, min(n, start + 1000))]
        part = base.take(idx)
        ids = [f"seq-{i:07d}" for i in range(start, start + len(idx))]
        split = ["val" if i % 5 == 0 else "train" for i in range(start, start + len(idx))]
        part = part.set_column(part.column_names.index("video_id"), "video_id", pa.array(ids))
        part = part.set_column(part.column_names.index("split"), "split", pa.array(split))
        write_atomically(part, str(out), f"part-{start:08d}.parquet")


def train_run(features: Path, runs: Path, name: str, workers: int, epochs: int, extra: list[str],
              config: str | None = None) -> dict:
    sets = [f"extract.output_dir={features}", f"train.run_dir={runs}", f"train.name={name}",
            f"train.num_workers={workers}", f"train.epochs={epochs}", *extra]
    if workers > 1:
        sets += ["train.cpus_per_worker=0.5", "train.prep_cpus=0.5"]
    cmd = [sys.executable, "-m", "asl_ray.cli", "train", "-c", config or str(ROOT / "configs/asl_signs.yaml"),
           *[a for s in sets for a in ("--set", s)]]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watch = TreeMemory(proc.pid)
    out, _ = proc.communicate()
    watch.finish()
    workers = watch.matching("RayTrainWorker")
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{out[-3000:]}")
    ckpts = sorted(p for p in (runs / name).glob("checkpoint_*") if p.is_dir())
    history = json.loads((ckpts[-1] / "history.json").read_text())
    return {"history": history, "first_step_s": history[0].get("first_step_time", float("nan")) - t0,
            "worker_rss_gb": [v / 2**20 for v in workers.values()],
            "worker_anon_gb": [watch.peak_anon[p] / 2**20 for p in workers], "node_gb": watch.tree_pss / 2**20,
            "sampler_cpu_s": watch.cpu_seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--wlasl-epochs", type=int, default=0)
    ap.add_argument("--keep", default=None, help="folder for the generated datasets (default: a temp folder)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override on top of the recipe's, for every run (repeatable)")
    args = ap.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="asl-ray-scale-"))
    rows, parts = [], []
    steps = ("metadata", "ray_start", "standardizer", "datasets", "train_workers", "worker_setup", "first_batch")
    for n in (int(v) for v in args.sizes.split(",")):
        feats = root / f"features-{n}"
        if not feats.is_dir():
            t = time.perf_counter()
            make_dataset(feats, n)
            print(f"generated {n} sequences in {time.perf_counter() - t:.0f}s -> {feats}", flush=True)
        for w in (int(v) for v in args.workers.split(",")):
            r = train_run(feats, root / "runs", f"n{n}-w{w}-{int(time.time())}", w, 1, RECIPE + args.set)
            h = r["history"][0]
            n_train = n - (n + 4) // 5  # every 5th sequence is val
            row = (f"{n:>7} | {w} | {r['first_step_s']:6.1f} | "
                   f"{max(r['worker_rss_gb'], default=float('nan')):5.2f} | "
                   f"{max(r['worker_anon_gb'], default=float('nan')):5.2f} | {r['node_gb']:5.2f} | "
                   f"{n_train / h['train_seconds']:7.1f} | {h.get('val_seconds', float('nan')):6.1f}")
            rows.append(row)
            print(row, flush=True)
            print(f"  (memory sampling took {r['sampler_cpu_s']:.0f} s of CPU; val built "
                  f"at the first evaluation in {h.get('val_build_s', float('nan')):.1f} s, which "
                  f"waited {h.get('val_wait_s', float('nan')):.1f} s for it)", flush=True)
            took = [h.get(f"startup_{k}_s", float("nan")) for k in steps]
            parts.append(f"{n:>7} | {w} | " + " | ".join(f"{v:5.1f}" for v in took)
                         + f" | {r['first_step_s'] - sum(took):5.1f} | {r['first_step_s']:6.1f}")
    print("\nsequences | workers | first step s | peak RSS per worker GB | of it private (RssAnon) GB | "
          "node peak GB (PSS) | "
          "train samples/s | val s/epoch")
    print("\n".join(rows))
    # Where the time to the first step goes: the driver's passes, Ray Train
    # starting the workers, a worker's set-up, its first batch through Ray
    # Data; the rest is process start and imports.
    print("\nsequences | workers | metadata s | Ray start s | standardiser s | datasets s | Ray Train starts "
          "the workers s | worker set-up s | first batch s | the rest s | first step s")
    print("\n".join(parts))
    if args.wlasl_epochs:
        from asl_ray.config import load_config
        from asl_ray.trainer import data_summary

        cfg = str(ROOT / "configs/wlasl100_attention.yaml")
        n_wlasl = data_summary(load_config(cfg)).kept["train"]
        for ingest in ("worker", "ray_data"):
            r = train_run(ROOT / "runs/wlasl100/features", root / "runs", f"wlasl-{ingest}-{int(time.time())}", 1,
                          args.wlasl_epochs, ["tracking.enabled=false", f"train.ingest={ingest}"], cfg)
            secs = [h["train_seconds"] for h in r["history"][1:]] or [r["history"][0]["train_seconds"]]
            print(f"WLASL100 recipe, ingest={ingest}: {n_wlasl / (sum(secs) / len(secs)):.1f} samples/s "
                  f"(epochs {len(r['history'])}, first epoch excluded), peak worker RSS "
                  f"{max(r['worker_rss_gb'], default=float('nan')):.2f} GB", flush=True)


if __name__ == "__main__":
    main()
