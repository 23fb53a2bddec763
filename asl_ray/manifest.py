"""Dataset manifests: one pyarrow row per sample, whatever the source format.

Both WLASL (a json index plus a folder of ``<video_id>.mp4``) and the Kaggle
ISLR "asl-signs" layout (``train.csv`` plus per-sequence landmark Parquet files)
become the same table (:data:`MANIFEST_SCHEMA`), so extraction and training
never look at the source format again.

WLASL downloads are always incomplete (videos vanish from the web), so a
listed video that is not on disk is counted and reported, never an error.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from asl_ray.config import DataConfig
from asl_ray.duplicates import DuplicateGroup, duplicate_groups, file_hashes
from asl_ray.errors import UserError

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("gloss", pa.string(), nullable=False),
        # WLASL: the official class id (line of wlasl_class_list.txt), stable
        # across subsets. asl-signs: index of the sign in sorted order.
        pa.field("label", pa.int32(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        # 1-based inclusive frame bounds; -1 = to the end of the video.
        pa.field("frame_start", pa.int32(), nullable=False),
        pa.field("frame_end", pa.int32(), nullable=False),
        pa.field("fps", pa.float32()),
        pa.field("signer_id", pa.string()),
        pa.field("source", pa.string()),
        pa.field("path", pa.string(), nullable=False),
        # Hash of the file's bytes (duplicates.py): the same video under two ids
        # has the same hash. Null where not computed (asl-signs: its importer
        # hashes each file as it reads it, which costs the manifest nothing).
        pa.field("content_hash", pa.string()),
    ]
)


VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


@dataclass
class Manifest:
    """Present samples as a table, plus what was listed but not found."""

    table: pa.Table
    missing: list[str] = field(default_factory=list)
    kind: str = "wlasl"

    def split_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.table.column("split").to_pylist()).items()))

    def gloss_counts(self) -> dict[str, int]:
        return dict(Counter(self.table.column("gloss").to_pylist()).most_common())

    def duplicates(self) -> list[DuplicateGroup]:
        return duplicate_groups(self.table)


def _with_hashes(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows -> manifest table, each video's bytes hashed (WLASL100's 784 videos:
    about a second)."""
    for row, h in zip(rows, file_hashes([r["path"] for r in rows]), strict=True):
        row["content_hash"] = h
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def _subset_ids(wlasl_json: Path, subset: int) -> set[str]:
    nslt = wlasl_json.parent / f"nslt_{subset}.json"
    data = _read_json(nslt)
    if not isinstance(data, dict):
        raise UserError(f"{nslt}: expected a mapping video_id -> {{subset, action}}")
    return set(data)


def wlasl_manifest(cfg: DataConfig) -> Manifest:
    """WLASL json (+ optional official subset / top-K glosses) -> manifest."""
    assert cfg.wlasl_json is not None
    index = _read_json(cfg.wlasl_json)
    if not isinstance(index, list):
        raise UserError(f"{cfg.wlasl_json}: expected a list of {{gloss, instances}} entries")
    keep = _subset_ids(cfg.wlasl_json, cfg.subset) if cfg.subset else None
    videos_dir = cfg.videos_dir
    if videos_dir is not None and not videos_dir.is_dir():
        raise UserError(f"data.videos_dir={str(videos_dir)!r}: not a folder")
    on_disk = {p.stem for p in videos_dir.glob("*.mp4")} if videos_dir else None

    rows: list[dict[str, Any]] = []
    missing: list[str] = []
    for label, entry in enumerate(index):
        try:
            gloss, instances = entry["gloss"], entry["instances"]
        except (TypeError, KeyError):
            raise UserError(f"{cfg.wlasl_json}: entry {label} lacks 'gloss' or 'instances'") from None
        for inst in instances:
            vid = str(inst["video_id"])
            if keep is not None and vid not in keep:
                continue
            if on_disk is not None and vid not in on_disk:
                missing.append(vid)
                continue
            path = (videos_dir / f"{vid}.mp4") if videos_dir else Path(f"{vid}.mp4")
            rows.append(
                {
                    "video_id": vid,
                    "gloss": gloss,
                    "label": label,
                    "split": inst["split"],
                    "frame_start": int(inst.get("frame_start", 1)),
                    "frame_end": int(inst.get("frame_end", -1)),
                    "fps": float(inst["fps"]) if inst.get("fps") else None,
                    "signer_id": str(inst.get("signer_id", "")),
                    "source": inst.get("source"),
                    "path": str(path),
                }
            )
    if cfg.top_k_glosses:
        rows, missing = _top_k(rows, missing, index, cfg.top_k_glosses)
    return Manifest(_with_hashes(rows), sorted(missing), "wlasl")


def _top_k(
    rows: list[dict[str, Any]], missing: list[str], index: list[dict[str, Any]], k: int
) -> tuple[list[dict[str, Any]], list[str]]:
    # Most present videos first; ties go to the lower official class id so the
    # choice is deterministic.
    counts = Counter(r["label"] for r in rows)
    chosen = {lab for lab, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]}
    label_of = {str(i["video_id"]): lab for lab, e in enumerate(index) for i in e["instances"]}
    return [r for r in rows if r["label"] in chosen], [v for v in missing if label_of.get(v) in chosen]


def _participant_split(participant: str, val_fraction: float, seed: int) -> str:
    # A hash of the participant id, not a random draw, so a participant's
    # sequences all land on one side and the split never changes between runs.
    digest = hashlib.sha256(f"{seed}:{participant}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


def asl_signs_manifest(cfg: DataConfig) -> Manifest:
    """Kaggle ISLR ``train.csv`` -> manifest, split by participant."""
    assert cfg.asl_signs_dir is not None
    root = cfg.asl_signs_dir
    csv_path = root / "train.csv"
    try:
        with csv_path.open(newline="") as fh:
            records = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise UserError(f"{csv_path}: file not found (data.asl_signs_dir must hold train.csv)") from None
    need = {"path", "participant_id", "sequence_id", "sign"}
    if records and not need <= set(records[0]):
        raise UserError(f"{csv_path}: columns must include {sorted(need)}")
    signs = {s: i for i, s in enumerate(sorted({r["sign"] for r in records}))}
    split_of: dict[str, str] = {}
    rows, missing = [], []
    for r in records:
        path = root / r["path"]
        if not path.is_file():
            missing.append(r["sequence_id"])
            continue
        rows.append(
            {
                "video_id": r["sequence_id"],
                "gloss": r["sign"],
                "label": signs[r["sign"]],
                "split": split_of.setdefault(r["participant_id"], _participant_split(
                    r["participant_id"], cfg.val_fraction, cfg.split_seed)),
                "frame_start": 1,
                "frame_end": -1,
                "fps": None,
                "signer_id": r["participant_id"],
                "source": "asl-signs",
                "path": str(path),
            }
        )
    if cfg.top_k_glosses:
        counts = Counter(r["gloss"] for r in rows)
        chosen = {g for g, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: cfg.top_k_glosses]}
        rows = [r for r in rows if r["gloss"] in chosen]
    return Manifest(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), sorted(missing), "asl-signs")


def folder_manifest(cfg: DataConfig) -> Manifest:
    """Every video file under ``videos_dir`` (by extension): gloss = its
    sub-folder's name, or "unknown" for files at the top. A file with a video
    extension that holds no video becomes a failed row at extraction."""
    assert cfg.videos_dir is not None
    root = cfg.videos_dir
    if not root.is_dir():
        raise UserError(f"data.videos_dir={str(root)!r}: not a folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    gloss_of = {p: (p.parent.name if p.parent != root else "unknown") for p in files}
    glosses = sorted(set(gloss_of.values()))
    rows = [
        {"video_id": str(p.relative_to(root).with_suffix("")), "gloss": gloss_of[p],
         "label": glosses.index(gloss_of[p]), "split": cfg.folder_split, "frame_start": 1, "frame_end": -1,
         "fps": None, "signer_id": None, "source": "folder", "path": str(p)}
        for p in files
    ]
    return Manifest(_with_hashes(rows), [], "folder")


def pose_manifest(cfg: DataConfig) -> Manifest:
    """A labels CSV (``path,gloss,split[,signer]``) of ``.pose`` files -> manifest;
    listed files that are absent are counted as missing."""
    assert cfg.pose_labels is not None
    try:
        with cfg.pose_labels.open(newline="") as fh:
            records = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise UserError(f"{cfg.pose_labels}: file not found (data.pose_labels)") from None
    need = {"path", "gloss", "split"}
    if records and not need <= set(records[0]):
        raise UserError(f"{cfg.pose_labels}: columns must include {sorted(need)}")
    root = cfg.pose_labels.parent
    glosses = {g: i for i, g in enumerate(sorted({r["gloss"] for r in records}))}
    rows, missing = [], []
    for r in records:
        path = root / r["path"]
        vid = str(Path(r["path"]).with_suffix(""))
        if not path.is_file():
            missing.append(vid)
            continue
        rows.append({"video_id": vid, "gloss": r["gloss"], "label": glosses[r["gloss"]], "split": r["split"],
                     "frame_start": 1, "frame_end": -1, "fps": None, "signer_id": r.get("signer") or None,
                     "source": "pose", "path": str(path)})
    return Manifest(_with_hashes(rows), sorted(missing), "pose")


def build_manifest(cfg: DataConfig) -> Manifest:
    if cfg.source == "folder":
        return folder_manifest(cfg)
    if cfg.source == "pose":
        return pose_manifest(cfg)
    return wlasl_manifest(cfg) if cfg.source == "wlasl" else asl_signs_manifest(cfg)
