"""Training throughput, measured side by side in one run on the same data.

    python benchmarks/train_speed.py [-c configs/wlasl100.yaml] [--epochs 3]

Samples/s of training epochs with
  (1) the plain PyTorch loop (`loop.train_epoch`), one thread, default
      (masked) BiLSTM, and the same loop with packed and with plain padded
      sequences;
  (3) Ray Train, 1 worker (1 CPU), the real `train_worker` adapter with
      `train.ingest=worker` (the data in the worker's memory, as in (1));
  (4) Ray Train, 2 workers (1 CPU each, DDP over gloo).
Ray Train figures are per-epoch times taken from the workers' own reports
(process start-up excluded); the wall time of the whole fit is printed too.
Goal: Ray Train (1 worker) within 10% of the plain loop.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]


def plain(cfg, splits, std, epochs: int, mode: str) -> float:  # type: ignore[no-untyped-def]
    from asl_ray.checkpoint import build_model
    from asl_ray.dataset import SignDataset, collate
    from asl_ray.loop import make_optimizer, train_epoch

    torch.set_num_threads(1)  # what one Ray Train worker with 1 CPU gets
    torch.manual_seed(0)
    model = build_model(cfg.model_copy(update={"model": cfg.model.model_copy(update={"lstm_mode": mode})}),
                        splits.vocab.num_glosses)
    opt = make_optimizer(model, cfg.train)
    times = []
    for epoch in range(epochs + 1):
        ds = SignDataset(splits.train, cfg.features, std, cfg.train.augment, seed=epoch)
        loader = DataLoader(ds, batch_size=cfg.train.batch_size, shuffle=True, collate_fn=collate)
        t0 = time.perf_counter()
        train_epoch(model, loader, opt, splits.vocab.num_glosses, cfg.train.blank_penalty, cfg.train.grad_clip)
        times.append(time.perf_counter() - t0)
    return len(splits.train) / (sum(times[1:]) / epochs)  # first epoch is warm-up


def ray_train(cfg, n_train: int, workers: int, epochs: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    import tempfile

    from asl_ray.checkpoint import load_checkpoint
    from asl_ray.trainer import build_trainer

    run_dir = tempfile.mkdtemp(prefix="asl-ray-bench-")
    c = cfg.model_copy(update={"train": cfg.train.model_copy(update={
        "num_workers": workers, "epochs": epochs + 1, "run_dir": run_dir, "name": f"bench-{workers}"})})
    t0 = time.perf_counter()
    result = build_trainer(c, f"bench-{workers}").fit()
    wall = time.perf_counter() - t0
    history = load_checkpoint(result.checkpoint.path).history
    secs = [h["train_seconds"] for h in history]
    per_epoch = sum(secs[1:]) / (len(secs) - 1)  # first epoch is warm-up
    return n_train / per_epoch, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--config", default=str(ROOT / "configs/wlasl100.yaml"))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--vocab-size", type=int, default=100)
    args = ap.parse_args()

    from asl_ray.config import load_config, resolve_paths
    from asl_ray.raylocal import init_ray
    from asl_ray.samples import fit_standardizer
    from asl_ray.trainer import load_data

    # train.ingest=worker: this benchmark measures Ray Train's own overhead
    # against the plain loop on the same in-memory data (benchmarks/scale.py
    # measures the Ray Data ingest).
    cfg = resolve_paths(load_config(args.config, [f"train.vocab_size={args.vocab_size}", "train.ingest=worker",
                                                  "tracking.enabled=false", "train.checkpoints_to_keep=1"]))
    splits = load_data(cfg)
    std = fit_standardizer(splits.train, cfg.features)
    n = len(splits.train)
    masked = plain(cfg, splits, std, args.epochs, "masked")
    packed = plain(cfg, splits, std, args.epochs, "packed")
    padded = plain(cfg, splits, std, args.epochs, "padded")
    init_ray(cfg.ray)
    one, wall1 = ray_train(cfg, n, 1, args.epochs)
    two, wall2 = ray_train(cfg, n, 2, args.epochs)
    print(f"{n} train samples, vocabulary {splits.vocab.num_glosses}, {args.epochs} timed epochs (+1 warm-up)")
    print(f"(1) plain PyTorch, masked:   {masked:7.1f} samples/s  (the default: exact, padded kernels)")
    print(f"    plain PyTorch, packed:   {packed:7.1f} samples/s  (exact, PackedSequence)")
    print(f"    plain PyTorch, padded:   {padded:7.1f} samples/s  (inexact baseline; masked/padded = "
          f"{masked / padded:.2f}, packed/padded = {packed / padded:.2f})")
    print(f"(3) Ray Train, 1 worker:     {one:7.1f} samples/s  (overhead vs (1): {1 - one / masked:+.1%}; "
          f"whole fit {wall1:.1f}s)")
    print(f"(4) Ray Train, 2 workers:    {two:7.1f} samples/s  (2 vs 1 workers: {two / one:.2f}x; "
          f"whole fit {wall2:.1f}s)")


if __name__ == "__main__":
    main()
