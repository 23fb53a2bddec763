"""Extraction faults without Ray: a video that kills the extractor process is
retried a bounded number of times, then is a failed row; of two rows of one
video the one written last counts, whatever the files' names."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import pyarrow as pa
import pytest

from asl_ray.config import ExtractConfig
from asl_ray.extract import rows_to_table
from asl_ray.extractor_process import CRASH_LIST_ENV, ExtractorProcess
from asl_ray.storage import read_features, repeated_rows, write_atomically
from asl_ray.synthetic import synthetic_rows
from tests.conftest import require_shared


def _islr_rows(n: int) -> list[dict]:
    root = require_shared("asl-signs")
    with (root / "train.csv").open(newline="") as fh:
        records = list(csv.DictReader(fh))[:n]
    return [{"video_id": r["sequence_id"], "gloss": r["sign"], "label": 0, "split": "train", "frame_start": 1,
             "frame_end": -1, "fps": None, "signer_id": r["participant_id"], "source": "asl-signs",
             "path": str(root / r["path"]), "content_hash": None} for r in records]


def test_a_video_that_kills_the_extractor_fails_after_bounded_retries(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _islr_rows(3)
    crash = tmp_path / "crash.txt"
    crash.write_text(rows[1]["video_id"])
    monkeypatch.setenv(CRASH_LIST_ENV, str(crash))
    extractor = ExtractorProcess(ExtractConfig().model_dump(mode="json"), max_retries=2)
    try:
        first, why = extractor(rows[0])
        assert first is not None and first["status"] == "ok" and not why
        pid = extractor.proc.pid if extractor.proc else None
        dead, why = extractor(rows[1])
        assert dead is None and extractor.crashes == 3  # the first try and two retries, then it gives up
        assert "extractor crashed on it 3 times (killed by SIGSEGV)" in why and "--retry-failed" in why
        after, _ = extractor(rows[2])  # a fresh process takes the next video
        assert after is not None and after["status"] == "ok" and extractor.proc and extractor.proc.pid != pid
        crash.write_text("")
        again, _ = extractor(rows[1])  # what --retry-failed does, once the cause is gone
        assert again is not None and again["status"] == "ok" and again["content_hash"]
    finally:
        extractor.close()


def test_the_row_written_last_counts_not_the_name_order(tmp_path: Path) -> None:
    base = synthetic_rows(num_glosses=2, per_gloss=2, seed=0)
    failed = {**base[0], "status": "failed", "error": "extractor crashed", "num_frames": 0, "landmarks": [],
              "features": [], "pose_mask": [], "left_mask": [], "right_mask": []}
    write_atomically(rows_to_table([failed, *base[1:]]), str(tmp_path), "part-zzzz.parquet")
    time.sleep(0.01)
    # The retry's file sorts first by name but was written later: its ok row wins.
    write_atomically(rows_to_table([base[0]]), str(tmp_path), "part-0000.parquet")
    table = read_features(str(tmp_path), status=None)
    assert table.num_rows == len(base)
    row = table.filter(pa.compute.equal(table.column("video_id"), base[0]["video_id"]))
    assert row.column("status").to_pylist() == ["ok"]
    assert repeated_rows(str(tmp_path)) == {base[0]["video_id"]: str(tmp_path / "part-0000.parquet")}
    # And the other way round: a failed row written after an ok one is the row that counts.
    write_atomically(rows_to_table([failed]), str(tmp_path), "part-0001.parquet")
    assert base[0]["video_id"] not in read_features(str(tmp_path)).column("video_id").to_pylist()
    assert os.path.basename(repeated_rows(str(tmp_path))[base[0]["video_id"]]) == "part-0001.parquet"


def test_native_logs_go_beside_rays_worker_log(tmp_path: Path) -> None:
    """An extraction worker's MediaPipe log lands in Ray's session log folder
    (where its stderr file is), not as a stray file in /tmp."""
    from asl_ray.extract import native_log_path

    logs = tmp_path / "session" / "logs"
    logs.mkdir(parents=True)
    err = logs / "worker-abc-01000000-123.err"
    err.write_text("")
    fallback = tmp_path / "tmp"
    assert native_log_path(123, str(err), fallback) == logs / "asl-ray-extractor-123.log"
    assert native_log_path(123, "pipe:[4711]", fallback) == fallback / "asl-ray-extractor-123.log"
    assert native_log_path(123, None, fallback) == fallback / "asl-ray-extractor-123.log"
