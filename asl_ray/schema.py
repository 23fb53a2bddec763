"""The feature dataset's Parquet schema: one place for the writer and the readers.

One row per video. Per-frame arrays are stored flattened (row-major) in list
columns; ``num_frames`` gives T, so

* ``landmarks``: T × 75 × 3 float32, pose (33) + left hand (21) + right hand
  (21), Sim(3)-normalised into the body frame (see ``features.py``), NaN where
  not found;
* ``features``: T × 36 float32, the phonological features (``FEATURE_NAMES``);
* ``pose_mask``, ``left_mask``, ``right_mask``: T booleans, landmark found;
* ``lips``: T × 40 × 3 float32, Face Mesh's lip points in the same body frame,
  NaN where no face was found; empty when extracted without ``extract.lips``
  (null in files from before the column existed).

A failed video has ``status = "failed"``, a reason in ``error``, zero frames
and empty lists. ``note`` records anything the user should know about an ok
row (a clipped frame bound, assumed aspect ratio). ``content_hash`` is the
source file's hash (``duplicates.py``); files written before it existed read
it as null.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from asl_ray.features import NUM_FEATURES, NUM_LANDMARKS, NUM_LIPS
from asl_ray.manifest import MANIFEST_SCHEMA

# The sample's identity columns are the manifest's own, so the two never drift.
_FROM_MANIFEST = ("video_id", "gloss", "label", "split", "signer_id", "source", "path", "fps", "content_hash")

FEATURE_SCHEMA = pa.schema(
    [MANIFEST_SCHEMA.field(name) for name in _FROM_MANIFEST]
    + [
        pa.field("num_frames", pa.int32(), nullable=False),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("landmarks", pa.list_(pa.float32()), nullable=False),
        pa.field("features", pa.list_(pa.float32()), nullable=False),
        pa.field("pose_mask", pa.list_(pa.bool_()), nullable=False),
        pa.field("left_mask", pa.list_(pa.bool_()), nullable=False),
        pa.field("right_mask", pa.list_(pa.bool_()), nullable=False),
        pa.field("extractor_version", pa.string(), nullable=False),
        pa.field("feature_version", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("note", pa.string()),
        pa.field("seconds", pa.float32()),
        pa.field("mediapipe_seconds", pa.float32()),
        pa.field("lips", pa.list_(pa.float32())),
    ]
)
STATUS_OK = "ok"
STATUS_FAILED = "failed"


@dataclass
class SampleArrays:
    """One ok row's arrays, reshaped."""

    landmarks: np.ndarray  # (T, 75, 3)
    features: np.ndarray  # (T, 36)
    pose_mask: np.ndarray  # (T,)
    left_mask: np.ndarray
    right_mask: np.ndarray
    lips: np.ndarray | None = None  # (T, 40, 3), when extracted

    def model_landmarks(self, with_lips: bool) -> np.ndarray:
        """What training reads: (T, 75, 3), or (T, 115, 3) with the lips after
        the hands (:func:`asl_ray.samples.landmark_views`)."""
        if not with_lips:
            return self.landmarks
        if self.lips is None:
            raise ValueError("this row has no lip landmarks (extracted without extract.lips)")
        return np.concatenate([self.landmarks, self.lips], axis=1)


def sample_arrays(row: dict) -> SampleArrays:
    t = int(row["num_frames"])
    lips = row.get("lips")
    return SampleArrays(
        landmarks=np.asarray(row["landmarks"], np.float32).reshape(t, NUM_LANDMARKS, 3),
        features=np.asarray(row["features"], np.float32).reshape(t, NUM_FEATURES),
        pose_mask=np.asarray(row["pose_mask"], bool),
        left_mask=np.asarray(row["left_mask"], bool),
        right_mask=np.asarray(row["right_mask"], bool),
        lips=np.asarray(lips, np.float32).reshape(t, NUM_LIPS, 3) if lips is not None and len(lips) else None,
    )
