"""The versions the code writes into every feature row, and the rows that
carry other ones (extracted by an older asl-ray: different landmarks or
features than the code now computes, so never trained on beside new ones)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from asl_ray.features import FEATURE_VERSION
from asl_ray.landmark_files import ISLR_VERSION
from asl_ray.landmarks import EXTRACTOR_VERSION, LIPS_EXTRACTOR_VERSION
from asl_ray.pose_files import POSE_IMPORT_VERSION

SYNTHETIC_VERSION = "synthetic-v1"
# Every extractor the code has today: MediaPipe on videos (with or without
# lips), the Kaggle ISLR and
# pose-format importers, the synthetic generator.
EXTRACTORS = (EXTRACTOR_VERSION, LIPS_EXTRACTOR_VERSION, ISLR_VERSION, POSE_IMPORT_VERSION, SYNTHETIC_VERSION)


def stale_mask(table: pa.Table) -> pa.ChunkedArray:
    """True where a row's extractor_version or feature_version is not the code's."""
    old_extractor = pc.invert(pc.is_in(table.column("extractor_version"), pa.array(EXTRACTORS)))
    old_features = pc.not_equal(table.column("feature_version"), FEATURE_VERSION)
    return pc.or_(old_extractor, old_features)


def stale_summary(table: pa.Table) -> dict[str, int]:
    """``"extractor / features" -> rows`` for the stale rows of ``table`` (empty when none)."""
    stale = table.filter(stale_mask(table))
    counts: dict[str, int] = {}
    for ext, feat in zip(stale.column("extractor_version").to_pylist(), stale.column("feature_version").to_pylist(),
                         strict=True):
        key = f"{ext} / {feat}"
        counts[key] = counts.get(key, 0) + 1
    return counts
