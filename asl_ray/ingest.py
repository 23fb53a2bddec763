"""Ray Data edge of training: the feature dataset as Ray Datasets that Ray Train shards.

The driver never loads the samples. It reads the metadata columns to fix the
vocabulary, fits the standardiser in one streaming Ray Data pass (per-batch
partial sums added up), and hands ``TorchTrainer`` two lazy datasets:

* ``train``: the Parquet files in a fresh order every epoch
  (``FileShuffleConfig``, reseeded per execution), each row given a random
  number by ``ray.data.expressions.random(seed=train.seed)`` (new values every
  execution, the same values for the same seed), then ``map_batches`` builds
  the model inputs on Ray Data's CPU workers: the row's random number seeds
  its augmentation, so every epoch is augmented afresh and a run is
  repeatable under ``train.seed``;
* ``val``: the val rows, inputs built the same way without augmentation.
  When val has at most ``train.cache_val_rows`` sequences they are built once
  into the object store by a :class:`ValCache` actor, at the first
  evaluation (nothing waits for them before the first step), and each rank
  reads its part from there; a larger val is rebuilt and streamed at every
  evaluation.

Ray Train splits train into equal shards with ``streaming_split`` (DDP needs
the same number of steps on every rank); val is split into parts that
together hold every row once (a streamed val by ``ShardedIngest``, a cached
one by ``ValCache``), so each rank scores only its part and the metrics are
added up. Blocks live in the object store, one copy per node,
and a worker holds only the batches it is about to train on.

Plain numpy does the work (``prepare_table`` here, ``shard_batches`` in
``ingest_worker.py``, the training worker's side), so it is tested without a
cluster. This module imports no torch: Ray Data's CPU workers import it to
run the map functions, and the actors that plan and split the datasets
(Ray Data's ``SplitCoordinator``, Ray Train's ``DatasetManager``, our
``ValCache``) import it too; with torch each of them took ~3 CPU-s more to
start and ~190 MB more memory (measured 2026-11-29, 2-core machine).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from asl_ray.config import AugmentConfig, Config, FeaturesConfig, SentencesConfig
from asl_ray.continuous.sentences import group_sizes, join_clips, sentence_plan
from asl_ray.inputs import Standardizer, StandardizerSums, build_inputs, build_inputs_many, input_size, resample
from asl_ray.samples import landmark_views, prepare_landmarks
from asl_ray.schema import STATUS_OK
from asl_ray.storage import parquet_files, repeated_rows
from asl_ray.vocab import Vocabulary

READ_COLUMNS = ["video_id", "gloss", "split", "status", "fps", "num_frames", "landmarks"]
SEED_COLUMN = "aug_seed"


def _rows(table: pa.Table, vocab: Vocabulary, features: FeaturesConfig
          ) -> tuple[list[np.ndarray], np.ndarray, list[Any], np.ndarray]:
    """Landmark views, vocabulary ids, fps and (if present) augmentation seeds of
    the rows whose gloss is in the vocabulary."""
    labels = np.array([vocab.id_of(g) or 0 for g in table.column("gloss").to_pylist()], np.int64)
    keep = np.flatnonzero(labels > 0)
    all_views = landmark_views(table, features)
    views = [all_views[i] for i in keep]
    fps = table.column("fps").to_pylist()
    seeds = (table.column(SEED_COLUMN).to_numpy() if SEED_COLUMN in table.column_names
             else np.zeros(table.num_rows))
    return views, labels[keep], [fps[i] for i in keep], seeds[keep]


def prepare_table(table: pa.Table, features: FeaturesConfig, standardizer: Standardizer, vocab: Vocabulary,
                  augment_cfg: AugmentConfig | None = None, seed: int = 0,
                  sentences: SentencesConfig | None = None) -> pa.Table:
    """Feature rows -> model-input rows ``x`` (T·F float32, row-major), ``frames`` (T),
    ``label``, ``targets`` (gloss ids) and ``spans`` (their [start, end) frames, flat).

    Rows outside the vocabulary are dropped. With ``augment_cfg`` each row's
    augmentation draws from a generator seeded by ``seed`` and the row's
    ``aug_seed`` value. With ``sentences.share`` > 0 that share of the rows is
    joined into sentences of 2-5 clips (label 0, several targets); the batch
    comes from one split, so a sentence never mixes splits.
    """
    if sentences is not None and sentences.share > 0 and "split" in table.column_names:
        splits = set(table.column("split").to_pylist())
        if len(splits) > 1:
            raise ValueError(f"sentences must come from one split, got rows of {sorted(splits)}")
    views, labels, fps, seeds = _rows(table, vocab, features)
    rngs = [np.random.default_rng([seed, int(u * 2**53)]) if augment_cfg is not None else None for u in seeds]
    groups: list[list[int]] = [[i] for i in range(len(views))]
    if sentences is not None and sentences.share > 0 and len(views) >= sentences.min_clips:
        rng = np.random.default_rng([seed, *(int(u * 2**53) for u in seeds[:4])])
        chosen = rng.permutation(len(views))[: int(round(sentences.share * len(views)))]
        sizes = group_sizes(len(chosen), rng, sentences.min_clips, sentences.max_clips)
        joined = {int(i) for i in chosen[: sum(sizes)]}
        groups = [[i] for i in range(len(views)) if i not in joined]
        at = 0
        for k in sizes:
            groups.append([int(i) for i in chosen[at:at + k]])
            at += k
    # Single clips: landmarks one by one (augmentation draws per clip), inputs
    # for all of them in one pass (build_inputs_many: 2.3-2.6x less CPU).
    singles = [g[0] for g in groups if len(g) == 1]
    built = dict(zip(singles, build_inputs_many(
        [prepare_landmarks(views[i], fps[i], features, augment_cfg, rngs[i]) for i in singles], features.inputs),
        strict=True))
    xs, out_labels, targets, spans = [], [], [], []
    for group in groups:
        if len(group) == 1:
            i = group[0]
            xs.append(standardizer(built[i]))
            out_labels.append(int(labels[i]))
            targets.append([int(labels[i])])
            spans.append([0, len(xs[-1])])
            continue
        assert sentences is not None
        clips = [prepare_landmarks(views[i], fps[i], features, augment_cfg, rngs[i]) for i in group]
        x, clip_spans = sentence_inputs(clips, features, standardizer, sentences)
        xs.append(x)
        out_labels.append(0)
        targets.append([int(labels[i]) for i in group])
        spans.append([v for sp in clip_spans for v in sp])
    return _input_rows(xs, out_labels, targets, spans, _width(features))


def sentence_inputs(clips: Sequence[tuple[np.ndarray, float | None]], features: FeaturesConfig,
                    standardizer: Standardizer, s: SentencesConfig, cap: int | None = None
                    ) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Model inputs of clips joined into one sentence, and the clips' spans in
    it; resampled to at most ``cap`` frames (default: the positions of a model
    trained with these sentences, checkpoint.max_positions)."""
    lm, clip_spans = join_clips(clips, s.fps, s.gap, s.keep_rest)
    fps, cap = s.fps, cap or features.max_frames * s.max_clips
    if len(lm) > cap:
        scale = (cap - 1) / (len(lm) - 1)
        lm = lm[np.round(np.linspace(0, len(lm) - 1, cap)).astype(int)]
        fps *= scale
        clip_spans = [(int(a * scale), max(int(a * scale) + 1, int(round(b * scale)))) for a, b in clip_spans]
    return standardizer(build_inputs(lm, fps, features.inputs)), clip_spans


def sentence_table(table: pa.Table, features: FeaturesConfig, standardizer: Standardizer, vocab: Vocabulary,
                   s: SentencesConfig, count: int) -> pa.Table:
    """``count`` seeded sentences (``s.val_seed``) over the rows of ``table``, one split's clips."""
    splits = set(table.column("split").to_pylist()) if "split" in table.column_names else set()
    if len(splits) > 1:
        raise ValueError(f"sentences must come from one split, got rows of {sorted(splits)}")
    views, labels, fps, _ = _rows(table, vocab, features)
    plan = sentence_plan(len(views), count, s.val_seed, s.min_clips, s.max_clips)
    xs, targets, spans = [], [], []
    for group in plan:
        clips = [prepare_landmarks(views[i], fps[i], features) for i in group]
        x, clip_spans = sentence_inputs(clips, features, standardizer, s)
        xs.append(x)
        targets.append([int(labels[i]) for i in group])
        spans.append([v for sp in clip_spans for v in sp])
    return _input_rows(xs, [0] * len(xs), targets, spans, _width(features))


def _input_rows(xs: list[np.ndarray], labels: list[int], targets: list[list[int]], spans: list[list[int]],
                width: int) -> pa.Table:
    frames = np.array([len(x) for x in xs], np.int64)
    offsets = np.zeros(len(xs) + 1, np.int64)
    np.cumsum([x.size for x in xs], out=offsets[1:])
    flat = np.concatenate([x.ravel() for x in xs]) if xs else np.zeros(0, np.float32)
    return pa.table({
        "x": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.float32())),
        "frames": pa.array(frames, pa.int32()),
        "label": pa.array(labels, pa.int64()),
        "targets": pa.array(targets, pa.list_(pa.int64())),
        "spans": pa.array(spans, pa.list_(pa.int64())),
    })


def _width(features: FeaturesConfig) -> int:
    return input_size(features.inputs)


def standardizer_sums_table(table: pa.Table, features: FeaturesConfig, vocab: Vocabulary) -> pa.Table:
    """One row of partial standardiser sums over a batch of feature rows."""
    views, _, fps, _ = _rows(table, vocab, features)
    sums = StandardizerSums()
    xs = build_inputs_many([resample(lm, f, features.max_frames) for lm, f in zip(views, fps, strict=True)],
                           features.inputs)
    if xs:
        sums.add(np.concatenate(xs))
    width = _width(features)
    total = sums.total if sums.total is not None else np.zeros(width)
    squares = sums.squares if sums.squares is not None else np.zeros(width)
    return pa.table({"count": [sums.count], "total": [total.tolist()], "squares": [squares.tolist()]})


# ----------------------------------------------------------------------------- Ray edge


def read_split(cfg: Config, split: str, shuffle_files: bool, exclude: list[str] | None = None) -> Any:
    """The ok rows of one split as a lazy Ray Dataset (only the columns training
    needs), without the videos in ``exclude`` (duplicates left out)."""
    import ray.data
    from ray.data import DataContext, FileShuffleConfig
    from ray.data.expressions import col

    loc, files = parquet_files(cfg.extract.output_dir)
    repeats = repeated_rows(cfg.extract.output_dir)
    shuffle = FileShuffleConfig(seed=cfg.train.seed, reseed_after_execution=True) if shuffle_files else None
    # Ray 2.60's default (V2) Parquet reader starts a pool of 32 footer-reading
    # actors for every execution, i.e. every epoch: on a 2-core node ~12 s per
    # epoch for WLASL100's 196 files, longer than the epoch's training. The V1
    # reader lists and reads the same files without them (1.3 s); the setting
    # is read when the dataset is created and kept with it.
    ctx = DataContext.get_current()
    v2, ctx.use_datasource_v2 = ctx.use_datasource_v2, False
    try:
        columns = READ_COLUMNS + (["lips"] if cfg.features.lips else [])
        ds = ray.data.read_parquet(files, filesystem=loc.fs, columns=columns, shuffle=shuffle,
                                   include_paths=bool(repeats))
    finally:
        ctx.use_datasource_v2 = v2
    keep = (col("status") == STATUS_OK) & (col("split") == split)
    if exclude:
        keep = keep & col("video_id").not_in(list(exclude))
    ds = ds.filter(expr=keep)
    if repeats:
        # A video re-extracted into a later file counts once, as read_features has it.
        ds = ds.map_batches(_drop_repeats, fn_kwargs={"keeper": repeats}, batch_format="pyarrow")
    return ds


def _drop_repeats(table: Any, keeper: Any = None) -> Any:
    ids, paths = table.column("video_id").to_pylist(), table.column("path").to_pylist()
    keep = [keeper.get(v, p) == p for v, p in zip(ids, paths, strict=True)]
    return table.filter(pa.array(keep)).drop_columns(["path"])


def _prepare_batch(table: pa.Table, features: dict[str, Any], mean: list[float], std: list[float],
                   glosses: list[str], augment: dict[str, Any] | None, seed: int,
                   sentences: dict[str, Any] | None = None) -> pa.Table:
    return prepare_table(table, FeaturesConfig.model_validate(features),
                         Standardizer(np.asarray(mean, np.float32), np.asarray(std, np.float32)),
                         Vocabulary(tuple(glosses)),
                         AugmentConfig.model_validate(augment) if augment is not None else None, seed,
                         SentencesConfig.model_validate(sentences) if sentences is not None else None)


def _sentence_batch(table: pa.Table, features: dict[str, Any], mean: list[float], std: list[float],
                    glosses: list[str], seed: int, sentences: dict[str, Any]) -> pa.Table:
    s = SentencesConfig.model_validate(sentences)
    return sentence_table(table, FeaturesConfig.model_validate(features),
                          Standardizer(np.asarray(mean, np.float32), np.asarray(std, np.float32)),
                          Vocabulary(tuple(glosses)), s, s.val)


def _sums_batch(table: pa.Table, features: dict[str, Any], glosses: list[str]) -> pa.Table:
    return standardizer_sums_table(table, FeaturesConfig.model_validate(features), Vocabulary(tuple(glosses)))


def fit_standardizer(cfg: Config, vocab: Vocabulary, exclude: list[str] | None = None) -> Standardizer:
    """The standardiser of the train split in one streaming Ray Data pass (over
    at most ``train.standardizer_rows`` sequences: on 100k sequences the full
    pass would delay the first step by as much as it takes to read them all)."""
    ds = read_split(cfg, "train", shuffle_files=True, exclude=exclude)
    if cfg.train.standardizer_rows is not None:
        # The same rows every time under train.seed: files in the seeded order,
        # rows kept in that order (else the fastest read tasks would decide).
        ds.context.execution_options.preserve_order = True
        ds = ds.limit(cfg.train.standardizer_rows)
    ds = ds.map_batches(
        _sums_batch, fn_kwargs={"features": cfg.features.model_dump(mode="json"), "glosses": list(vocab.glosses)},
        batch_format="pyarrow", batch_size=256, num_cpus=cfg.train.prep_cpus)
    sums = StandardizerSums()
    for part in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        for row in part.to_pylist():
            sums.merge(StandardizerSums(int(row["count"]), np.asarray(row["total"]), np.asarray(row["squares"])))
    return sums.standardizer()


def training_datasets(cfg: Config, vocab: Vocabulary, standardizer: Standardizer, val_rows: int,
                      exclude: list[str] | None = None) -> dict[str, Any]:
    """``{"train": ..., "val": ...}`` for ``TorchTrainer(datasets=...)``; no
    "val" when ``val_rows`` (the val sequences in the vocabulary) is 0."""
    from ray.data import DataContext
    from ray.data.expressions import random

    # Our epoch lines say what happens; Ray Data's per-execution banners would
    # repeat every epoch (datasets take a copy of the current context).
    ctx = DataContext.get_current()
    ctx.print_on_execution_start = False
    ctx.enable_progress_bars = False
    kwargs = {"features": cfg.features.model_dump(mode="json"), "mean": standardizer.mean.tolist(),
              "std": standardizer.std.tolist(), "glosses": list(vocab.glosses), "seed": cfg.train.seed}
    aug = cfg.train.augment.model_dump(mode="json") if cfg.train.augment.enabled else None
    sent = cfg.train.sentences
    train = (read_split(cfg, "train", shuffle_files=True, exclude=exclude)
             .with_column(SEED_COLUMN, random(seed=cfg.train.seed))
             .map_batches(_prepare_batch, fn_kwargs={**kwargs, "augment": aug,
                                                     "sentences": sent.model_dump(mode="json")},
                          batch_format="pyarrow", batch_size=64, num_cpus=cfg.train.prep_cpus))
    out = {"train": train}
    if val_rows:
        val = read_split(cfg, "val", shuffle_files=False, exclude=exclude).map_batches(
            _prepare_batch, fn_kwargs={**kwargs, "augment": None}, batch_format="pyarrow", batch_size=64,
            num_cpus=cfg.train.prep_cpus)
        if sent.val:
            # A fixed set: the first val clips (in file order) cut into seeded
            # sentences in one task, since a sentence draws from all of them.
            clips = (read_split(cfg, "val", shuffle_files=False, exclude=exclude)
                     .limit(sent.val * sent.max_clips).repartition(1))
            val = val.union(clips.map_batches(
                _sentence_batch, fn_kwargs={**kwargs, "sentences": sent.model_dump(mode="json")},
                batch_format="pyarrow", batch_size=None, num_cpus=cfg.train.prep_cpus))
        # Lazy: streamed at every evaluation, or built once by a ValCache
        # (the caller decides, by train.cache_val_rows).
        out["val"] = val
    return out


class ValCache:
    """Val's model inputs, built once into the object store and handed to
    each rank as its part.

    Val inputs never change, so every evaluation reads them from here. The
    first evaluation builds them (the first rank to ask starts the build, the
    others wait on it), not the driver before training: at 20k val sequences
    that build was 33 s of a 141 s wait for the first step (2026-11-27,
    benchmarks/scale.py). Not earlier, alongside the first epoch: on a node
    whose CPUs are all taken (the Ray Train workers' and Ray Data's), the two
    Ray Data executions took turns for the same CPUs and each slowed to a
    crawl (8k train / 2k val sequences: the epoch 633 s instead of 90 s, the
    val build 580 s). A Ray actor (no CPU of its own; Ray Data's tasks do the
    work) with threaded methods, so that every rank can wait on ``shard``.
    A restarted worker group finds val built.
    """

    def __init__(self, dataset: Any, world: int) -> None:
        import threading

        self._dataset, self._world = dataset, world
        self._lock = threading.Lock()
        self._thread: Any = None
        self._shards: list[Any] = []
        self._error: BaseException | None = None
        self._seconds = 0.0

    def start(self) -> None:
        import threading

        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._build, daemon=True)
                self._thread.start()

    def _build(self) -> None:
        import time

        t0 = time.perf_counter()
        try:
            # equal=False: the parts together hold every row exactly once.
            self._shards = self._dataset.materialize().split(self._world, equal=False)
        except BaseException as exc:  # handed to the ranks, which fail with it
            self._error = exc
        self._seconds = time.perf_counter() - t0

    def shard(self, rank: int) -> tuple[Any, float]:
        """Rank ``rank``'s part of val (a MaterializedDataset) and the seconds
        the build took; starts the build if nobody has, and waits for it."""
        self.start()
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._shards[rank], self._seconds


def val_cache(dataset: Any, world: int) -> Any:
    """A :class:`ValCache` actor for the lazy val ``dataset`` and ``world`` ranks."""
    import ray

    actor = ray.remote(ValCache).options(num_cpus=0, max_concurrency=world + 2)
    return actor.remote(dataset, world)


def sharded_ingest(memory_mb: int | None = None) -> Any:
    """Ray Train's ``DataConfig``, with every dataset but ``train`` split so that
    the shards hold each row exactly once (``equal=False``): evaluation must
    see every val sample, while train shards stay equal for DDP. Rows come out
    in a defined order (``preserve_order``), so a run is repeatable under
    ``train.seed`` even though the files are read in parallel."""
    from ray.train import DataConfig

    class ShardedIngest(DataConfig):
        def configure(self, datasets: dict[str, Any], world_size: int, worker_handles: Any,
                      worker_node_ids: Any, **kwargs: Any) -> list[dict[str, Any]]:
            out = super().configure({k: v for k, v in datasets.items() if k == "train"}, world_size,
                                    worker_handles, worker_node_ids, **kwargs)
            for name, ds in datasets.items():
                if name == "train":
                    continue
                ds = ds.copy(ds)
                ds.context.execution_options = self._resolve_execution_options(name)
                for i, split in enumerate(ds.streaming_split(world_size, equal=False,
                                                             locality_hints=worker_node_ids)):
                    out[i][name] = split
            return out

    options = DataConfig.default_ingest_options()
    options.preserve_order = True
    if memory_mb is not None:  # train.ingest_memory_mb
        options.resource_limits = options.resource_limits.copy(object_store_memory=memory_mb * 2**20)
    return ShardedIngest(execution_options=options)


def split_counts(table: pa.Table, vocab: Vocabulary) -> tuple[dict[str, int], dict[str, int]]:
    """(samples in the vocabulary, samples dropped) per split, from the gloss/split columns."""
    kept: dict[str, int] = {}
    dropped: dict[str, int] = {}
    in_vocab = pc.is_in(table.column("gloss"), pa.array(list(vocab.glosses)))
    for split in ("train", "val"):
        is_split = pc.equal(table.column("split"), split)
        kept[split] = int(pc.sum(pc.and_(is_split, in_vocab)).as_py() or 0)
        dropped[split] = int(pc.sum(is_split).as_py() or 0) - kept[split]
    return kept, dropped
