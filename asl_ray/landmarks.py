"""MediaPipe: video -> pose and hand landmarks. The only module that imports mediapipe.

We run MediaPipe Pose and Hands (model_complexity 1, the models shipped in the
0.10.14 wheel) in tracking mode: every frame of a video goes in order through
one graph, so the trackers carry the hands from frame to frame. A graph is
built once per :class:`LandmarkExtractor` and reused across videos; between
videos it is ``reset()`` so one video's tracking state never leaks into the
next. Pose + Hands rather than Holistic: Holistic also runs the face mesh,
which the features do not use, and spreads over ~1.4 cores; Pose + Hands is
nearly single-threaded, so N actors fill N cores. With ``extract.lips`` a
Face Mesh graph runs too (1.08x the extraction time: benchmarks/lips_cost.py)
and only its 40 lip points are kept: mouthing is part of many signs, and the
other 428 face points would be most of the bytes.

Coordinates are returned in pixels of the processed frame (x*W, y*H, z*W) so
that the aspect ratio is right before the Sim(3) normalisation. MediaPipe's
hand z is relative to the hand's own wrist; we anchor it to the depth of the
matching pose wrist so hands and body share one depth axis.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asl_ray.errors import UserError

POSE_POINTS = 33
HAND_POINTS = 21
POSE_LEFT_WRIST = 15  # the signer's left wrist
POSE_RIGHT_WRIST = 16
NOSE = 0  # pose
EXTRACTOR_VERSION = "mp0.10.14-pose1-hands1-v1"
LIPS_EXTRACTOR_VERSION = "mp0.10.14-pose1-hands1-lips1-v1"  # the same pose and hands, plus lips
# Face Mesh's lip contour points (mediapipe.solutions.face_mesh.FACEMESH_LIPS,
# tested): outer upper, outer lower, inner upper, inner lower.
LIPS = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 146, 91, 181, 84, 17, 314, 405, 321, 375,
        78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
FACE_POINTS = 468  # Face Mesh, refine_landmarks off
FACE_NOSE_TIP = 1


class ExtractionError(Exception):
    """This one video cannot be turned into landmarks; the message is the reason."""


@dataclass
class VideoLandmarks:
    """Landmarks of one video; NaN marks what was not found."""

    pose: np.ndarray  # (T, 33, 4): x, y, z in pixels, visibility
    left: np.ndarray  # (T, 21, 3): the signer's left hand
    right: np.ndarray  # (T, 21, 3)
    fps: float
    width: int
    height: int
    notes: list[str] = field(default_factory=list)
    mediapipe_seconds: float = 0.0
    lips: np.ndarray | None = None  # (T, 40, 3) when extracted (``LIPS`` order)

    @property
    def num_frames(self) -> int:
        return int(self.pose.shape[0])


def assign_hands(
    hand_wrists: np.ndarray,
    labels: list[str],
    pose_left_wrist: np.ndarray | None,
    pose_right_wrist: np.ndarray | None,
) -> list[str]:
    """Say which detected hand is the signer's 'left' and which 'right'.

    ``hand_wrists`` is (H, 2) in pixels. With a pose, each hand goes to the
    nearest pose wrist (two hands: the pairing with the smaller total distance,
    so both never land on one side). Without one we fall back on MediaPipe's
    handedness label, which assumes a mirrored selfie image: on an ordinary
    camera image its "Left" is the signer's right hand.
    """
    n = len(hand_wrists)
    if pose_left_wrist is None or pose_right_wrist is None or not (
        np.all(np.isfinite(pose_left_wrist)) and np.all(np.isfinite(pose_right_wrist))
    ):
        return ["right" if lab == "Left" else "left" for lab in labels[:n]]
    d_left = np.linalg.norm(hand_wrists - pose_left_wrist, axis=1)
    d_right = np.linalg.norm(hand_wrists - pose_right_wrist, axis=1)
    if n == 1:
        return ["left" if d_left[0] <= d_right[0] else "right"]
    if n == 2:
        straight = d_left[0] + d_right[1]
        crossed = d_right[0] + d_left[1]
        return ["left", "right"] if straight <= crossed else ["right", "left"]
    return ["left" if dl <= dr else "right" for dl, dr in zip(d_left, d_right, strict=True)]


def _import_mediapipe() -> Any:
    # MediaPipe's C++ side logs a warning per graph start through glog; keep
    # the user's terminal for our progress lines unless they ask for more.
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        import mediapipe as mp
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise UserError(
            "mediapipe is not installed: pip install 'mediapipe==0.10.14' (only releases up to "
            "0.10.21 ship the Pose/Hands models)"
        ) from exc
    if not hasattr(mp, "solutions"):
        raise UserError(f"mediapipe {mp.__version__} has no 'solutions' (models); install mediapipe==0.10.14")
    return mp


def bounds_apply(total_frames: int, frame_start: int, frame_end: int) -> bool:
    """``data.clips: auto``: do WLASL's bounds index this file (a raw source
    video), or was it already cut to them? A file with fewer frames than the
    bounds reach cannot be the source video, so it is the cut; one long enough
    is read as the source. (A cut that is as long as its end bound reads the
    same either way when the bounds start at 1.) An unknown frame count (0:
    some containers do not say) keeps the bounds."""
    return total_frames <= 0 or total_frames >= max(frame_start, frame_end)


class LandmarkExtractor:
    """One Pose graph and one Hands graph (and a Face Mesh graph with ``lips``),
    reused for every video it is given."""

    def __init__(
        self,
        frame_stride: int = 1,
        max_frame_size: int | None = None,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        lips: bool = False,
    ) -> None:
        mp = _import_mediapipe()
        import cv2

        self._cv2 = cv2
        self.frame_stride = frame_stride
        self.max_frame_size = max_frame_size
        self._pose = mp.solutions.pose.Pose(
            static_image_mode=False,
            model_complexity=1,
            min_detection_confidence=min_detection_confidence,
            min_tracking_confidence=min_tracking_confidence,
        )
        self._hands = mp.solutions.hands.Hands(
            static_image_mode=False,
            max_num_hands=2,
            model_complexity=1,
            min_detection_confidence=min_detection_confidence,
            min_tracking_confidence=min_tracking_confidence,
        )
        self._face = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False,
            max_num_faces=1,
            refine_landmarks=False,
            min_detection_confidence=min_detection_confidence,
            min_tracking_confidence=min_tracking_confidence,
        ) if lips else None
        self._used = False

    @property
    def version(self) -> str:
        return LIPS_EXTRACTOR_VERSION if self._face is not None else EXTRACTOR_VERSION

    def close(self) -> None:
        self._pose.close()
        self._hands.close()
        if self._face is not None:
            self._face.close()

    def frames(self, path: Path, frame_start: int = 1, frame_end: int = -1, info: dict[str, Any] | None = None,
               clips: str = "raw") -> Iterator[np.ndarray]:
        """Yield RGB frames ``frame_start..frame_end`` (1-based, inclusive, -1 = end).

        Frames are decoded one at a time, so a long video never sits in memory
        whole. ``info`` receives the fps and notes (a clipped bound, how the
        bounds were read). ``clips`` says what the bounds index: ``raw``, the
        source video (WLASL's meaning); ``trimmed``, nothing (the file is
        already the sign, as WLASL's own preprocessing cuts it: bounds ignored);
        ``auto``, decided per video (:func:`bounds_apply`).
        """
        cv2 = self._cv2
        info = {} if info is None else info
        info.setdefault("notes", [])
        if not path.is_file():
            raise ExtractionError(f"file not found: {path}")
        if path.stat().st_size == 0:
            raise ExtractionError("empty file (0 bytes)")
        cap = cv2.VideoCapture(str(path))
        try:
            if not cap.isOpened():
                raise ExtractionError("cannot open: not a video or corrupt (no decodable stream)")
            info["fps"] = float(cap.get(cv2.CAP_PROP_FPS)) or 0.0
            if clips != "raw" and (frame_start > 1 or frame_end > 0):
                total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
                if clips == "trimmed" or not bounds_apply(total, frame_start, frame_end):
                    info["notes"].append(f"clip already trimmed ({total} frames): bounds {frame_start}-{frame_end} "
                                         f"not applied (data.clips={clips})")
                    frame_start, frame_end = 1, -1
                else:
                    info["notes"].append(f"raw video ({total} frames): frames {frame_start}-{frame_end} used "
                                         f"(data.clips={clips})")
            index = 0  # 1-based number of the frame just read
            sent = 0
            while frame_end < 0 or index < frame_end:
                # grab() skips the decode of frames before frame_start.
                if not cap.grab():
                    break
                index += 1
                if index < frame_start or (index - frame_start) % self.frame_stride:
                    continue
                ok, bgr = cap.retrieve()
                if not ok or bgr is None:
                    break
                sent += 1
                yield self._resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        finally:
            cap.release()
        if frame_end > 0 and index < frame_end:
            info["notes"].append(f"frame_end {frame_end} past the end ({index} frames): clipped")
        if not sent:
            if index == 0:
                raise ExtractionError("no decodable frames")
            raise ExtractionError(f"frame_start {frame_start} past the end ({index} frames)")

    def _resize(self, rgb: np.ndarray) -> np.ndarray:
        if not self.max_frame_size:
            return rgb
        h, w = rgb.shape[:2]
        scale = self.max_frame_size / max(h, w)
        if scale >= 1:
            return rgb
        return self._cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=self._cv2.INTER_AREA)

    def extract(self, path: Path | str, frame_start: int = 1, frame_end: int = -1, clips: str = "raw"
                ) -> VideoLandmarks:
        if self._used:
            # Same graphs, fresh tracking state: the last video's hands must not
            # seed this one's first frame.
            self._pose.reset()
            self._hands.reset()
            if self._face is not None:
                self._face.reset()
        self._used = True
        info: dict[str, Any] = {}
        pose_rows: list[np.ndarray] = []
        hand_rows: dict[str, list[np.ndarray]] = {"left": [], "right": []}
        lip_rows: list[np.ndarray] = []
        h = w = 0
        spent = 0.0
        for i, rgb in enumerate(self.frames(Path(path), frame_start, frame_end, info, clips)):
            h, w = rgb.shape[:2]
            scale = np.array([w, h, w], dtype=np.float32)
            rgb.flags.writeable = False
            t0 = time.perf_counter()
            try:
                pres = self._pose.process(rgb)
                hres = self._hands.process(rgb)
                fres = self._face.process(rgb) if self._face is not None else None
            except Exception as exc:  # MediaPipe raises bare RuntimeErrors
                raise ExtractionError(f"mediapipe failed on frame {i + 1}: {exc}") from exc
            spent += time.perf_counter() - t0
            pose = np.full((POSE_POINTS, 4), np.nan, dtype=np.float32)
            hands = {side: np.full((HAND_POINTS, 3), np.nan, np.float32) for side in ("left", "right")}
            if pres.pose_landmarks is not None:
                pts = pres.pose_landmarks.landmark
                pose[:, :3] = np.array([[p.x, p.y, p.z] for p in pts], np.float32) * scale
                pose[:, 3] = [p.visibility for p in pts]
            if hres.multi_hand_landmarks:
                found = [np.array([[p.x, p.y, p.z] for p in hl.landmark], np.float32) * scale
                         for hl in hres.multi_hand_landmarks]
                labels = [hd.classification[0].label for hd in hres.multi_handedness]
                have_pose = pres.pose_landmarks is not None
                sides = assign_hands(
                    np.stack([f[0, :2] for f in found]),
                    labels,
                    pose[POSE_LEFT_WRIST, :2] if have_pose else None,
                    pose[POSE_RIGHT_WRIST, :2] if have_pose else None,
                )
                for side, pts3 in zip(sides, found, strict=True):
                    wrist_idx = POSE_LEFT_WRIST if side == "left" else POSE_RIGHT_WRIST
                    depth = pose[wrist_idx, 2] if have_pose else 0.0
                    pts3[:, 2] += depth - pts3[0, 2]
                    hands[side] = pts3
            if fres is not None:
                lip_rows.append(self._lips(fres, pose, scale))
            pose_rows.append(pose)
            hand_rows["left"].append(hands["left"])
            hand_rows["right"].append(hands["right"])
        fps = info.get("fps", 0.0)
        stride_fps = fps / self.frame_stride if fps else 0.0
        return VideoLandmarks(np.stack(pose_rows), np.stack(hand_rows["left"]), np.stack(hand_rows["right"]),
                              stride_fps, w, h, info["notes"], spent,
                              np.stack(lip_rows) if self._face is not None else None)

    @staticmethod
    def _lips(result: Any, pose: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """The 40 lip points of one frame in pixels, NaN when no face was found.
        Face Mesh's z is relative to the face's own centre; like the hands',
        it is moved to the body's depth: the nose tip to the pose nose."""
        lips = np.full((len(LIPS), 3), np.nan, np.float32)
        if not result.multi_face_landmarks:
            return lips
        pts = result.multi_face_landmarks[0].landmark
        face = np.array([[pts[i].x, pts[i].y, pts[i].z] for i in (*LIPS, FACE_NOSE_TIP)], np.float32) * scale
        depth = pose[NOSE, 2] if np.isfinite(pose[NOSE, 2]) else 0.0
        face[:, 2] += depth - face[-1, 2]
        return face[:-1]
