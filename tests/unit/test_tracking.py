"""Runs started together on one new sqlite MLflow store (three seeds at once)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]

# Each process waits for the same instant, then opens the store as a training does.
_OPEN = """
import sys, time
from asl_ray.config import load_config
from asl_ray.tracking import RunTracker
cfg = load_config("configs/quickstart.yaml", [f"train.run_dir={sys.argv[1]}"])
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
RunTracker(cfg, sys.argv[3])
"""


def test_runs_started_together_on_a_new_store_all_open_it(tmp_path: Path) -> None:
    """Without the store lock, MLflow's schema migration races and all but one
    process exit ("Online migration expected to match one row")."""
    start = time.time() + 12  # past every process's imports
    procs = [subprocess.Popen([sys.executable, "-c", _OPEN, str(tmp_path), str(start), f"run-{i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT) for i in range(4)]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n".join(o[-1500:] for o in outs)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (exp,) = [e for e in client.search_experiments() if e.name == "asl-ray"]
    assert sorted(r.info.run_name for r in client.search_runs([exp.experiment_id])) == [f"run-{i}" for i in range(4)]
