"""Raw vs pre-trimmed clips (``data.clips``), with real videos and real MediaPipe.

WLASL's frame bounds index the raw source video. The test builds both kinds
from real WLASL clips: a long "raw" video (three clips joined, the sign being
the middle one, with its bounds) and that sign's trimmed cut (the middle clip
alone, as WLASL's preprocessing writes it), then extracts both with the same
bounds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asl_ray.config import ExtractConfig
from asl_ray.extract import SampleProcessor
from asl_ray.landmarks import bounds_apply
from asl_ray.schema import sample_arrays
from tests.conftest import require_shared
from tests.videos import frames, write

pytestmark = pytest.mark.integration
PARTS = ["00623", "00624", "00626"]  # the sign is the middle one


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    src = require_shared("wlasl100", "videos")
    tmp = tmp_path_factory.mktemp("clips")
    parts = [frames(src / f"{v}.mp4") for v in PARTS]
    size = (parts[1][0].shape[1], parts[1][0].shape[0])
    write(tmp / "raw.mp4", [f for p in parts for f in p], size)
    write(tmp / "trimmed.mp4", parts[1], size)
    start = len(parts[0]) + 1
    return {"raw": tmp / "raw.mp4", "trimmed": tmp / "trimmed.mp4", "start": start,
            "end": start + len(parts[1]) - 1, "sign_frames": len(parts[1]), "total": sum(map(len, parts))}


def _extract(processor: SampleProcessor, path: object, start: int, end: int, clips: str) -> dict:
    return processor({"video_id": Path(str(path)).stem, "gloss": "g", "label": 0, "split": "train",
                      "frame_start": start, "frame_end": end, "fps": None, "signer_id": None, "source": "test",
                      "path": str(path), "clips": clips})


def test_auto_reads_the_bounds_of_raw_videos_and_ignores_them_on_trimmed_ones(videos: dict) -> None:
    proc = SampleProcessor(ExtractConfig())
    start, end, n = videos["start"], videos["end"], videos["sign_frames"]
    raw = _extract(proc, videos["raw"], start, end, "auto")
    cut = _extract(proc, videos["trimmed"], start, end, "auto")
    assert raw["status"] == cut["status"] == "ok"
    assert raw["num_frames"] == cut["num_frames"] == n  # the sign's frames, either way
    assert f"raw video ({videos['total']} frames): frames {start}-{end} used" in raw["note"]
    assert f"clip already trimmed ({n} frames): bounds {start}-{end} not applied" in cut["note"]
    # The same frames (both re-encoded from the same source frames), so nearly the same landmarks.
    a, b = sample_arrays(raw).landmarks, sample_arrays(cut).landmarks
    both = np.isfinite(a) & np.isfinite(b)
    assert both.mean() > 0.3 and np.nanmedian(np.abs(a - b)[both]) < 0.05

    # Forced modes. The bounds applied to the cut take the wrong frames: its tail
    # (or nothing, when they start past its end). Ignored on the raw video: all of it.
    wrong = _extract(proc, videos["trimmed"], start, end, "raw")
    assert wrong["status"] == "failed" or (wrong["num_frames"] < n and "past the end" in wrong["note"])
    whole = _extract(proc, videos["raw"], start, end, "trimmed")
    assert whole["status"] == "ok" and whole["num_frames"] == videos["total"]


def test_bounds_rule() -> None:
    assert bounds_apply(4000, 2055, 2111) and not bounds_apply(57, 2055, 2111)
    assert bounds_apply(0, 2055, 2111)  # unknown length: keep the bounds
    assert bounds_apply(50, 1, 50) and not bounds_apply(49, 1, 50)
