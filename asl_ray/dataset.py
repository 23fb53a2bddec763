"""Samples -> torch: the in-memory :class:`SignDataset` and padded batches
(:func:`pad_batch`, CTC targets in concatenated form). No Ray. The numpy side
(samples, model inputs) is ``samples.py``, which Ray Data's workers import
without torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from asl_ray.config import AugmentConfig, FeaturesConfig
from asl_ray.inputs import Standardizer
from asl_ray.samples import Sample, prepare_inputs


class SignDataset(Dataset):
    """In-memory samples; inputs built on access, augmented when ``augment_cfg`` is given."""

    def __init__(
        self,
        samples: Sequence[Sample],
        features: FeaturesConfig,
        standardizer: Standardizer | None,
        augment_cfg: AugmentConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.samples = list(samples)
        self.features = features
        self.standardizer = standardizer
        self.augment_cfg = augment_cfg
        self.rng = np.random.default_rng(seed)
        # Without augmentation the inputs never change: build them once.
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def inputs(self, i: int) -> np.ndarray:
        if self.augment_cfg is None and i in self._cache:
            return self._cache[i]
        s = self.samples[i]
        x = prepare_inputs(s.landmarks, s.fps, self.features, self.standardizer, self.augment_cfg, self.rng)
        if self.augment_cfg is None:
            self._cache[i] = x
        return x

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.inputs(i)), self.samples[i].label


def pad_batch(xs: Sequence[np.ndarray | torch.Tensor], labels: Sequence[int] | np.ndarray,
              targets: Sequence[Sequence[int]] | None = None,
              spans: Sequence[Sequence[tuple[int, int]]] | None = None) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence; CTC targets in concatenated form.

    Isolated clips: ``labels`` are their gloss ids and the targets one gloss
    each. Sentences (asl_ray/continuous): label 0, ``targets`` their gloss
    ids, ``spans`` each gloss's [start, end) frames (batch key ``spans``,
    (B, L, 2), -1 padding; an isolated clip's span is all its frames).
    """
    lengths = np.array([x.shape[0] for x in xs], np.int64)
    x = np.zeros((len(xs), int(lengths.max()), xs[0].shape[1]), np.float32)
    for i, seq in enumerate(xs):
        x[i, : seq.shape[0]] = seq.numpy() if isinstance(seq, torch.Tensor) else seq
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    batch = {"x": torch.from_numpy(x), "lengths": torch.from_numpy(lengths), "labels": y}
    if targets is None:
        return {**batch, "targets": y.clone(), "target_lengths": torch.ones_like(y)}
    seqs = [list(t) if lab == 0 else [int(lab)] for t, lab in zip(targets, y.tolist(), strict=True)]
    width = max(len(t) for t in seqs)
    span = np.full((len(seqs), width, 2), -1, np.int64)
    for i, t in enumerate(seqs):
        given = spans[i] if spans is not None and y[i] == 0 else [(0, int(lengths[i]))]
        span[i, :len(t)] = np.asarray(given, np.int64).reshape(-1, 2)
    return {**batch, "targets": torch.tensor([g for t in seqs for g in t], dtype=torch.long),
            "target_lengths": torch.tensor([len(t) for t in seqs], dtype=torch.long),
            "spans": torch.from_numpy(span)}


def collate(batch: Sequence[tuple[torch.Tensor, int]]) -> dict[str, torch.Tensor]:
    xs, labels = zip(*batch, strict=True)
    return pad_batch(xs, labels)


def padding_share(batches: Sequence[dict[str, torch.Tensor]]) -> float:
    """Padded frames / all frames of the given batches."""
    total = sum(b["x"].shape[0] * b["x"].shape[1] for b in batches)
    real = sum(int(b["lengths"].sum()) for b in batches)
    return 1.0 - real / max(total, 1)
