"""The README's quick-start commands, run as a newcomer would: in a fresh
clone, in a temporary folder, as subprocesses.

The clone has no ../shared/data beside it, so the main job takes its
no-data path (the synthetic landmark set). Epochs and trials are cut with
--set to keep the suite short; the command is otherwise the README's own.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration
FAST = ["--set", "train.epochs=8", "--set", "tune.num_samples=2", "--set", "tune.grace_period=2"]
# What Ray itself prints when it is not kept quiet: worker prefixes, its C++
# and Python loggers' lines, Ray Data's execution logs, its notices.
RAY_INTERNALS = re.compile(
    r"\(\w+ pid=\d+|core_worker\.cc|raylet|PlacementGroupCleaner|Token authentication|worker\.py:\d+|"
    r"streaming_executor\.py|logging_progress\.py|parquet_datasource\.py|Progress bars disabled|"
    r"Started a local Ray instance|RayDeprecationWarning|Registered dataset logger|python worker processes|"
    r"Configuration for experiment|View detailed results here|To visualize your results with TensorBoard")


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in section.splitlines() if line.startswith("    ") and line.strip()]


def test_readme_quick_start_in_a_fresh_clone(tmp_path: Path) -> None:
    commands = readme_commands()
    assert any(c.startswith("bash scripts/run.sh") for c in commands)
    assert any(c.startswith("bash scripts/test.sh") for c in commands)
    clone = tmp_path / "asl-ray"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": str(clone)}
    env.pop("RAY_ADDRESS", None)
    # scripts/run.sh = scripts/setup.sh (the .ci/run path already proves it on a
    # fresh clone) + `asl-ray run -c configs/quickstart.yaml`: run the latter.
    run_sh = (clone / "scripts/run.sh").read_text()
    main_job = re.search(r"^asl-ray run .*$", run_sh, re.M)
    assert main_job is not None
    cmd = shlex.split(main_job.group(0).replace('"$@"', "")) + FAST
    proc = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True, timeout=900, check=False)
    out = proc.stdout
    assert proc.returncode == 0, (out + proc.stderr)[-4000:]
    # Quiet by default: asl-ray's own lines only, no line of Ray's internals.
    noise = [line for line in (out + proc.stderr).splitlines() if RAY_INTERNALS.search(line)]
    assert not noise, noise[:10]
    assert "SYNTHETIC" in out  # it says, loudly, that it is not real data
    # ... and writes it into a folder of its own, never the config's feature dataset.
    written = re.search(r"synthetic samples to (\S+)", out)
    assert written is not None and written.group(1) == str(clone / "runs/quickstart/synthetic-features")
    assert not (clone / "runs/quickstart/features").exists()
    assert "best val accuracy: top-1" in out and "best checkpoint:" in out and "mlflow ui --backend-store-uri" in out
    ckpt = Path(re.search(r"best checkpoint: (\S+)", out).group(1))  # type: ignore[union-attr]
    assert (ckpt / "model.pt").is_file()
    # A newcomer's next steps from the README.
    for extra in (["asl-ray", "--help"], ["asl-ray", "evaluate", "--checkpoint", str(ckpt), "--split", "val"]):
        step = subprocess.run(extra, cwd=clone, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert step.returncode == 0, step.stdout + step.stderr
