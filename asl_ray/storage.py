"""Reading and writing the Parquet feature dataset, local path or URI alike. No Ray.

Every reader and writer of ``extract.output_dir`` goes through here, so no
other module asks whether a location "contains ://": ``pyarrow.fs`` resolves
a local folder and an ``s3://`` / ``gs://`` URI to a filesystem and a path,
and the same code lists, reads and writes both.

Run folders (checkpoints, plots, ``best_checkpoint.txt``, tune results) go
through the small helpers at the end (``join``, ``read_text``, ``write_text``,
``put_file``, ``local_folder``): on a cluster they are on shared storage that
the worker nodes reach by URI, never a folder of the driver's disk.

A feature dataset is a folder of ``part-*.parquet`` files. A writer puts a
file under a temporary name and renames it into place (on object stores a
put is already all-or-nothing), so readers only ever see complete files;
temporary leftovers of a killed writer are ignored, and removed by the next
writer on a local disk.

One video, one row: a video can have rows in two files (a batch retried after
its file was written lands in the same file, but ``--retry-failed`` and a
race between two runs write new files). The row that counts is the one
written last, by the write time each writer stores in its file's metadata
(``asl_ray.written_ns``); files without one (older asl-ray) count as written
before any that has one, in name order among themselves.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from asl_ray.errors import UserError
from asl_ray.schema import FEATURE_SCHEMA, STATUS_OK

TMP_MARK = ".tmp-"
WRITTEN_KEY = b"asl_ray.written_ns"


def is_uri(location: str) -> bool:
    return "://" in location


def absolute(location: str) -> str:
    """A local path made absolute (workers do not share the driver's working folder); URIs as given."""
    return location if is_uri(location) else str(Path(location).resolve())


@dataclass(frozen=True)
class Location:
    """A folder on some filesystem: ``fs`` plus the path that ``fs`` understands."""

    fs: pafs.FileSystem
    path: str
    original: str

    @classmethod
    def of(cls, location: str) -> Location:
        if is_uri(location):
            try:
                fs, path = pafs.FileSystem.from_uri(location)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
                raise UserError(f"{location}: not a storage location pyarrow can open ({exc})") from None
            return cls(fs, path.rstrip("/") or "/", location)
        return cls(pafs.LocalFileSystem(), str(Path(location).resolve()), location)

    def child(self, name: str) -> str:
        return f"{self.path.rstrip('/')}/{name}"

    def uri_of(self, path: str) -> str:
        """A path of this filesystem as the user would write it (URI or local path).

        ``s3://bucket/a?endpoint_override=...`` has the fs path ``bucket/a``:
        the scheme goes in front and the query (connection options) stays at
        the end, so the result opens the same filesystem."""
        if not is_uri(self.original):
            return path
        scheme, rest = self.original.split("://", 1)
        query = rest.split("?", 1)[1] if "?" in rest else ""
        if scheme in ("s3", "gs", "gcs", "file"):
            base = f"{scheme}://{path}"
        else:  # e.g. hdfs://host:port/path: keep the original's authority
            head = self.original.split("?", 1)[0].rstrip("/")
            base = f"{head}/{path[len(self.path):].lstrip('/')}".rstrip("/")
        return f"{base}?{query}" if query else base

    def makedirs(self) -> None:
        self.fs.create_dir(self.path, recursive=True)

    def exists(self) -> bool:
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound


def parquet_files(location: str) -> tuple[Location, list[str]]:
    """The complete Parquet files of a feature dataset, in name order (paths of ``fs``)."""
    loc = Location.of(location)
    infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True))
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet")
                   and TMP_MARK not in i.base_name)
    return loc, files


def remove_leftovers(location: str) -> int:
    """Delete temporary files of a writer that was killed mid-write; how many."""
    loc = Location.of(location)
    infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True))
    leftovers = [i.path for i in infos if i.type == pafs.FileType.File and TMP_MARK in i.base_name]
    for path in leftovers:
        loc.fs.delete_file(path)
    return len(leftovers)


def write_atomically(table: pa.Table, location: str, name: str) -> str:
    """Write ``table`` as ``location/name``: complete or not at all."""
    loc = Location.of(location)
    final = loc.child(name)
    meta = dict(table.schema.metadata or {})
    meta[WRITTEN_KEY] = str(time.time_ns()).encode()
    table = table.replace_schema_metadata(meta)
    if is_uri(location):  # object stores: a put is already all-or-nothing
        pq.write_table(table, final, filesystem=loc.fs)
        return loc.uri_of(final)
    tmp = loc.child(f"{name}{TMP_MARK}{uuid.uuid4().hex[:8]}")
    pq.write_table(table, tmp, filesystem=loc.fs)
    loc.fs.move(tmp, final)
    return final


def _read_file(loc: Location, path: str, columns: list[str] | None) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns, schema=FEATURE_SCHEMA, filesystem=loc.fs)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"{loc.uri_of(path)}: not a readable feature-dataset Parquet file "
                        f"({str(exc).splitlines()[0][:200]}); delete it and re-run `asl-ray extract`") from None


def read_features(location: str, columns: list[str] | None = None, status: str | None = STATUS_OK) -> pa.Table:
    """The feature dataset as one table, one row per video (the later file wins).

    Columns not asked for are never read: the ``landmarks`` lists are most of
    the bytes, and metadata passes (vocabulary, splits) skip them.
    """
    loc, files = parquet_files(location)
    wanted = None if columns is None else list(dict.fromkeys([*columns, "video_id", "status"]))
    if not files:
        empty = FEATURE_SCHEMA.empty_table()
        return empty if columns is None else empty.select(columns)
    parts = [_read_file(loc, f, wanted) for f in files]
    table = pa.concat_tables(parts)
    if pc.count_distinct(table.column("video_id")).as_py() < table.num_rows:
        # Before the status filter: a failed row written after an ok one wins.
        table = _latest_rows(table, loc, files, [p.num_rows for p in parts])
    if status is not None:
        table = table.filter(pc.equal(table.column("status"), status))
    return table if columns is None else table.select(columns)


def written_ns(loc: Location, path: str) -> int:
    """When a feature file was written (0 for files from before asl-ray stored it)."""
    meta = pq.read_schema(path, filesystem=loc.fs).metadata or {}
    try:
        return int(meta.get(WRITTEN_KEY, b"0"))
    except ValueError:
        return 0


def _latest_rows(table: pa.Table, loc: Location, files: list[str], counts: list[int]) -> pa.Table:
    """One row per video_id: the one from the file written last."""
    order = {f: (written_ns(loc, f), i) for i, f in enumerate(files)}
    rank = [order[f] for f, n in zip(files, counts, strict=True) for _ in range(n)]
    best: dict[str, int] = {}
    for i, vid in enumerate(table.column("video_id").to_pylist()):
        if vid not in best or rank[i] > rank[best[vid]]:
            best[vid] = i
    return table.take(sorted(best.values()))


def latest_file_rows(location: str, columns: list[str], status: str | None = STATUS_OK) -> Iterator[pa.Table]:
    """The rows that count (as :func:`read_features` has them), one file at a
    time: bounded memory for passes over every landmark."""
    loc, files = parquet_files(location)
    keeper = repeated_rows(location)
    wanted = list(dict.fromkeys([*columns, "video_id", "status"]))
    for f in files:
        table = _read_file(loc, f, wanted)
        if keeper:
            ids = table.column("video_id").to_pylist()
            table = table.filter(pa.array([keeper.get(v, f) == f for v in ids]))
        if status is not None:
            table = table.filter(pc.equal(table.column("status"), status))
        yield table.select(columns)


def repeated_rows(location: str) -> dict[str, str]:
    """video_id -> the file whose row counts (the one written last), for videos
    present in more than one file."""
    loc, files = parquet_files(location)
    found: dict[str, list[str]] = {}
    for f in files:
        for vid in _read_file(loc, f, ["video_id"]).column("video_id").to_pylist():
            found.setdefault(vid, []).append(f)
    repeated = {v: fs for v, fs in found.items() if len(fs) > 1}
    order: dict[str, tuple[int, int]] = {}
    for fs in repeated.values():
        for f in fs:
            order.setdefault(f, (written_ns(loc, f), files.index(f)))
    return {v: max(fs, key=order.__getitem__) for v, fs in repeated.items()}


def scan(location: str, columns: list[str], filter: pc.Expression | None = None,
         batch_rows: int = 1024) -> Iterator[pa.RecordBatch]:
    """Record batches of the chosen columns, one file at a time (bounded memory);
    a file that cannot be read is named in a one-line error."""
    loc, files = parquet_files(location)
    for f in files:
        try:
            frag = pads.dataset(f, schema=FEATURE_SCHEMA, format="parquet", filesystem=loc.fs)
            yield from frag.to_batches(columns=columns, filter=filter, batch_size=batch_rows)
        except (pa.ArrowInvalid, OSError) as exc:
            raise UserError(f"{loc.uri_of(f)}: not a readable feature-dataset Parquet file "
                            f"({str(exc).splitlines()[0][:200]}); delete it and re-run `asl-ray extract`") from None


# -- run folders: checkpoints, plots, markers -------------------------------


def join(location: str, *names: str) -> str:
    """``location/names...`` for a local folder or a URI (``s3://b/runs`` + ``tune``
    is ``s3://b/runs/tune``, never a local folder named ``s3:``)."""
    if not is_uri(location):
        return str(Path(location).resolve().joinpath(*names))
    head, _, query = location.partition("?")  # ?options (endpoint, region) stay at the end
    joined = "/".join([head.rstrip("/"), *(n.strip("/") for n in names)])
    return f"{joined}?{query}" if query else joined


def file_type(location: str) -> pafs.FileType:
    loc = Location.of(location)
    return loc.fs.get_file_info(loc.path).type


def is_file(location: str) -> bool:
    return file_type(location) == pafs.FileType.File


def is_dir(location: str) -> bool:
    return file_type(location) == pafs.FileType.Directory


def read_text(location: str) -> str | None:
    """A small text file's contents, or None when there is none."""
    loc = Location.of(location)
    try:
        with loc.fs.open_input_stream(loc.path) as f:
            return f.read().decode()
    except (FileNotFoundError, pa.ArrowInvalid):
        return None
    except OSError as exc:
        if loc.fs.get_file_info(loc.path).type == pafs.FileType.NotFound:
            return None
        raise UserError(f"{location}: cannot read ({str(exc).splitlines()[0][:200]})") from None


def write_text(location: str, text: str) -> str:
    """Write a small text file (folders made as needed); its location."""
    loc = Location.of(location)
    parent = loc.path.rsplit("/", 1)[0]
    if parent:
        loc.fs.create_dir(parent, recursive=True)
    with loc.fs.open_output_stream(loc.path) as f:
        f.write(text.encode())
    return location


def put_file(local: Path | str, location: str) -> str:
    """Copy a local file to ``location`` (a file path or URI); its location."""
    loc = Location.of(location)
    parent = loc.path.rsplit("/", 1)[0]
    if parent:
        loc.fs.create_dir(parent, recursive=True)
    pafs.copy_files(str(Path(local).resolve()), loc.path, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=loc.fs)
    return location


def subfolders(location: str, prefix: str = "") -> list[str]:
    """The folders directly inside ``location`` whose names start with ``prefix``,
    as locations (URIs stay URIs)."""
    loc = Location.of(location)
    infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True))
    return sorted(loc.uri_of(i.path) for i in infos
                  if i.type == pafs.FileType.Directory and i.base_name.startswith(prefix))


def local_folder(location: str) -> Path:
    """A folder to read with ``open``: a local folder as is; a URI folder
    downloaded once into a cache under the temp folder. Callers use it for
    checkpoint folders, which are written once and never change."""
    if not is_uri(location):
        return Path(location).resolve()
    import hashlib
    import shutil
    import tempfile

    loc = Location.of(location)
    if loc.fs.get_file_info(loc.path).type != pafs.FileType.Directory:
        raise UserError(f"{location}: no such folder")
    key = hashlib.sha256(location.encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / "asl-ray-cache" / key
    if cache.is_dir():
        return cache
    staging = cache.with_name(f"{key}{TMP_MARK}{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    pafs.copy_files(loc.path, str(staging), source_filesystem=loc.fs, destination_filesystem=pafs.LocalFileSystem())
    try:
        staging.rename(cache)
    except OSError:  # another process cached it first
        shutil.rmtree(staging, ignore_errors=True)
    return cache
