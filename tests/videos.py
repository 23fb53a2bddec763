"""Real videos made from the shared WLASL clips (joined with OpenCV) for tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def frames(path: Path) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return out
        out.append(frame)


def write(path: Path, images: Sequence[np.ndarray], size: tuple[int, int], fps: float = 25.0) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for f in images:
        writer.write(cv2.resize(f, size))
    writer.release()
    return path


def join_videos(path: Path, sources: Sequence[Path]) -> Path:
    """One video of the sources played one after the other (at the first one's size)."""
    parts = [frames(s) for s in sources]
    size = (parts[0][0].shape[1], parts[0][0].shape[0])
    return write(path, [f for p in parts for f in p], size)
