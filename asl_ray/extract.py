"""Ray Data edge: manifest -> actor pool of extractors -> Parquet feature dataset.

The driver reads the manifest, drops the videos whose rows are already in the
output folder, and streams the rest through ``map_batches`` over an
``ActorPoolStrategy`` pool. Each actor holds one :class:`LandmarkExtractor`
(one MediaPipe graph, reused across videos) and, for every batch, writes one
Parquet file and returns a small summary that the driver turns into progress.

Exactly once: a batch's file is written under a temporary name and renamed
into place, so a file is either complete or absent, and its name is a hash of
its video ids, so a retried batch replaces its own file instead of adding a
second copy. A killed run leaves only complete files; the next run skips the
videos in them and processes the rest.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from asl_ray.config import Config, ExtractConfig, resolve_paths
from asl_ray.console import Bar, on_terminal
from asl_ray.duplicates import file_hash
from asl_ray.features import FEATURE_VERSION, NoBodyFrame, video_features
from asl_ray.manifest import build_manifest
from asl_ray.schema import FEATURE_SCHEMA, STATUS_FAILED, STATUS_OK
from asl_ray.storage import Location, absolute, read_features, remove_leftovers, write_atomically
from asl_ray.versions import stale_summary

__all__ = ["completed_ids", "read_features", "run_extract", "write_atomically"]


def _manifest_fields(row: dict[str, Any]) -> dict[str, Any]:
    fields = {k: row.get(k) for k in ("video_id", "gloss", "label", "split", "signer_id", "source", "path")}
    fields["content_hash"] = row.get("content_hash")
    if not fields["content_hash"]:  # asl-signs manifests leave hashing to the importer
        with contextlib.suppress(OSError):
            fields["content_hash"] = file_hash(row["path"])
    return fields


def failed_row(row: dict[str, Any], reason: str, seconds: float, version: str) -> dict[str, Any]:
    return {
        **_manifest_fields(row), "fps": row.get("fps"), "num_frames": 0, "width": None, "height": None,
        "landmarks": [], "features": [], "pose_mask": [], "left_mask": [], "right_mask": [], "lips": [],
        "extractor_version": version, "feature_version": FEATURE_VERSION, "status": STATUS_FAILED,
        "error": reason, "note": None, "seconds": seconds, "mediapipe_seconds": 0.0,
    }


class SampleProcessor:
    """Turns one manifest row into one feature-dataset row. No Ray here.

    Videos go through a lazily built :class:`LandmarkExtractor` (so importing
    asl-signs landmark files never loads MediaPipe); ``.parquet`` paths are
    Kaggle ISLR landmark files.
    """

    def __init__(self, settings: ExtractConfig) -> None:
        self.settings = settings
        self._extractor: Any = None

    def _video(self, row: dict[str, Any]) -> tuple[Any, str]:
        from asl_ray.landmarks import LandmarkExtractor

        if self._extractor is None:
            s = self.settings
            self._extractor = LandmarkExtractor(
                s.frame_stride, s.max_frame_size, s.min_detection_confidence, s.min_tracking_confidence, s.lips
            )
        return self._extractor.extract(row["path"], int(row["frame_start"]), int(row["frame_end"]),
                                       str(row.get("clips") or "raw")), self._extractor.version

    def close(self) -> None:
        """Close the MediaPipe graph, if one was built (a graph left to the
        interpreter's exit is torn down, and logs, after the caller's output)."""
        if self._extractor is not None:
            self._extractor.close()
            self._extractor = None

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        from asl_ray.landmark_files import ASSUMED_ASPECT_NOTE, ISLR_VERSION, read_islr
        from asl_ray.landmarks import ExtractionError
        from asl_ray.pose_files import POSE_IMPORT_VERSION, read_pose_file

        t0 = time.perf_counter()
        version = _version_of(row, self.settings.lips)
        lips = None
        try:
            if version == ISLR_VERSION:
                pose, left, right, lips = read_islr(row["path"], self.settings.lips)
                fps = float(row.get("fps") or 0.0)
                width = height = None
                notes, mp_seconds = [ASSUMED_ASPECT_NOTE], 0.0
            elif version == POSE_IMPORT_VERSION:
                pose, left, right, fps, width, height = read_pose_file(row["path"])
                notes, mp_seconds = [], 0.0
            else:
                lm, version = self._video(row)
                pose, left, right, fps, lips = lm.pose, lm.left, lm.right, lm.fps, lm.lips
                width, height, notes, mp_seconds = lm.width, lm.height, lm.notes, lm.mediapipe_seconds
            vf = video_features(pose, left, right, fps, lips)
        except (ExtractionError, NoBodyFrame) as exc:
            return failed_row(row, str(exc), time.perf_counter() - t0, version)
        except Exception as exc:  # one bad video must never stop the run
            return failed_row(row, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0, version)
        return {
            **_manifest_fields(row), "fps": fps or None, "num_frames": int(vf.features.shape[0]),
            "width": width, "height": height,
            "landmarks": vf.landmarks.ravel(), "features": vf.features.ravel(),
            "pose_mask": vf.pose_mask, "left_mask": vf.left_mask, "right_mask": vf.right_mask,
            "lips": [] if vf.lips is None else vf.lips.ravel(),
            "extractor_version": version, "feature_version": FEATURE_VERSION, "status": STATUS_OK,
            "error": None, "note": "; ".join(notes) or None,
            "seconds": time.perf_counter() - t0, "mediapipe_seconds": mp_seconds,
        }


def _list_column(values: list[Any], dtype: pa.DataType) -> pa.ListArray:
    """Per-row numpy arrays -> one Arrow list column, without Python objects per element."""
    # None (a source that gives no such array, e.g. no lips) is an empty list.
    arrays = [np.asarray([] if v is None else v, dtype=dtype.to_pandas_dtype()).ravel() for v in values]
    offsets = np.zeros(len(arrays) + 1, np.int32)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype.to_pandas_dtype())
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=dtype))


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    columns: dict[str, Any] = {}
    for f in FEATURE_SCHEMA:
        values = [r.get(f.name) for r in rows]
        columns[f.name] = _list_column(values, f.type.value_type) if pa.types.is_list(f.type) else values
    return pa.Table.from_pydict(columns, schema=FEATURE_SCHEMA)


def batch_file_name(video_ids: list[str]) -> str:
    digest = hashlib.sha1("\n".join(sorted(video_ids)).encode()).hexdigest()[:20]
    return f"part-{digest}.parquet"


def _quiet_native_logs() -> None:
    """Send this worker's native stderr (MediaPipe/TFLite log a line per graph
    reset) to a file, so the driver's terminal shows progress, not noise.
    Python errors still reach the driver through Ray's task errors. The file
    goes beside the worker's own log in Ray's session log folder (where Ray
    sends a worker's stderr), so Ray's log cleanup removes it with the rest;
    in the system temp folder only when stderr is not a file."""
    import tempfile

    log = native_log_path(os.getpid(), _stderr_file(), Path(tempfile.gettempdir()))
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)


def _stderr_file() -> str | None:
    try:
        return os.readlink("/proc/self/fd/2")
    except OSError:  # not Linux
        return None


def native_log_path(pid: int, stderr_target: str | None, fallback: Path) -> Path:
    """Where an extraction worker's native log goes: the folder of the file its
    stderr is (Ray's worker-*.err), else ``fallback``."""
    folder = Path(stderr_target).parent if stderr_target and Path(stderr_target).is_file() else fallback
    return folder / f"asl-ray-extractor-{pid}.log"


def _node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id()) if ray.is_initialized() else os.uname().nodename


def _version_of(row: dict[str, Any], lips: bool = False) -> str:
    """The extractor a row goes through, by its file: Kaggle ISLR landmarks
    (.parquet), pose-format (.pose), else a video for MediaPipe."""
    from asl_ray.landmark_files import ISLR_VERSION
    from asl_ray.landmarks import EXTRACTOR_VERSION, LIPS_EXTRACTOR_VERSION
    from asl_ray.pose_files import POSE_IMPORT_VERSION

    suffix = Path(str(row["path"])).suffix.lower()
    video = LIPS_EXTRACTOR_VERSION if lips else EXTRACTOR_VERSION
    return {".parquet": ISLR_VERSION, ".pose": POSE_IMPORT_VERSION}.get(suffix, video)


class ExtractActor:
    """Ray Data actor: one extractor process (one MediaPipe graph) for many
    batches; a video that crashes it is retried a bounded number of times
    (``extractor_process.py``)."""

    def __init__(self, settings: dict[str, Any], out_dir: str) -> None:
        from asl_ray.extractor_process import ExtractorProcess

        _quiet_native_logs()
        self.extractor = ExtractorProcess(settings, ExtractConfig.model_validate(settings).max_retries)
        self.out_dir = out_dir

    def _one(self, row: dict[str, Any]) -> dict[str, Any]:
        t0 = time.perf_counter()
        out, why = self.extractor(row)
        return out if out is not None else failed_row(row, why, time.perf_counter() - t0, _version_of(row))

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = [self._one(r) for r in batch.to_pylist()]
        write_atomically(rows_to_table(rows), self.out_dir, batch_file_name([r["video_id"] for r in rows]))
        return pa.table({
            "video_id": [r["video_id"] for r in rows],
            "status": [r["status"] for r in rows],
            "error": [r["error"] for r in rows],
            "num_frames": pa.array([r["num_frames"] for r in rows], pa.int64()),
            "mediapipe_seconds": pa.array([r["mediapipe_seconds"] for r in rows], pa.float64()),
            "node": [_node_id()] * len(rows),
            "pid": [os.getpid()] * len(rows),
            # KiB on Linux: the peak memory so far of this worker plus that of
            # its extractor process (where MediaPipe lives).
            "max_rss_mb": [(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + self.extractor.peak_kib()) / 1024]
            * len(rows),
        })


def completed_ids(out_dir: str, retry_failed: bool = False) -> set[str]:
    """Videos with a row in the feature dataset, which a run skips: ok or failed,
    or only ok ones with ``retry_failed`` (a failed video's new row is written
    later, so it is the one that counts)."""
    if not Location.of(out_dir).exists():
        return set()
    return set(read_features(out_dir, columns=["video_id"], status=STATUS_OK if retry_failed else None)
               .column("video_id").to_pylist())


@dataclass
class ExtractSummary:
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    frames: int = 0
    seconds: float = 0.0
    mediapipe_seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    nodes: dict[str, int] = field(default_factory=dict)
    worker_peak_mb: dict[int, float] = field(default_factory=dict)  # pid -> peak RSS
    output_dir: str = ""

    @property
    def processed(self) -> int:
        return self.ok + self.failed

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (f"extract: {self.ok} ok, {self.failed} failed, {self.skipped} skipped (already done); "
                f"{self.frames} frames in {self.seconds:.1f}s = {self.frames_per_second:.1f} frames/s "
                f"-> {self.output_dir}")


def pending_rows(cfg: Config) -> tuple[list[dict[str, Any]], int]:
    """Manifest rows still to extract, and how many are already done."""
    table = build_manifest(cfg.data).table
    if cfg.extract.splits:
        table = table.filter(pc.is_in(table.column("split"), pa.array(cfg.extract.splits)))
    rows = [{**r, "clips": cfg.data.clips} for r in table.to_pylist()]
    done = completed_ids(cfg.extract.output_dir, cfg.extract.retry_failed)
    todo = [r for r in rows if r["video_id"] not in done]
    already = len(rows) - len(todo)
    if cfg.extract.limit is not None:
        todo = todo[: cfg.extract.limit]
    return todo, already


def run_extract(cfg: Config, echo: Callable[[str], None] = print) -> ExtractSummary:
    """Extract every pending video of the configured dataset with Ray Data."""
    import ray
    import ray.data
    from ray.data import ActorPoolStrategy

    from asl_ray.raylocal import init_ray

    cfg = resolve_paths(cfg)  # rows keep absolute paths: hashing, show and predict read them later
    s = cfg.extract
    out_dir = absolute(s.output_dir)
    Location.of(out_dir).makedirs()
    remove_leftovers(out_dir)
    todo, skipped = pending_rows(cfg)
    summary = ExtractSummary(skipped=skipped, output_dir=out_dir)
    stale = stale_summary(read_features(out_dir, columns=["extractor_version", "feature_version"], status=None))
    if stale:
        echo(f"extract: {sum(stale.values())} rows in {out_dir} come from another asl-ray version "
             f"({', '.join(f'{n} x {v}' for v, n in sorted(stale.items()))}); training refuses them: extract "
             "into a new folder (--set extract.output_dir=NEW)")
    if not todo:
        echo(f"extract: nothing to do ({skipped} videos already in {out_dir})")
        return summary
    init_ray(cfg.ray)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # our own progress lines below say more
    ds = ray.data.from_items(todo, override_num_blocks=max(1, -(-len(todo) // s.videos_per_file)))
    results = ds.map_batches(
        ExtractActor,
        fn_constructor_kwargs={"settings": s.model_dump(mode="json"), "out_dir": out_dir},
        batch_size=s.videos_per_file,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(size=s.num_actors),
        num_cpus=s.cpus_per_actor,
        resources=s.actor_resources or None,
    )
    echo(f"extract: {len(todo)} videos to do, {skipped} already done; {s.num_actors} actors -> {out_dir}")
    bar = Bar(len(todo), "extract", "video") if on_terminal() else None
    t0 = time.perf_counter()
    last = t0
    for batch in results.iter_batches(batch_size=None, batch_format="pyarrow"):
        assert isinstance(batch, pa.Table)
        for r in batch.to_pylist():
            if r["status"] == STATUS_OK:
                summary.ok += 1
                summary.frames += int(r["num_frames"])
                summary.mediapipe_seconds += float(r["mediapipe_seconds"])
            else:
                summary.failed += 1
                summary.failures.append((r["video_id"], r["error"]))
                if bar:
                    bar.write(f"extract: failed {r['video_id']}: {r['error']}")
            summary.nodes[r["node"]] = summary.nodes.get(r["node"], 0) + 1
            summary.worker_peak_mb[r["pid"]] = max(summary.worker_peak_mb.get(r["pid"], 0.0), r["max_rss_mb"])
        now = time.perf_counter()
        summary.seconds = now - t0
        if bar:
            bar.update(summary.processed, f"{summary.ok} ok, {summary.failed} failed, "
                                          f"{summary.frames_per_second:.1f} frames/s")
        elif now - last >= s.progress_seconds or summary.processed == len(todo):
            last = now
            rate = summary.processed / summary.seconds
            eta = (len(todo) - summary.processed) / rate if rate else float("nan")
            echo(f"extract: {summary.processed}/{len(todo)} videos ({summary.ok} ok, {summary.failed} failed), "
                 f"{summary.frames_per_second:.1f} frames/s, ETA {eta:.0f}s")
    summary.seconds = time.perf_counter() - t0
    if bar:
        bar.close()
    if len(summary.nodes) > 1:
        echo("extract: videos per node: " + ", ".join(f"{n[:12]} {c}" for n, c in summary.nodes.items()))
    for vid, reason in summary.failures if not bar else []:  # on a terminal, already said above the bar
        echo(f"extract: failed {vid}: {reason}")
    echo(summary.line())
    return summary
