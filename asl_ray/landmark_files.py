"""Already-extracted landmarks in the Kaggle ISLR ("asl-signs") format -> arrays.

Each file has one row per (frame, landmark): ``frame, row_id, type,
landmark_index, x, y, z`` with types face/left_hand/pose/right_hand and NaN for
landmarks not found. We keep pose and hands, and with ``extract.lips`` the
face's 40 lip points (``landmarks.LIPS``), in the same layout and units as
``landmarks.py`` produces, so the rest of the pipeline cannot tell the two sources apart. The files carry no image
size: x, y are taken as given (square pixels assumed, noted on the row).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from asl_ray.landmarks import (
    FACE_NOSE_TIP,
    FACE_POINTS,
    HAND_POINTS,
    LIPS,
    NOSE,
    POSE_LEFT_WRIST,
    POSE_POINTS,
    POSE_RIGHT_WRIST,
    ExtractionError,
)

ISLR_VERSION = "asl-signs-import-v1"
ASSUMED_ASPECT_NOTE = "landmark file: image size unknown, square pixels assumed"


def read_islr(path: Path | str, lips: bool = False
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(pose (T,33,4), left (T,21,3), right (T,21,3), lips (T,40,3) or None)
    of one landmark file; lips only when asked (NaN where the file has no face)."""
    try:
        table = pq.read_table(path, columns=["frame", "type", "landmark_index", "x", "y", "z"])
    except FileNotFoundError:
        raise ExtractionError(f"file not found: {path}") from None
    except Exception as exc:
        raise ExtractionError(f"cannot read landmark file: {exc}") from None
    if table.num_rows == 0:
        raise ExtractionError("landmark file has no rows")
    frame = table.column("frame").to_numpy()
    # Compared in Arrow: a file holds 543 rows a frame, too many for Python strings.
    types = table.column("type")
    idx = table.column("landmark_index").to_numpy().astype(np.int64)
    xyz = np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in ("x", "y", "z")], axis=1)
    frames, t_of = np.unique(frame, return_inverse=True)
    t = len(frames)
    pose = np.full((t, POSE_POINTS, 4), np.nan, np.float32)
    left = np.full((t, HAND_POINTS, 3), np.nan, np.float32)
    right = np.full((t, HAND_POINTS, 3), np.nan, np.float32)
    for name, target, n in (("pose", pose, POSE_POINTS), ("left_hand", left, HAND_POINTS),
                            ("right_hand", right, HAND_POINTS)):
        sel = pc.equal(types, name).to_numpy(zero_copy_only=False) & (idx < n)
        target[t_of[sel], idx[sel], :3] = xyz[sel]
    pose[..., 3] = np.where(np.isfinite(pose[..., 0]), 1.0, np.nan)
    # Same depth anchoring as landmarks.py: hand z relative to its own wrist,
    # moved to the depth of the matching pose wrist.
    for hand, wrist in ((left, POSE_LEFT_WRIST), (right, POSE_RIGHT_WRIST)):
        depth = np.where(np.isfinite(pose[:, wrist, 2]), pose[:, wrist, 2], 0.0)
        hand[..., 2] += (depth - hand[:, 0, 2])[:, None]
    if not lips:
        return pose, left, right, None
    # The lips and the nose tip, whose depth goes to the pose nose's (as landmarks.py does).
    face = np.full((t, len(LIPS) + 1, 3), np.nan, np.float32)
    slot = np.full(FACE_POINTS, -1)
    slot[list(LIPS) + [FACE_NOSE_TIP]] = np.arange(len(LIPS) + 1)
    sel = pc.equal(types, "face").to_numpy(zero_copy_only=False) & (idx < FACE_POINTS)
    sel[sel] = slot[idx[sel]] >= 0
    face[t_of[sel], slot[idx[sel]]] = xyz[sel]
    depth = np.where(np.isfinite(pose[:, NOSE, 2]), pose[:, NOSE, 2], 0.0)
    face[..., 2] += (depth - face[:, -1, 2])[:, None]
    return pose, left, right, face[:, :-1]
