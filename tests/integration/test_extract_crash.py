"""A video that kills the extractor natively, through real Ray Data and real
MediaPipe: bounded retries, a failed row "extractor crashed", the rest of its
batch kept, and `asl-ray extract --retry-failed` replacing the failed row.

The crash is injected: this module's Ray workers inherit ``ASL_RAY_CRASH_LIST``
(see ``extractor_process.py``), a file of video ids on which the extractor
process kills itself with SIGSEGV, as a decoder or MediaPipe crash would.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from asl_ray.cli import main
from asl_ray.config import load_config
from asl_ray.extract import read_features, run_extract
from asl_ray.extractor_process import CRASH_LIST_ENV
from tests.conftest import ROOT, require_shared

pytestmark = pytest.mark.integration
IDS = ["00623", "00624", "00626"]
CRASHER = "00624"


@pytest.fixture(scope="module")
def crash_list(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A local Ray whose workers see the crash list (empty until a test fills it)."""
    import ray

    from asl_ray.config import RayConfig
    from asl_ray.raylocal import init_ray

    path = tmp_path_factory.mktemp("crash") / "crash.txt"
    path.write_text("")
    if ray.is_initialized():
        ray.shutdown()
    os.environ[CRASH_LIST_ENV] = str(path)
    try:
        init_ray(RayConfig(num_cpus=2))
        yield path
    finally:
        ray.shutdown()
        os.environ.pop(CRASH_LIST_ENV, None)


def test_crashing_video_is_retried_a_bounded_number_of_times_then_retried_on_request(
        crash_list: Path, tmp_path: Path) -> None:
    videos = require_shared("wlasl100", "videos")
    folder = tmp_path / "videos"
    folder.mkdir()
    for vid in IDS:
        (folder / f"{vid}.mp4").symlink_to(videos / f"{vid}.mp4")
    out = tmp_path / "features"
    cfg = load_config(ROOT / "configs/wlasl100.yaml", [
        "data.source=folder", f"data.videos_dir={folder}", f"extract.output_dir={out}",
        "extract.videos_per_file=3", "extract.num_actors=1", "extract.max_retries=1"])
    crash_list.write_text(CRASHER)
    lines: list[str] = []
    summary = run_extract(cfg, echo=lines.append)  # ends: Ray Data does not retry the batch forever
    assert (summary.ok, summary.failed) == (2, 1)
    [(vid, reason)] = summary.failures
    assert vid == CRASHER and reason.startswith("extractor crashed on it 2 times (killed by SIGSEGV)")
    files = list(out.glob("*.parquet"))
    assert len(files) == 1 and pq.read_table(files[0]).num_rows == 3  # the batch's other videos are kept

    crash_list.write_text("")  # the cause is gone (a fixed decoder, say)
    result = CliRunner().invoke(main, [
        "extract", "-c", str(ROOT / "configs/wlasl100.yaml"), "--set", "data.source=folder",
        "--set", f"data.videos_dir={folder}", "--set", f"extract.output_dir={out}", "--retry-failed"])
    assert result.exit_code == 0, result.output
    assert "1 videos to do, 2 already done" in result.output
    table = read_features(str(out), status=None)
    assert Counter(table.column("video_id").to_pylist()) == Counter(IDS)  # one row each: the new one counts
    assert set(table.column("status").to_pylist()) == {"ok"}
