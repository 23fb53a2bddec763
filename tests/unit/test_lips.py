"""Lip landmarks (extract.lips, input block `lips`): extraction on a real video,
storage, the input block, mirroring, and the errors when a dataset lacks them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asl_ray.augment import mirror
from asl_ray.config import ExtractConfig, FeaturesConfig
from asl_ray.errors import UserError
from asl_ray.extract import SampleProcessor, rows_to_table
from asl_ray.features import NUM_LIPS
from asl_ray.inputs import BLOCK_SIZES, build_inputs, part_columns
from asl_ray.landmarks import LIPS, LIPS_EXTRACTOR_VERSION
from asl_ray.samples import landmark_views
from asl_ray.schema import FEATURE_SCHEMA, sample_arrays
from tests.conftest import require_shared

LIPS_READ = FeaturesConfig(inputs=["pose", "lips"])


@pytest.fixture(scope="module")
def lips_row() -> dict:
    """One real WLASL video extracted with lips (~4 s)."""
    video = require_shared("wlasl100", "videos", "00623.mp4")
    proc = SampleProcessor(ExtractConfig(lips=True))
    return proc({"video_id": "00623", "gloss": "book", "label": 1, "split": "train", "signer_id": None,
                 "source": "test", "path": str(video), "frame_start": 1, "frame_end": -1, "fps": None})


def test_lip_points_are_face_mesh_lips() -> None:
    import mediapipe

    face_mesh = mediapipe.solutions.face_mesh
    assert sorted(LIPS) == sorted({i for edge in face_mesh.FACEMESH_LIPS for i in edge})
    assert len(LIPS) == NUM_LIPS


def test_real_video_lips_are_stored_and_read_back(lips_row: dict) -> None:
    assert lips_row["status"] == "ok", lips_row["error"]
    assert lips_row["extractor_version"] == LIPS_EXTRACTOR_VERSION
    arr = sample_arrays(rows_to_table([lips_row]).to_pylist()[0])
    assert arr.lips is not None and arr.lips.shape == (arr.landmarks.shape[0], NUM_LIPS, 3)
    found = np.isfinite(arr.lips).all(axis=(1, 2))
    assert found.mean() > 0.9  # a frontal signer: the face is found nearly always
    # In the body frame: the mouth sits below the nose, about a fifth of a
    # shoulder width wide (corners 61 and 291).
    nose_y = np.nanmean(arr.landmarks[:, 0, 1])
    assert np.nanmean(arr.lips[..., 1]) < nose_y
    width = np.nanmean(np.linalg.norm(arr.lips[:, LIPS.index(61)] - arr.lips[:, LIPS.index(291)], axis=-1))
    assert 0.1 < width < 0.4
    lm = arr.model_landmarks(True)
    assert lm.shape == (arr.landmarks.shape[0], 115, 3)
    x = build_inputs(lm, 25.0, ["lips", "masks"])
    assert x.shape == (lm.shape[0], BLOCK_SIZES["lips"] + 3)
    assert np.array_equal(x[:, BLOCK_SIZES["lips"] - 1], found.astype(np.float32))


def test_mirror_pairs_match_a_real_face(lips_row: dict) -> None:
    """On a frontal face (this signer's), the lips mirrored with each point
    swapped for its partner land on the face's own points: ~0.006 shoulder
    widths off on average against ~0.056 with no swap. (A swap of two
    neighbouring points would hide in that mean; a wrong contour would not.)
    The midline points lie on the mouth's axis."""
    arr = sample_arrays(rows_to_table([lips_row]).to_pylist()[0])
    lm = arr.model_landmarks(True)
    ok = np.isfinite(lm[:, 75:]).all(axis=(1, 2))
    lips = lm[ok, 75:] - lm[ok, 75:].mean(axis=1, keepdims=True)
    flipped = mirror(lm[ok])[:, 75:]
    flipped = flipped - flipped.mean(axis=1, keepdims=True)
    unpaired = lips * np.array([-1, 1, 1], np.float32)
    paired_err = np.abs(flipped[..., :2] - lips[..., :2]).mean()
    unpaired_err = np.abs(unpaired[..., :2] - lips[..., :2]).mean()
    assert paired_err < 0.3 * unpaired_err
    midline = [LIPS.index(i) for i in (0, 17, 13, 14)]
    width = np.abs(lips[..., 0]).max(axis=1).mean()
    assert np.abs(lips[:, midline, 0]).mean() < 0.15 * width
    assert np.array_equal(mirror(mirror(lm)), lm, equal_nan=True)


def test_lips_block_is_the_mouth_shape() -> None:
    rng = np.random.default_rng(0)
    lm = rng.normal(size=(6, 115, 3)).astype(np.float32)
    moved = lm.copy()
    moved[:, 75:] += np.array([0.3, -0.2, 0.1], np.float32)  # the head moves, the mouth keeps its shape
    assert np.allclose(build_inputs(lm, 30.0, ["lips"]), build_inputs(moved, 30.0, ["lips"]), atol=1e-5)
    lm[2, 75:] = np.nan  # no face in frame 2
    x = build_inputs(lm, 30.0, ["lips"])
    assert x[2, -1] == 0 and np.all(x[2] == 0) and np.all(x[[0, 1, 3], -1] == 1)
    with pytest.raises(ValueError, match="lips"):
        build_inputs(lm[:, :75], 30.0, ["lips"])
    cols = part_columns(["pose", "lips"])
    assert cols["face"] == list(range(27, 27 + BLOCK_SIZES["lips"]))


def test_datasets_without_lips_give_one_clear_error(lips_row: dict, tmp_path: Path) -> None:
    with_lips = rows_to_table([lips_row])
    views = landmark_views(with_lips, LIPS_READ)
    assert views[0].shape[1:] == (115, 3)
    assert landmark_views(with_lips)[0].shape[1:] == (75, 3)
    without = rows_to_table([{**lips_row, "video_id": "plain", "lips": None}])
    assert without.column("lips").to_pylist() == [[]]
    with pytest.raises(UserError, match="video plain has no lip landmarks.*extract.lips=true"):
        landmark_views(without, LIPS_READ)
    # A file from before the column existed reads it as null, and says the same.
    old = tmp_path / "old.parquet"
    pq.write_table(with_lips.drop_columns(["lips"]), old)
    read = pq.read_table(old, schema=FEATURE_SCHEMA)
    assert read.column("lips").null_count == 1
    with pytest.raises(UserError, match="no lip landmarks"):
        landmark_views(read, LIPS_READ)
    with pytest.raises(UserError, match="lips column"):
        landmark_views(pa.table({"landmarks": read.column("landmarks")}), LIPS_READ)


def test_kaggle_islr_files_give_their_lips() -> None:
    from asl_ray.features import video_features
    from asl_ray.landmark_files import read_islr

    folder = require_shared("asl-signs", "train_landmark_files")
    path = sorted(folder.rglob("*.parquet"))[0]
    pose, left, right, lips = read_islr(path, lips=True)
    assert read_islr(path)[3] is None
    assert lips is not None and lips.shape == (pose.shape[0], NUM_LIPS, 3)
    vf = video_features(pose, left, right, 30.0, lips)
    assert vf.lips is not None
    found = np.isfinite(vf.lips).all(axis=(1, 2))
    assert found.mean() > 0.5
    assert np.nanmean(vf.lips[found][..., 1]) < np.nanmean(vf.landmarks[found, 0, 1])  # below the nose
    width = np.linalg.norm(vf.lips[found, LIPS.index(61)] - vf.lips[found, LIPS.index(291)], axis=-1).mean()
    assert 0.05 < width < 0.5


def test_islr_files_without_a_face_give_nan_lips(tmp_path: Path) -> None:
    from asl_ray.landmark_files import read_islr
    from asl_ray.synthetic import write_islr_folder

    write_islr_folder(str(tmp_path), sequences=1, with_face=False)
    pose, _, _, lips = read_islr(next(tmp_path.rglob("*.parquet")), lips=True)
    assert lips is not None and lips.shape == (pose.shape[0], NUM_LIPS, 3) and np.isnan(lips).all()
