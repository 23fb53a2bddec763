"""Feature dataset -> samples and model inputs. Plain numpy, no torch, no Ray.

Columnar all the way: a feature table's ``landmarks`` list column becomes one
contiguous float32 buffer (Arrow's own values, no per-element Python
objects), and every :class:`Sample` holds a view into it. ``load_splits``
fixes the vocabulary from the train split and counts what it drops (samples
of glosses outside the vocabulary). :func:`prepare_inputs` is the one place
where a sample becomes model inputs (augment -> cap at ``max_frames`` ->
input blocks -> standardise); the in-memory ``dataset.SignDataset`` and the
Ray Data ingest (``ingest.py``) both call it. :func:`length_batches` groups
prepared sequences into batches, by length when asked.

No torch here: Ray Data's CPU workers import this module (through
``ingest.py``) to build inputs, and torch would cost each of those processes
~3 CPU-s to import and ~190 MB of memory (measured 2026-11-29, 2-core
machine). ``dataset.py`` holds the torch side.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from asl_ray.augment import augment, dominant_hand_right
from asl_ray.config import AugmentConfig, FeaturesConfig
from asl_ray.errors import UserError
from asl_ray.features import NUM_LANDMARKS, NUM_LIPS
from asl_ray.inputs import Standardizer, StandardizerSums, build_inputs, fill_hand_gaps, resample
from asl_ray.vocab import Vocabulary

SAMPLE_COLUMNS = ["video_id", "gloss", "split", "fps", "num_frames", "landmarks"]
FRAME_VALUES = NUM_LANDMARKS * 3


@dataclass
class Sample:
    video_id: str
    gloss: str
    label: int  # vocabulary id, 1..V
    landmarks: np.ndarray  # (T, 75, 3), a view into the table's buffer; (T, 115, 3) with lips
    fps: float | None


@dataclass
class Splits:
    vocab: Vocabulary
    train: list[Sample]
    val: list[Sample]
    dropped: dict[str, int] = field(default_factory=dict)  # split -> samples outside the vocabulary

    def describe(self) -> str:
        return describe_splits(self.vocab, len(self.train), len(self.val), self.dropped)


def describe_splits(vocab: Vocabulary, train: int, val: int, dropped: dict[str, int]) -> str:
    drop = ", ".join(f"{k} {v}" for k, v in dropped.items() if v) or "none"
    return (f"vocabulary {vocab.num_glosses} glosses + blank; train {train}, val {val} samples; "
            f"dropped outside the vocabulary: {drop}")


def list_buffer(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, offsets) of an Arrow list column: row i is values[offsets[i]:offsets[i+1]]."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    values = arr.flatten().to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(arr) + 1, np.int64)
    np.cumsum(arr.value_lengths().fill_null(0).to_numpy(zero_copy_only=False), out=offsets[1:])
    return values, offsets


def as_read(landmarks: np.ndarray, features: FeaturesConfig) -> np.ndarray:
    """A whole video's landmarks as ``features`` reads them, before any
    resampling or augmentation: short hand-tracking gaps filled
    (``fill_gaps``), then mirrored to the dominant hand (``dominant_hand``).
    Training (both ingests), evaluation, ``predict`` and ``show`` all read
    landmarks through here. ``landmarks`` itself when neither is on."""
    if features.fill_gaps:
        landmarks = fill_hand_gaps(landmarks, features.fill_gaps)
    return dominant_hand_right(landmarks) if features.dominant_hand else landmarks


def changes_landmarks(features: FeaturesConfig) -> bool:
    """Whether :func:`landmark_views` makes copies (lips, gap filling, mirroring)."""
    return features.lips or bool(features.fill_gaps) or features.dominant_hand


def landmark_views(table: pa.Table, features: FeaturesConfig | None = None) -> list[np.ndarray]:
    """Each row's landmarks (T, 75, 3) as a view into one float32 buffer, as
    ``features`` reads them: with the ``lips`` input block, (T, 115, 3) copies
    with the 40 lip points after the hands; then :func:`as_read` (copies where
    it changes a row)."""
    values, offsets = list_buffer(table.column("landmarks"))
    values = values.astype(np.float32, copy=False)
    views = [values[offsets[i]:offsets[i + 1]].reshape(-1, NUM_LANDMARKS, 3) for i in range(len(offsets) - 1)]
    if features is None:
        return views
    if features.lips:
        views = _with_lips(table, views)
    return [as_read(v, features) for v in views] if changes_landmarks(features) else views


def _with_lips(table: pa.Table, views: list[np.ndarray]) -> list[np.ndarray]:
    if "lips" not in table.column_names:
        raise UserError("the lips input block needs the feature dataset's lips column: extract with "
                        "extract.lips=true into a new extract.output_dir")
    lip_values, lip_offsets = list_buffer(table.column("lips"))
    lip_values = lip_values.astype(np.float32, copy=False)
    out = []
    for i, view in enumerate(views):
        row = lip_values[lip_offsets[i]:lip_offsets[i + 1]]
        if row.size != view.shape[0] * NUM_LIPS * 3:
            vid = table.column("video_id")[i].as_py() if "video_id" in table.column_names else f"row {i}"
            raise UserError(f"video {vid} has no lip landmarks, which the lips input block needs: extract "
                            "with extract.lips=true into a new extract.output_dir")
        out.append(np.concatenate([view, row.reshape(-1, NUM_LIPS, 3)], axis=1))
    return out


def vocabulary_of(table: pa.Table, vocab_size: int | None) -> Vocabulary:
    """The vocabulary from a table's train-split glosses (needs columns gloss, split)."""
    if table.num_rows == 0:
        raise UserError("the feature dataset has no ok rows: run `asl-ray extract` first")
    train = table.filter(pc.equal(table.column("split"), "train")).column("gloss")
    if len(train) == 0:
        raise UserError("the feature dataset has no train split rows")
    counts = pc.value_counts(train).to_pylist()
    return Vocabulary.from_counts({c["values"]: c["counts"] for c in counts}, vocab_size)


def load_splits(table: pa.Table, vocab_size: int | None, features: FeaturesConfig, vocab: Vocabulary | None = None
                ) -> Splits:
    """Samples of the train and val splits of an ok-rows feature table, as
    ``features`` reads them (capped at its max_frames; lip points when its
    inputs read them; mirrored to the dominant hand when it says so)."""
    vocab = vocab or vocabulary_of(table, vocab_size)
    if table.num_rows == 0:
        raise UserError("the feature dataset has no ok rows: run `asl-ray extract` first")
    out, dropped = _samples(table, vocab, features, ("train", "val"))
    return Splits(vocab, out["train"], out["val"], dict(dropped))


def split_samples(table: pa.Table, split: str, vocab: Vocabulary, features: FeaturesConfig) -> list[Sample]:
    """Samples of any one split (``test`` too) in the vocabulary."""
    return _samples(table, vocab, features, (split,))[0][split]


def _samples(table: pa.Table, vocab: Vocabulary, features: FeaturesConfig, splits: tuple[str, ...]
             ) -> tuple[dict[str, list[Sample]], Counter[str]]:
    out: dict[str, list[Sample]] = {s: [] for s in splits}
    dropped: Counter[str] = Counter()
    if changes_landmarks(features):  # only these splits' rows need copies
        table = table.filter(pc.is_in(table.column("split"), pa.array(list(splits))))
    views = landmark_views(table, features)
    meta = table.select(["video_id", "gloss", "split", "fps"]).to_pydict()
    for i, (vid, gloss, split, fps) in enumerate(zip(meta["video_id"], meta["gloss"], meta["split"], meta["fps"],
                                                      strict=True)):
        if split not in out:
            continue
        label = vocab.id_of(gloss)
        if label is None:
            dropped[split] += 1
            continue
        out[split].append(Sample(vid, gloss, label, *resample(views[i], fps, features.max_frames)))
    return out, dropped


def prepare_landmarks(landmarks: np.ndarray, fps: float | None, features: FeaturesConfig,
                      augment_cfg: AugmentConfig | None = None, rng: np.random.Generator | None = None
                      ) -> tuple[np.ndarray, float]:
    """One clip's landmarks and frame rate as the model sees them: capped at
    ``max_frames``, augmented when ``augment_cfg`` is given."""
    lm, fps = resample(landmarks, fps, features.max_frames)
    if augment_cfg is not None and augment_cfg.enabled:
        # A slower speed lengthens the sequence: cap it again, since the
        # attention encoder has positions for max_frames only. (The speed
        # change itself keeps the frame rate: it plays a faster or slower signer.)
        lm, fps = resample(augment(lm, augment_cfg, rng or np.random.default_rng()), fps, features.max_frames)
    return lm, fps


def prepare_inputs(landmarks: np.ndarray, fps: float | None, features: FeaturesConfig,
                   standardizer: Standardizer | None, augment_cfg: AugmentConfig | None = None,
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """(T, F) model inputs of one sample: augmented when ``augment_cfg`` is given."""
    lm, fps = prepare_landmarks(landmarks, fps, features, augment_cfg, rng)
    x = build_inputs(lm, fps, features.inputs)
    return standardizer(x) if standardizer is not None else x


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, by_length: bool
                   ) -> list[np.ndarray]:
    """Split a chunk of rows into batches: consecutive rows, or (``by_length``)
    rows of similar length together, which cuts padding; batch order shuffled."""
    order = np.argsort(lengths, kind="stable") if by_length else np.arange(len(lengths))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if by_length:
        rng.shuffle(batches)
    return batches


def fit_standardizer(samples: Sequence[Sample], features: FeaturesConfig) -> Standardizer:
    sums = StandardizerSums()
    for s in samples:
        sums.add(build_inputs(s.landmarks, s.fps, features.inputs))
    return sums.standardizer()
