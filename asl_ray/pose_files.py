"""``.pose`` files (the sign-language community's ``pose-format``) in and out.

In: a ``.pose`` file in MediaPipe Holistic layout, as ``videos_to_poses -f
mediapipe`` writes it, becomes the same pose/hand arrays as ``landmarks.py``
gives for a video, so the rest of the pipeline cannot tell the sources apart.
pose-format stores x, y in pixels (``x · width``, ``y · height``) and z as
MediaPipe gives it (image-width units), with confidence 0 for points not
found; we take person 0, scale z by the width as ``landmarks.py`` does, and
move each hand to the depth of its pose wrist when its depth is relative to
its wrist (MediaPipe's hands: wrist z = 0 in every frame). A hand whose wrist
has a depth (asl-ray's own exports) keeps it.

Out: the feature dataset's landmarks (Sim(3)-normalised, in shoulder widths)
drawn onto a canvas of ``CANVAS`` pixels with the signer upright: ``x_px =
c + S·x``, ``y_px = c − S·y``, ``z = −S·z`` (a rotation of the body frame by
180° about its x axis, so an import normalises back to the same landmarks),
under Holistic's pose and hand components, so pose-format's visualiser draws
them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from asl_ray.landmarks import HAND_POINTS, POSE_LEFT_WRIST, POSE_POINTS, POSE_RIGHT_WRIST, ExtractionError

POSE_IMPORT_VERSION = "pose-format-import-v1"
COMPONENTS = ("POSE_LANDMARKS", "LEFT_HAND_LANDMARKS", "RIGHT_HAND_LANDMARKS")
CANVAS = 512  # pixels, square
SCALE = CANVAS / 4  # pixels per shoulder width: the signing space fits
RELATIVE_DEPTH = 1e-4  # |wrist z| below this (image-width units): MediaPipe's wrist-relative hand depth


def read_pose_file(path: Path | str) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, int, int]:
    """(pose (T,33,4), left (T,21,3), right (T,21,3), fps, width, height) of a Holistic ``.pose`` file."""
    from pose_format import Pose

    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ExtractionError(f"file not found: {path}") from None
    if not data:
        raise ExtractionError("empty file (0 bytes)")
    try:
        pose = Pose.read(data)
    except Exception as exc:  # pose-format raises whatever its byte reader hits
        raise ExtractionError(f"not a readable .pose file ({type(exc).__name__}: {str(exc)[:120]})") from None
    names = [c.name for c in pose.header.components]
    if not set(COMPONENTS) <= set(names):
        raise ExtractionError(f"not a MediaPipe Holistic .pose file: components {names}, need {list(COMPONENTS)}")
    body = pose.body
    if body.data.shape[0] == 0 or body.data.shape[1] == 0:
        raise ExtractionError(".pose file has no frames")
    width = int(pose.header.dimensions.width) or 1
    height = int(pose.header.dimensions.height) or 1
    xyz = np.asarray(body.data.data[:, 0, :, :3], np.float32)
    conf = np.asarray(body.confidence[:, 0], np.float32)

    def part(name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        start = sum(len(c.points) for c in pose.header.components[: names.index(name)])
        pts = xyz[:, start:start + n].copy()
        found = conf[:, start:start + n] > 0
        pts[..., 2] *= width  # MediaPipe z is in image-width units, as landmarks.py scales it
        pts[~found] = np.nan
        return pts, conf[:, start:start + n]

    body_pts, body_conf = part("POSE_LANDMARKS", POSE_POINTS)
    pose_arr = np.concatenate([body_pts, np.where(body_conf > 0, body_conf, np.nan)[..., None]], axis=2)
    left, _ = part("LEFT_HAND_LANDMARKS", HAND_POINTS)
    right, _ = part("RIGHT_HAND_LANDMARKS", HAND_POINTS)
    for hand, wrist in ((left, POSE_LEFT_WRIST), (right, POSE_RIGHT_WRIST)):
        found = np.isfinite(hand[:, 0, 2])
        if found.any() and (np.abs(hand[found, 0, 2]) < RELATIVE_DEPTH * width).all():
            depth = np.where(np.isfinite(pose_arr[:, wrist, 2]), pose_arr[:, wrist, 2], 0.0)
            hand[..., 2] += (depth - hand[:, 0, 2])[:, None]
    return pose_arr, left, right, float(body.fps or 0.0), width, height


def holistic_header() -> object:
    from pose_format.pose_header import PoseHeader, PoseHeaderDimensions
    from pose_format.utils.holistic import holistic_components

    # Holistic's own pose and hand components (names, points, limbs, colours);
    # no face and world landmarks, which asl-ray does not keep (and which
    # would make every file 7x larger as zeros).
    parts = [c for c in holistic_components("XYZC") if c.name in COMPONENTS]
    return PoseHeader(version=0.2, dimensions=PoseHeaderDimensions(width=CANVAS, height=CANVAS, depth=CANVAS),
                      components=parts)


def write_pose_file(path: Path | str, landmarks: np.ndarray, fps: float | None, header: object = None) -> None:
    """Normalised landmarks (T, 75, 3: pose, left hand, right hand; NaN = not
    found) -> a Holistic ``.pose`` file on the export canvas."""
    from pose_format import Pose
    from pose_format.numpy.pose_body import NumPyPoseBody

    header = header if header is not None else holistic_header()
    t = landmarks.shape[0]
    names = [c.name for c in header.components]  # type: ignore[attr-defined]
    sizes = [len(c.points) for c in header.components]  # type: ignore[attr-defined]
    data = np.zeros((t, 1, sum(sizes), 3), np.float32)
    conf = np.zeros((t, 1, sum(sizes)), np.float32)
    px = np.empty_like(landmarks, dtype=np.float32)
    c = CANVAS / 2
    px[..., 0] = c + SCALE * landmarks[..., 0]
    px[..., 1] = c - SCALE * landmarks[..., 1]
    px[..., 2] = -SCALE * landmarks[..., 2] / CANVAS  # stored in image-width units, as MediaPipe's z
    for name, lo, n in (("POSE_LANDMARKS", 0, POSE_POINTS), ("LEFT_HAND_LANDMARKS", 33, HAND_POINTS),
                        ("RIGHT_HAND_LANDMARKS", 54, HAND_POINTS)):
        start = sum(sizes[: names.index(name)])
        pts = px[:, lo:lo + n]
        found = np.asarray(np.isfinite(pts).all(axis=2))
        data[:, 0, start:start + n] = np.where(found[..., None], pts, 0.0)
        conf[:, 0, start:start + n] = found
    body = NumPyPoseBody(fps=float(fps or 0.0), data=data, confidence=conf)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        Pose(header, body).write(f)


def export_poses(features_dir: str, out_dir: Path, echo: object = print) -> int:
    """Every ok row of a feature dataset -> ``out_dir/<video_id>.pose``, plus
    ``out_dir/labels.csv`` (path,gloss,split,signer) that ``data.source: pose``
    reads back. Returns how many files were written."""
    import csv

    from asl_ray.samples import landmark_views
    from asl_ray.storage import latest_file_rows

    say = echo if callable(echo) else print
    out_dir.mkdir(parents=True, exist_ok=True)
    header = holistic_header()
    written = 0
    with (out_dir / "labels.csv").open("w", newline="") as fh:
        labels = csv.writer(fh)
        labels.writerow(["path", "gloss", "split", "signer"])
        for table in latest_file_rows(features_dir, ["video_id", "gloss", "split", "signer_id", "fps",
                                                     "landmarks"]):
            meta = table.select(["video_id", "gloss", "split", "signer_id", "fps"]).to_pylist()
            for row, lm in zip(meta, landmark_views(table), strict=True):
                name = f"{row['video_id']}.pose"
                write_pose_file(out_dir / name, lm, row["fps"], header)
                labels.writerow([name, row["gloss"], row["split"], row["signer_id"] or ""])
                written += 1
                if written % 500 == 0:
                    say(f"export: {written} .pose files")
    say(f"export: {written} .pose files and labels.csv -> {out_dir}")
    return written
