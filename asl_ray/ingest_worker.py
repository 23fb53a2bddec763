"""The Ray Train worker's side of the Ray Data ingest (``ingest.py``): its
dataset shards as padded torch batches, and the ranks' metrics added up.

Apart from ``ingest.py`` because that module is what Ray Data's CPU workers
import to run its map functions, and it stays free of torch; this one runs
only in training workers, which hold torch anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from asl_ray.config import Config
from asl_ray.dataset import pad_batch
from asl_ray.inputs import input_size
from asl_ray.loop import Batch, BatchSource
from asl_ray.samples import length_batches, list_buffer


def shard_batches(batches: Iterable[pa.Table], batch_size: int, width: int, rng: np.random.Generator,
                  by_length: bool, limit: int | None = None) -> Iterator[Batch]:
    """Padded batches from chunks of prepared rows: rows above the vocabulary
    ``limit`` (a curriculum stage) left out, rows of similar length together
    when ``by_length``."""
    for chunk in batches:
        labels = chunk.column("label").to_numpy()
        frames = chunk.column("frames").to_numpy()
        values, offsets = list_buffer(chunk.column("x"))
        targets = chunk.column("targets").to_pylist()
        spans = [np.asarray(s).reshape(-1, 2).tolist() for s in chunk.column("spans").to_pylist()]
        top = np.array([max(t) for t in targets]) if targets else labels
        keep = np.flatnonzero(top <= limit) if limit is not None else np.arange(len(labels))
        for idx in length_batches(frames[keep], batch_size, rng, by_length):
            rows = keep[idx]
            xs = [values[offsets[i]:offsets[i + 1]].reshape(-1, width) for i in rows]
            yield pad_batch(xs, labels[rows], [targets[i] for i in rows], [spans[i] for i in rows])


def worker_sources(cfg: Config, rank: int, cache: Any = None, timings: dict[str, float] | None = None
                   ) -> tuple[BatchSource, Any]:
    """This worker's train :data:`BatchSource` and val batches: from its dataset
    shards, val from the :class:`ValCache` actor ``cache`` when there is one
    (the first evaluation records ``val_build`` and ``val_wait`` seconds in
    ``timings``)."""
    import time

    import ray
    import ray.train

    width = input_size(cfg.features.inputs)
    train_shard = ray.train.get_dataset_shard("train")
    t = cfg.train
    chunk = t.batch_size * t.bucket_batches

    def train_batches(epoch: int, limit: int) -> Iterator[Batch]:
        rows = train_shard.iter_batches(batch_size=chunk, batch_format="pyarrow", prefetch_batches=2,
                                        local_shuffle_buffer_size=max(t.shuffle_buffer, chunk) or None,
                                        local_shuffle_seed=t.seed * 100_003 + epoch * 101 + rank)
        rng = np.random.default_rng([t.seed, epoch, rank])
        yield from shard_batches(rows, t.batch_size, width, rng, t.bucket_batches > 1, limit)

    val_shard = None
    if cache is None:
        try:
            val_shard = ray.train.get_dataset_shard("val")
        except KeyError:
            val_shard = None

    def val_batches() -> Iterator[Batch]:
        nonlocal val_shard
        if val_shard is None:
            t0 = time.time()
            val_shard, build = ray.get(cache.shard.remote(rank))
            if timings is not None:
                timings.update(val_build=build, val_wait=time.time() - t0)
        rows = val_shard.iter_batches(batch_size=64, batch_format="pyarrow", prefetch_batches=2)
        yield from shard_batches(rows, 64, width, np.random.default_rng(0), by_length=False)

    return train_batches, (val_batches if val_shard is not None or cache is not None else None)


def all_reduce_metrics(device: torch.device) -> Any:
    """Adds the ranks' metric accumulators up (one all-reduce of their vectors)."""
    import torch.distributed as dist

    from asl_ray.decode import MetricAccumulator

    def reduce(acc: MetricAccumulator) -> MetricAccumulator:
        if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
            return acc
        vec = torch.from_numpy(acc.to_vector())
        if dist.get_backend() == "nccl":
            vec = vec.to(device)
        dist.all_reduce(vec)
        return MetricAccumulator.from_vector(acc.num_classes, vec.cpu().numpy(), acc.merge_repeats)

    return reduce
