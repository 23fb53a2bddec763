"""The tables of a scripts/device_check.sh run, from the files it left in its $OUT.

    python scripts/device_report.py FOLDER

Reads main.log, gpu.csv (GPU utilisation and memory every 0.5 s),
step.json (benchmarks/gpu_step.py), scale.log (benchmarks/scale.py),
histories.json (every run's epochs) and logs.tgz (the runs' own output).
An epoch's window on the wall clock ends at its ``epoch_end_time`` and
starts where the one before ended (the first at its first training step);
the GPU's busy share of a run is the mean utilisation of the samples inside
its timed epochs (all but the first, which holds start-up and compilation).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import tarfile
from pathlib import Path
from typing import Any


def _samples(folder: Path) -> list[tuple[float, float, float]]:
    path = folder / "gpu.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return [(float(r["time"]), float(r["util_pct"]), float(r["mem_mib"])) for r in csv.DictReader(f)]


def _window(samples: list[tuple[float, float, float]], start: float, end: float) -> tuple[float, float, int]:
    """Mean utilisation %, peak memory MiB and the number of samples in [start, end]."""
    inside = [s for s in samples if start <= s[0] <= end]
    if not inside:
        return float("nan"), float("nan"), 0
    return statistics.mean(s[1] for s in inside), max(s[2] for s in inside), len(inside)


def _train_counts(folder: Path) -> dict[str, int]:
    """Train samples of each run, from its own log's data line."""
    counts: dict[str, int] = {}
    path = folder / "logs.tgz"
    if not path.is_file():
        return counts
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            f = tar.extractfile(member) if member.isfile() else None
            if f is None:
                continue
            m = re.search(r"train (\d+), val (\d+) samples", f.read().decode(errors="replace"))
            if m:
                counts[Path(member.name).stem] = int(m.group(1))
    return counts


def recipe_rows(histories: dict[str, list[dict[str, Any]]], samples: list[tuple[float, float, float]],
                counts: dict[str, int], prefix: str) -> list[str]:
    rows = []
    for name in sorted(k for k in histories if k.startswith(prefix)):
        h = histories[name]
        n = counts.get(name, float("nan"))  # unknown without the run's own log
        ends = [e["epoch_end_time"] for e in h]
        timed = h[1:] or h
        epoch_s = statistics.mean(b - a for a, b in zip(ends, ends[1:], strict=False)) if len(h) > 1 else float("nan")
        train_s = statistics.mean(e["train_seconds"] for e in timed)
        val_s = statistics.mean(e.get("val_seconds", float("nan")) for e in timed)
        wait_s = statistics.mean(e.get("train_data_wait_seconds", float("nan")) for e in timed)
        util, mem, k = _window(samples, ends[0], ends[-1]) if len(h) > 1 else (float("nan"), float("nan"), 0)
        best = max(h, key=lambda e: e.get("val_top1", -1))
        rows.append(
            f"{name} | {len(h)} | {n / train_s:.0f} | {train_s:.2f} | {wait_s:.2f} | {val_s:.2f} | {epoch_s:.2f} | "
            f"{util:.0f}% ({k}) | {h[-1].get('gpu_peak_gb', float('nan')):.2f} | {mem / 1024:.2f} | "
            f"{best.get('val_top1', float('nan')):.1%} (epoch {int(best['epoch'])}) | "
            f"{best.get('val_top5', float('nan')):.1%} | {h[-1].get('val_top1', float('nan')):.1%} | "
            + " ".join(f"{e['train_seconds']:.1f}" for e in h))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    args = ap.parse_args()
    folder = args.folder
    samples = _samples(folder)
    histories = json.loads((folder / "histories.json").read_text()) if (folder / "histories.json").is_file() else {}
    counts = _train_counts(folder)

    log = (folder / "main.log").read_text(errors="replace") if (folder / "main.log").is_file() else ""
    print("## Set-up and tests")
    for line in log.splitlines():
        if line.startswith(("torch ", "cpus ", "== stage")) or re.search(r"\d+ (passed|failed|skipped)", line):
            print(line)

    if (folder / "step.json").is_file():
        step = json.loads((folder / "step.json").read_text())
        print(f"\n## A training step ({step['device']}, batches of {step['batch_size']})")
        print("precision | scores | step ms | scores ms | share of the step | samples/s | peak GB")
        for r in step["rows"]:
            print(f"{r['precision']} | {r['scores']} | {r['step_ms']:.2f} | {r['scores_ms']:.2f} | {r['share']:.1%} | "
                  f"{r['samples_per_s']:.0f} | {r['peak_gb']:.2f}")

    head = ("run | epochs | train samples/s | train s/epoch | of it waiting for data s | val s/epoch | "
            "epoch s (wall) | GPU busy (samples) | "
            "peak GB (torch) | peak GB (GPU) | best val top-1 | its top-5 | last val top-1 | train s by epoch")
    for title, prefix in (("The recipe alone on the GPU (epochs after the first)", "speed-"),
                          ("The recipe's accuracy (both runs at once on the GPU)", "acc-")):
        rows = recipe_rows(histories, samples, counts, prefix)
        if rows:
            print(f"\n## {title}\n{head}")
            print("\n".join(rows))

    if (folder / "scale.log").is_file():
        print("\n## Scale (benchmarks/scale.py)")
        print((folder / "scale.log").read_text(errors="replace").strip()[-3000:])
        for name, h in histories.items():
            if name.startswith("n") and h and "first_step_time" in h[0]:
                start = h[0]["first_step_time"]
                util, mem, k = _window(samples, start, start + h[0]["train_seconds"])
                print(f"{name}: GPU busy {util:.0f}% over the training epoch ({k} samples), peak GPU memory "
                      f"{mem / 1024:.2f} GB; train {h[0]['train_seconds']:.1f} s, of it waiting for data "
                      f"{h[0].get('train_data_wait_seconds', float('nan')):.1f} s; "
                      f"val {h[0].get('val_seconds', float('nan')):.1f} s")


if __name__ == "__main__":
    main()
