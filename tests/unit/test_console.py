"""The terminal: Ray's forwarded worker output is reduced to our marked progress lines."""

from __future__ import annotations

import os

import pytest

from asl_ray.console import MARK, relay


def test_relay_prints_our_lines_without_rays_prefix_and_drops_the_rest(capsys: pytest.CaptureFixture[str]) -> None:
    relay({"pid": 123, "actor_name": "RayTrainWorker", "is_err": False, "lines": [
        f"{MARK}epoch 1/3 | train loss 2.1",
        "[2026-11-24 22:00:00,000 E 123 456] core_worker.cc:512: constructor arguments in the object store",
        "Registered dataset logger for dataset train_1_0",
        f"{MARK}blank collapse cleared at epoch 2",
    ]})
    relay({"pid": 9, "is_err": True, "lines": ["UserWarning: something deprecated"]})
    out, err = capsys.readouterr()
    assert out.splitlines() == ["epoch 1/3 | train loss 2.1", "blank collapse cleared at epoch 2"]
    assert err == ""


def test_on_a_terminal_epoch_lines_drive_a_bar(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import asl_ray.console as console

    monkeypatch.setattr(console, "on_terminal", lambda: True)
    relay({"lines": [f"{MARK}epoch 1/2 (vocab 4) | train loss 2.100 top1 10.0% blank 0.90 grad 1.00 | "
                     "val loss 2.000 top1 25.0% top5 80.0% blank 0.95",
                     f"{MARK}BLANK COLLAPSE: something"]})
    assert console._epochs  # the bar is open
    relay({"lines": [f"{MARK}epoch 2/2 (vocab 4) | train loss 1.500 top1 40.0% blank 0.80 grad 1.00"]})
    assert not console._epochs  # closed at the last epoch
    out = capsys.readouterr().out
    assert "BLANK COLLAPSE: something" in out  # other lines still print, above the bar
    assert "epoch 1/2" not in out and "val top1 25.0%" in out and "2/2" in out


def test_rays_error_channel_keeps_real_problems_and_drops_scheduling_notices(
        capsys: pytest.CaptureFixture[str]) -> None:
    from asl_ray.console import ray_notice

    ray_notice({"pid": "raylet", "is_err": False, "lines": [
        "WARNING: 8 PYTHON worker processes have been started on node: fa4c5b with address: 127.0.0.1.",
        "A worker died or was killed while executing a task by an unexpected system error (OOM).",
    ]}, ignore_prefix=False)
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [
        "ray: A worker died or was killed while executing a task by an unexpected system error (OOM)."]


def test_ray_that_cannot_start_is_one_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    # What Ray raised when its processes did not start in time on a busy machine.
    import ray

    from asl_ray.config import RayConfig
    from asl_ray.errors import UserError
    from asl_ray.raylocal import init_ray

    def timed_out(**_: object) -> None:
        raise Exception("The current node timed out during startup. This could happen because some of the "
                        "raylet failed to startup or the GCS has become overloaded.")

    monkeypatch.setattr(ray, "init", timed_out)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", raising=False)
    with pytest.raises(UserError, match=r"^Ray could not start a local instance: The current node timed out") as err:
        init_ray(RayConfig())
    assert "\n" not in str(err.value)
    # Local worker groups get 600 s to start (Ray Train's 60 s ran out on a busy machine).
    assert os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] == "600"


def test_tune_on_a_terminal_writes_only_failures_above_its_bar(monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    import asl_ray.search as search

    lines: list[str] = []
    for terminal in (True, False):
        monkeypatch.setattr(search, "on_terminal", lambda t=terminal: t)
        progress = search._progress_callback(lines.append, total=3, max_t=10)
        trials = [SimpleNamespace(trial_id=f"t{i}", config={"overrides": {"model.dropout": 0.1}}) for i in range(3)]
        for t in trials:
            progress.on_trial_start(0, trials, t)
        progress.on_trial_result(0, trials, trials[0], {"training_iteration": 10, "epoch": 10, "val_top1": 0.5})
        progress.on_trial_complete(0, trials, trials[0])
        progress.on_trial_complete(0, trials, trials[1])  # stopped early: it reported no epoch
        progress.on_trial_error(0, trials, trials[2])
        progress.close()
        if terminal:
            screen = capsys.readouterr().out
            assert "tune: trial t2 FAILED" in screen
            assert "started {" not in screen and "by ASHA" not in screen and "t0 completed" not in screen
            assert "1 done, 1 stopped, 1 failed" in screen  # the bar's counts
            assert lines == []
    assert sum("started" in x for x in lines) == 3 and any("stopped early by ASHA" in x for x in lines)
    assert any("t0 completed" in x for x in lines) and any("t2 FAILED" in x for x in lines)


def test_native_logs_go_to_a_file_inside_the_block_and_the_terminal_after(
        capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """What a native library writes to fd 2 (as MediaPipe's glog and TFLite do)
    goes to the log file inside the block; fd 2 is the terminal again after it,
    also when the block raises; with -v nothing is redirected."""
    from asl_ray.console import VERBOSE_ENV, native_logs_to_file

    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    with native_logs_to_file("test") as log:
        os.write(2, b"W0000 native noise\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"
    assert "W0000 native noise" in log.read_text()
    with pytest.raises(RuntimeError), native_logs_to_file("test"):
        raise RuntimeError("a Python error")
    os.write(2, b"restored\n")
    assert capfd.readouterr().err == "restored\n"
    log.unlink()
    monkeypatch.setenv(VERBOSE_ENV, "1")
    with native_logs_to_file("test") as log:
        os.write(2, b"shown with -v\n")
    assert capfd.readouterr().err == "shown with -v\n" and not log.exists()
