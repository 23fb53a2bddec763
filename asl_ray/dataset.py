"""Feature dataset -> torch samples and padded batches. No Ray here.

``load_splits`` reads the Parquet feature dataset once, fixes the vocabulary
from the train split and counts what it drops (samples of glosses outside the
vocabulary). :class:`SignDataset` builds each sample's inputs on access, after
augmentation when training, and :func:`collate` pads a batch with its true
lengths.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from asl_ray.augment import augment
from asl_ray.config import AugmentConfig, FeaturesConfig
from asl_ray.errors import UserError
from asl_ray.inputs import Standardizer, build_inputs, resample
from asl_ray.schema import sample_arrays
from asl_ray.vocab import Vocabulary


@dataclass
class Sample:
    video_id: str
    gloss: str
    label: int  # vocabulary id, 1..V
    landmarks: np.ndarray  # (T, 75, 3)
    fps: float | None


@dataclass
class Splits:
    vocab: Vocabulary
    train: list[Sample]
    val: list[Sample]
    dropped: dict[str, int] = field(default_factory=dict)  # split -> samples outside the vocabulary

    def describe(self) -> str:
        drop = ", ".join(f"{k} {v}" for k, v in self.dropped.items() if v) or "none"
        return (f"vocabulary {self.vocab.num_glosses} glosses + blank; train {len(self.train)}, "
                f"val {len(self.val)} samples; dropped outside the vocabulary: {drop}")


def load_splits(table: Any, vocab_size: int | None, max_frames: int, vocab: Vocabulary | None = None) -> Splits:
    """Samples of the train and val splits of an ok-rows feature table."""
    rows = table.to_pylist()
    if not rows:
        raise UserError("the feature dataset has no ok rows: run `asl-ray extract` first")
    if vocab is None:
        train_glosses = [r["gloss"] for r in rows if r["split"] == "train"]
        if not train_glosses:
            raise UserError("the feature dataset has no train split rows")
        vocab = Vocabulary.from_train_glosses(train_glosses, vocab_size)
    out: dict[str, list[Sample]] = {"train": [], "val": []}
    dropped: Counter[str] = Counter()
    for r in rows:
        if r["split"] not in out:
            continue
        label = vocab.id_of(r["gloss"])
        if label is None:
            dropped[r["split"]] += 1
            continue
        lm = resample(sample_arrays(r).landmarks, max_frames)
        out[r["split"]].append(Sample(r["video_id"], r["gloss"], label, lm, r["fps"]))
    return Splits(vocab, out["train"], out["val"], dict(dropped))


class SignDataset(Dataset):
    """Inputs built on access; augmented when ``augment_cfg`` is given."""

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
        s = self.samples[i]
        if self.augment_cfg is None and i in self._cache:
            return self._cache[i]
        lm = s.landmarks
        if self.augment_cfg:
            # A slower speed lengthens the sequence: cap it again, since the
            # attention encoder has positions for max_frames only.
            lm = resample(augment(lm, self.augment_cfg, self.rng), self.features.max_frames)
        x = build_inputs(lm, s.fps, self.features.inputs)
        if self.standardizer is not None:
            x = self.standardizer(x)
        if self.augment_cfg is None:
            self._cache[i] = x
        return x

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.inputs(i)), self.samples[i].label


def collate(batch: Sequence[tuple[torch.Tensor, int]]) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence; one-gloss CTC targets (concatenated form)."""
    xs, labels = zip(*batch, strict=True)
    lengths = torch.tensor([x.shape[0] for x in xs], dtype=torch.long)
    x = torch.zeros(len(xs), int(lengths.max()), xs[0].shape[1])
    for i, seq in enumerate(xs):
        x[i, : seq.shape[0]] = seq
    y = torch.tensor(labels, dtype=torch.long)
    return {"x": x, "lengths": lengths, "labels": y, "targets": y.clone(), "target_lengths": torch.ones_like(y)}


def fit_standardizer(samples: Sequence[Sample], features: FeaturesConfig) -> Standardizer:
    return Standardizer.fit([build_inputs(s.landmarks, s.fps, features.inputs) for s in samples])
