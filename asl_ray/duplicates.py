"""Byte-identical samples: content hashes, duplicate groups, and what training drops.

WLASL holds the same video under different ids, sometimes in different splits
(a val video the model has trained on inflates val accuracy) and sometimes
under different glosses (the same input with two labels). Every manifest and
feature row carries a hash of its source file's bytes; rows with the same hash
form a duplicate group. Training then drops, unless ``data.duplicates: keep``:

* every val/test row whose content also appears in train (``leak``): it would
  be scored on a sample the model was trained on;
* every row of a group whose glosses disagree (``conflict``): no label is right.

Same-gloss copies inside one split stay (they weigh a sample twice, nothing
worse). Plain pyarrow and hashlib: tested without Ray.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

HASH_CHARS = 32  # 128 bits of SHA-256: no accidental collision among any number of videos we will see


def file_hash(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex, first 128 bits)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:HASH_CHARS]


def file_hashes(paths: list[str], threads: int = 8) -> list[str | None]:
    """Hashes of many files (None where a file cannot be read). Threads overlap
    the reads; hashlib releases the GIL on large buffers."""
    def one(p: str) -> str | None:
        try:
            return file_hash(p)
        except OSError:
            return None

    # Only files that exist go to the pool: a pool task costs ~0.1 ms of
    # bookkeeping, 9 s for 100k rows whose sources are not on this machine.
    present = [i for i, p in enumerate(paths) if os.path.isfile(p)]
    out: list[str | None] = [None] * len(paths)
    with ThreadPoolExecutor(threads) as pool:
        for i, h in zip(present, pool.map(one, [paths[i] for i in present]), strict=True):
            out[i] = h
    return out


@dataclass(frozen=True)
class Member:
    video_id: str
    gloss: str
    split: str


@dataclass(frozen=True)
class DuplicateGroup:
    """Rows whose source files are byte-identical."""

    content_hash: str
    members: tuple[Member, ...]

    @property
    def conflicting(self) -> bool:
        return len({m.gloss for m in self.members}) > 1

    @property
    def cross_split(self) -> bool:
        return len({m.split for m in self.members}) > 1

    def line(self) -> str:
        marks = [m for m, on in (("conflicting glosses", self.conflicting), ("crosses splits", self.cross_split))
                 if on]
        who = ", ".join(f"{m.split} {m.video_id} {m.gloss!r}" for m in self.members)
        return f"{who}" + (f"  [{'; '.join(marks)}]" if marks else "")


def duplicate_groups(table: pa.Table) -> list[DuplicateGroup]:
    """Groups of two or more rows with the same ``content_hash`` (rows without a
    hash are in none), in a stable order: by their first member's video id."""
    cols = table.select(["video_id", "gloss", "split", "content_hash"]).to_pydict()
    by_hash: dict[str, list[Member]] = defaultdict(list)
    for vid, gloss, split, h in zip(cols["video_id"], cols["gloss"], cols["split"], cols["content_hash"],
                                    strict=True):
        if h:
            by_hash[h].append(Member(vid, gloss, split))
    groups = [DuplicateGroup(h, tuple(sorted(ms, key=lambda m: (m.split != "train", m.split, m.video_id))))
              for h, ms in by_hash.items() if len(ms) > 1]
    return sorted(groups, key=lambda g: g.members[0].video_id)


@dataclass
class DropPlan:
    """The rows training leaves out, each with its reason, and what was not checked."""

    reasons: dict[str, str] = field(default_factory=dict)  # video_id -> "leak" | "conflict"
    groups: int = 0
    unhashed: int = 0

    @property
    def ids(self) -> list[str]:
        return sorted(self.reasons)

    def count(self, reason: str) -> int:
        return sum(1 for r in self.reasons.values() if r == reason)

    def params(self) -> dict[str, int]:
        """For the run's MLflow params."""
        return {"duplicate_groups": self.groups, "duplicates_dropped_leak": self.count("leak"),
                "duplicates_dropped_conflict": self.count("conflict"), "rows_without_hash": self.unhashed}

    def line(self) -> str:
        if not self.reasons:
            return f"duplicates: {self.groups} groups, nothing to drop"
        leak = sorted(v for v, r in self.reasons.items() if r == "leak")
        conflict = sorted(v for v, r in self.reasons.items() if r == "conflict")
        parts = []
        if leak:
            parts.append(f"{len(leak)} val/test rows whose video is also in train ({', '.join(leak)})")
        if conflict:
            parts.append(f"{len(conflict)} rows of groups with conflicting glosses ({', '.join(conflict)})")
        return f"duplicates: leaving out {' and '.join(parts)}; data.duplicates=keep keeps them"


def drop_plan(table: pa.Table) -> DropPlan:
    """What training drops from a table with video_id, gloss, split, content_hash."""
    groups = duplicate_groups(table)
    plan = DropPlan(groups=len(groups), unhashed=table.column("content_hash").null_count)
    for g in groups:
        if g.conflicting:
            plan.reasons.update({m.video_id: "conflict" for m in g.members})
        elif any(m.split == "train" for m in g.members):
            plan.reasons.update({m.video_id: "leak" for m in g.members if m.split != "train"})
    return plan


def fill_hashes(table: pa.Table) -> pa.Table:
    """Hashes for rows that have none (feature files written before rows carried
    one), from their source files where this machine can read them."""
    hashes = table.column("content_hash").to_pylist()
    missing = [i for i, h in enumerate(hashes) if h is None]
    if not missing:
        return table
    paths = table.column("path").to_pylist()
    for i, h in zip(missing, file_hashes([paths[i] for i in missing]), strict=True):
        hashes[i] = h
    at = table.schema.get_field_index("content_hash")
    return table.set_column(at, table.schema.field(at), pa.array(hashes, pa.string()))


def usable_rows(table: pa.Table, mode: str) -> tuple[pa.Table, DropPlan]:
    """``table`` (video_id, gloss, split, path, content_hash, ...) without the rows
    that ``data.duplicates`` = ``mode`` leaves out, and the plan that says which."""
    if mode == "keep":
        return table, DropPlan()
    plan = drop_plan(fill_hashes(table))
    if not plan.reasons:
        return table, plan
    import pyarrow.compute as pc

    return table.filter(pc.invert(pc.is_in(table.column("video_id"), pa.array(plan.ids, pa.string())))), plan
