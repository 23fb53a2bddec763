"""Where a training step's time goes, measured side by side in one run.

    python benchmarks/gpu_step.py [-c configs/wlasl100_attention.yaml] [--batches 40] [--json FILE]

On the recipe's model and real batches of its train split (features already
extracted; augmentation off so every variant sees the same batches), one
process, no Ray. For each precision (float32; on CUDA also bf16 autocast) and
each form of the exact single-gloss scores (``decode.single_label_scores``:
the per-frame loop and the closed form):

* step ms: what ``loop.train_epoch`` does per batch (to the device, forward,
  loss, backward, clipping, optimiser step, the metric bookkeeping), the
  median over 3 passes of the mean over ``--batches`` batches, after a
  warm-up pass;
* scores ms: the scores alone on those batches' log-probabilities, as a step
  uses them: with gradient for the loss's gloss-smoothing term (forward and
  backward) and once more, detached, for the metrics;
* scores share: scores ms / step ms of the loop form (issue #13's question:
  is the loop more than 15% of a step on a GPU?), and samples/s.

On a CPU the same table has float32 rows only: the CPU side of the comparison.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device, reps: int = 3) -> float:
    """Median seconds of ``fn`` over ``reps`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _use_form(form: Callable[..., torch.Tensor]) -> None:
    """Route every caller of ``single_label_scores`` (the loss and the metrics) to ``form``."""
    import asl_ray.decode as decode
    import asl_ray.losses as losses

    decode.single_label_scores = losses.single_label_scores = form  # type: ignore[assignment]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--config", default=str(ROOT / "configs/wlasl100_attention.yaml"))
    ap.add_argument("--batches", type=int, default=40, help="batches per timed pass (the recipe's epoch: 40)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()

    from asl_ray.checkpoint import build_model
    from asl_ray.config import load_config, resolve_paths
    from asl_ray.decode import single_label_scores_closed, single_label_scores_loop
    from asl_ray.loop import Precision, make_optimizer, memory_batches, train_epoch
    from asl_ray.losses import LossTerms
    from asl_ray.samples import fit_standardizer
    from asl_ray.trainer import load_data

    cfg = resolve_paths(load_config(args.config, ["train.ingest=worker", "tracking.enabled=false", *args.set]))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    splits = load_data(cfg)
    std = fit_standardizer(splits.train, cfg.features)
    bs = args.batch_size or cfg.train.batch_size
    source = memory_batches(splits.train, cfg.features, std, batch_size=bs, seed=0)
    batches = [b for _, b in zip(range(args.batches), source(0, splits.vocab.num_glosses), strict=False)]
    frames = [int(b["lengths"].max()) for b in batches]
    num_classes = splits.vocab.num_glosses
    terms = LossTerms.of(cfg.train)
    precisions = {"fp32": Precision()}
    if device.type == "cuda":
        precisions["bf16"] = Precision(torch.bfloat16)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{name}: {len(batches)} batches of {bs} (longest {min(frames)}-{max(frames)} frames), "
          f"{num_classes} glosses, torch {torch.__version__}", flush=True)

    rows = []
    for pname, precision in precisions.items():
        for fname, form in (("loop", single_label_scores_loop), ("closed", single_label_scores_closed)):
            _use_form(form)
            torch.manual_seed(0)
            model = build_model(cfg, num_classes).to(device)
            opt = make_optimizer(model, cfg.train)

            def epoch(model: torch.nn.Module = model, opt: torch.optim.Optimizer = opt,
                      precision: Precision = precision) -> None:
                train_epoch(model, batches, opt, num_classes, grad_clip=cfg.train.grad_clip, device=device,
                            precision=precision, terms=terms)

            step = _timed(epoch, device) / len(batches)
            with torch.no_grad(), torch.autocast(device.type, dtype=precision.dtype,
                                                 enabled=precision.dtype is not None):
                model.eval()
                outs = [(model(b["x"].to(device), b["lengths"].to(device)).float(),
                         model.output_lengths(b["lengths"]).to(device)) for b in batches]

            def scores(outs: list[tuple[torch.Tensor, torch.Tensor]] = outs,
                       form: Callable[..., torch.Tensor] = form) -> None:
                for lp, lengths in outs:
                    lp = lp.detach().requires_grad_(True)
                    (-torch.log_softmax(form(lp, lengths, grad=True), 1).mean()).backward()
                    form(lp, lengths)

            score = _timed(scores, device) / len(batches)
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
            rows.append({"precision": pname, "scores": fname, "step_ms": step * 1e3, "scores_ms": score * 1e3,
                         "share": score / step, "samples_per_s": bs / step, "peak_gb": peak})
            r = rows[-1]
            print(f"{pname:>4} | {fname:>6} | step {r['step_ms']:7.2f} ms | scores {r['scores_ms']:6.2f} ms "
                  f"({r['share']:5.1%}) | {r['samples_per_s']:7.0f} samples/s", flush=True)
    print("\nprecision | scores | step ms | scores ms | scores share of the step | samples/s | peak GB")
    for r in rows:
        print(f"{r['precision']} | {r['scores']} | {r['step_ms']:.2f} | {r['scores_ms']:.2f} | {r['share']:.1%} | "
              f"{r['samples_per_s']:.0f} | {r['peak_gb']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "batch_size": bs, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
