"""The terminal: Ray's forwarded worker output is reduced to our marked progress lines."""

from __future__ import annotations

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
