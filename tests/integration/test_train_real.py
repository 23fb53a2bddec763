"""Real Ray Train runs on the real asl-signs landmarks (hello vs thankyou)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from asl_ray.checkpoint import latest_checkpoint
from asl_ray.cli import main
from asl_ray.config import load_config
from asl_ray.extract import run_extract
from tests.conftest import ROOT, require_shared
from tests.videos import join_videos

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def asl_features(local_ray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_shared("asl-signs", "train.csv")
    out = tmp_path_factory.mktemp("asl_features")
    cfg = load_config(ROOT / "configs/asl_signs.yaml", [f"extract.output_dir={out}"])
    assert run_extract(cfg, echo=lambda _: None).ok == 84
    return out


def _checkpoints(run: Path) -> list[Path]:
    return [p for p in run.glob("checkpoint_*") if p.is_dir()]


def _args(features: Path, run_dir: Path, *extra: str) -> list[str]:
    sets = [f"extract.output_dir={features}", f"train.run_dir={run_dir}", *extra]
    return ["-c", str(ROOT / "configs/asl_signs.yaml"), *[a for s in sets for a in ("--set", s)]]


def test_two_class_check_tracks_everything(asl_features: Path, tmp_path: Path,
                                           capfd: pytest.CaptureFixture[str]) -> None:
    """The report's first step: hello vs thankyou, split by participant."""
    result = CliRunner().invoke(main, ["train", *_args(asl_features, tmp_path, "train.name=two-class")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "epoch 20/20" in out and "blank" in out
    assert "val top1" in out
    ckpt = Path((tmp_path / "two-class" / "best_checkpoint.txt").read_text().strip())
    history = json.loads((ckpt / "history.json").read_text())
    best = max(h["val_top1"] for h in history)
    assert best >= 0.9, f"two-class val top-1 {best:.1%}"
    assert (tmp_path / "two-class" / "training_curves.png").stat().st_size > 10_000
    assert (tmp_path / "two-class" / "confusion_matrix.png").stat().st_size > 5_000

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("asl-ray")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["model.hidden_size"] == "64" and int(run.data.params["num_parameters"]) > 1000
    assert len(client.get_metric_history(run.info.run_id, "val_blank_ratio")) == 20
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"plots", "best_checkpoint"} <= arts
    assert "vocab.json" in {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "best_checkpoint")}
    # Artifacts live under train.run_dir with the sqlite store, not in ./mlruns.
    assert list((tmp_path / "mlartifacts").rglob("training_curves.png"))

    ev = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(ckpt), "--split", "val"])
    assert ev.exit_code == 0, ev.output
    assert "top1" in ev.output and "most confused with" in ev.output
    # An ensemble of a checkpoint with itself ranks exactly as the checkpoint does;
    # test-time speeds go through the same path.
    same = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(ckpt), "--checkpoint", str(ckpt.parent)])
    assert same.exit_code == 0, same.output
    assert "ensemble of 2 checkpoint(s) x 1 speed(s)" in same.output
    assert re.findall(r"top1 (\S+)%", same.output)[:1] == re.findall(r"top1 (\S+)%", ev.output)[:1] != []
    tta = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(ckpt), "--tta-speeds", "0.9,1,1.1"])
    assert tta.exit_code == 0 and "x 3 speed(s)" in tta.output, tta.output
    bad = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(ckpt), "--tta-speeds", "fast"])
    assert bad.exit_code == 2 and "comma-separated numbers" in bad.output
    video = require_shared("wlasl100", "videos", "00623.mp4")
    capfd.readouterr()
    pred = CliRunner().invoke(main, ["predict", "--checkpoint", str(ckpt), str(video)])
    assert pred.exit_code == 0, pred.output
    assert "hello" in pred.output and "thankyou" in pred.output and "%" in pred.output
    # MediaPipe ran in this process: its native log lines went to a file, not the terminal.
    native = capfd.readouterr().err
    assert "W0000" not in native and "XNNPACK" not in native, native


def test_sentences_train_and_decode_with_word_error_rate(asl_features: Path, tmp_path: Path) -> None:
    """CTC as CTC: training batches with sentences of clips, the peak loss and the
    auxiliary head; WER of seeded val sentences every epoch (greedy and beam),
    in MLflow; ``evaluate --sentences``; ``predict`` on a video of two real clips.
    The model takes a CTC step every 4 frames (``model.subsample``), so lengths
    and spans go through the step conversion everywhere, and predict's frame
    spans must still land inside the video."""
    result = CliRunner().invoke(main, ["train", *_args(
        asl_features, tmp_path, "train.name=continuous", "train.epochs=8", "train.sentences.share=0.5",
        "train.sentences.val=8", "train.peak_weight=1.0", "train.aux_weight=0.5", "model.subsample=4")])
    assert result.exit_code == 0, result.output
    assert "epoch 8/8" in result.output and "WER greedy" in result.output and " beam " in result.output
    assert "val sentences: WER greedy" in result.output
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("asl-ray").experiment_id])
    for key in ("val_wer_greedy", "val_wer_beam", "val_greedy_acc", "val_greedy_empty", "val_greedy_extra",
                "val_top1"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 8, key
    ckpt = Path((tmp_path / "continuous" / "best_checkpoint.txt").read_text().strip())

    ev = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(ckpt), "--sentences", "12"])
    assert ev.exit_code == 0, ev.output
    assert re.search(r"greedy [\d.]+% \(read as nothing [\d.]+%, as 2\+ glosses [\d.]+%\)", ev.output)
    assert re.search(r"val sentences: 12 of 2-5 clips, \d+ glosses \| WER greedy [\d.]+%, beam [\d.]+%", ev.output)
    assert re.search(r"greedy: substitutions [\d.]+%, deletions [\d.]+%, insertions [\d.]+%; beam: ", ev.output)
    assert "greedy:" in ev.output and "beam:" in ev.output  # examples: reference, greedy and beam reading
    bad = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(ckpt), "--sentences", "-1"])
    assert bad.exit_code == 2 and "--sentences" in bad.output

    # Distillation: a student run with that model as its teacher (distill.py)
    # reads sentences through it in the Ray Train worker; a teacher with
    # another CTC step is refused on the driver, in one line.
    common = ["train.sentences.share=0.5", "train.sentences.val=8", f"train.distill_from=[{ckpt}]"]
    student = CliRunner().invoke(main, ["train", *_args(asl_features, tmp_path, "train.name=student", "train.epochs=2",
                                                        "model.subsample=4", *common)])
    assert student.exit_code == 0, student.output
    assert re.search(r"epoch 2/2 .* distill \d+\.\d{3}", student.output), student.output
    other = CliRunner().invoke(main, ["train", *_args(asl_features, tmp_path, "train.name=other", "train.epochs=2",
                                                      "model.subsample=8", *common)])
    assert other.exit_code != 0
    assert "takes a CTC step every 4 frames, this run every 8" in other.output
    assert not (tmp_path / "other").exists()

    src = require_shared("wlasl100", "videos")
    video = join_videos(tmp_path / "two_signs.mp4", [src / "00623.mp4", src / "24946.mp4"])
    pred = CliRunner().invoke(main, ["predict", "--checkpoint", str(ckpt), str(video)])
    assert pred.exit_code == 0, pred.output
    line = next(x for x in pred.output.splitlines() if "sequence:" in x)
    frames_total = int(re.search(r"\((\d+) frames", pred.output).group(1))  # type: ignore[union-attr]
    for start, end in re.findall(r"\[frames (\d+)-(\d+)\]", line):
        assert 0 <= int(start) <= int(end) < frames_total, line
    sheet = CliRunner().invoke(main, ["show", str(video), "-o", str(tmp_path / "sheet.png"), "--frames", "4",
                                      "--checkpoint", str(ckpt)])
    assert sheet.exit_code == 0, sheet.output
    assert "decoded: " in sheet.output and (tmp_path / "sheet.png").stat().st_size > 20_000


def test_killed_two_worker_run_resumes_from_last_checkpoint(local_ray, asl_features: Path, tmp_path: Path) -> None:
    """The driver killed mid-run; the same command again resumes. Each worker
    holds the data (train.ingest=worker): where to resume from, and the
    weights, optimiser and average restored, are the same code for both
    ingests, and a resume through Ray Data ingest (the standardiser taken
    from the checkpoint on the driver) is test_s3_storage.py's re-run of a
    named run. Three starts through Ray Data would cost this test ~120 CPU-s
    each more on a 2-core machine (measured 2026-11-29: 188 against 71 CPU-s
    for a small 2-epoch run). Half its batches are mixed (train.cutmix), in
    both workers, across the restart."""
    args = _args(asl_features, tmp_path, "train.name=resume", "train.num_workers=2", "train.epochs=8",
                 "train.cpus_per_worker=0.5", "train.ingest=worker", "train.ema_decay=0.9", "train.cutmix=0.5",
                 "tracking.enabled=false")
    cmd = [sys.executable, "-m", "asl_ray.cli", "train", *args]
    env = {**os.environ, "RAY_ADDRESS": local_ray.get_runtime_context().gcs_address}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    run = tmp_path / "resume"
    deadline = time.time() + 240
    while time.time() < deadline and len(_checkpoints(run)) < 2:
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(_checkpoints(run))
    assert done >= 2, "no checkpoint before the kill"
    time.sleep(3)  # the dead driver's workers are torn down by Ray

    resumed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400, check=False)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming from its latest checkpoint" in resumed.stdout
    assert "resuming after epoch" in resumed.stdout + resumed.stderr
    latest = latest_checkpoint(run)
    assert latest is not None
    history = json.loads((Path(latest) / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, 9))  # every epoch once, none lost
    # The weights' moving average went on across the restart: model.pt holds
    # it, state.pt the weights being trained and the steps averaged so far.
    state = torch.load(Path(latest) / "state.pt", weights_only=True)
    saved = torch.load(Path(latest) / "model.pt", weights_only=True)
    assert state["average_steps"] >= 8  # at least one optimiser step an epoch
    assert any(not torch.equal(saved[k], w) for k, w in state["trained_model"].items())

    # Started again once every epoch is done (as a tune trial is when its
    # driver died after the last checkpoint): the run reports its last epoch
    # instead of ending without a result, and trains nothing more.
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400, check=False)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "all 8 epochs were done before this start" in again.stdout + again.stderr
    latest = latest_checkpoint(run)
    assert latest is not None
    assert [h["epoch"] for h in json.loads((Path(latest) / "history.json").read_text())] == list(range(1, 9))
