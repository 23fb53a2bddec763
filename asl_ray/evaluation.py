"""Evaluate checkpoints on a split, and predict glosses for new videos. No Ray.

One checkpoint gives every metric of training (loss, greedy accuracy, blank
ratio). Several checkpoints, test-time speeds or test-time mirroring are
scored by their posterior over glosses (softmax of the exact single-gloss CTC
scores, see decode.py), averaged over checkpoints, over the sequence played
at each speed and, with mirroring, over it and its mirror image; the ranking
metrics and the confusion matrix come from that average.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader

from asl_ray.augment import change_speed, mirror
from asl_ray.checkpoint import LoadedCheckpoint
from asl_ray.continuous.decoding import greedy
from asl_ray.continuous.wer import Edits, edits
from asl_ray.dataset import SignDataset, collate
from asl_ray.decode import MetricAccumulator, confusion, ranking_metrics, single_label_scores
from asl_ray.duplicates import usable_rows
from asl_ray.errors import UserError
from asl_ray.extract import read_features
from asl_ray.inputs import build_inputs, resample
from asl_ray.loop import evaluate
from asl_ray.samples import Sample, as_read, split_samples


@dataclass
class Evaluation:
    split: str
    metrics: dict[str, float]
    per_class: list[tuple[str, int, float, str]]  # gloss, samples, top-1, most frequent wrong guess
    confusion: np.ndarray


def _split_samples(ck: LoadedCheckpoint, table: pa.Table, split: str) -> list[Sample]:
    present = sorted(set(table.column("split").to_pylist()))
    if split not in present:
        raise UserError(f"--split {split!r}: not in the feature dataset, whose splits are: "
                        f"{', '.join(present) or 'none (no ok rows)'}")
    samples = split_samples(table, split, ck.vocab, ck.cfg.features)
    if not samples:
        raise UserError(f"no {split} samples of the checkpoint's vocabulary in the feature dataset")
    return samples


def evaluate_checkpoint(ck: LoadedCheckpoint, split: str, features_dir: str | None = None) -> Evaluation:
    table, _ = usable_rows(read_features(features_dir or ck.cfg.extract.output_dir), ck.cfg.data.duplicates)
    samples = _split_samples(ck, table, split)
    loader = DataLoader(SignDataset(samples, ck.cfg.features, ck.standardizer), batch_size=64, collate_fn=collate)
    metrics, acc = evaluate(ck.model, loader, ck.vocab.num_glosses, ck.cfg.train.blank_penalty, None,
                            ck.cfg.train.label_smoothing, merge_repeats=ck.cfg.train.sentences.merge_repeats)
    cm = acc.confusion()
    return Evaluation(split, metrics, per_class_table(cm, ck.vocab.glosses), cm)


@torch.no_grad()
def gloss_posteriors(ck: LoadedCheckpoint, samples: Sequence[Sample], speeds: Sequence[float] = (1.0,),
                     mirrored: bool = False) -> np.ndarray:
    """(N, V) posterior over glosses, averaged over the sequence played at each
    speed and, when ``mirrored``, over each of those and its mirror image (the
    signer's left and right swapped, as ``train.augment.mirror`` trains on)."""
    ck.model.eval()
    if mirrored and ck.cfg.features.dominant_hand:
        raise UserError("test-time mirroring with features.dominant_hand: the model reads every sequence in "
                        "its right-handed form, so a mirror image is a view it was never trained on")
    total = np.zeros((len(samples), ck.vocab.num_glosses))
    flips = (False, True) if mirrored else (False,)
    for speed, flip in [(v, f) for v in speeds for f in flips]:
        # Capped again at max_frames: the attention encoder has no positions beyond it.
        views = []
        for s in samples:
            lm, fps = resample(change_speed(s.landmarks, speed), s.fps, ck.cfg.features.max_frames)
            views.append(replace(s, landmarks=mirror(lm) if flip else lm, fps=fps))
        ds = SignDataset(views, ck.cfg.features, ck.standardizer)
        probs = []
        for b in DataLoader(ds, batch_size=64, collate_fn=collate):
            lp = ck.model(b["x"], b["lengths"])
            steps = ck.model.output_lengths(b["lengths"])
            probs.append(torch.softmax(single_label_scores(lp, steps), 1).numpy())
        total += np.concatenate(probs)
    return total / (len(speeds) * len(flips))


def _check_same_glosses(cks: Sequence[LoadedCheckpoint]) -> None:
    if any(ck.vocab != cks[0].vocab for ck in cks[1:]):
        raise UserError("the checkpoints have different vocabularies: an ensemble needs the same glosses")


def evaluate_ensemble(cks: Sequence[LoadedCheckpoint], split: str, features_dir: str | None = None,
                      speeds: Sequence[float] = (1.0,), mirrored: bool = False) -> Evaluation:
    """Ranking metrics of the posterior averaged over checkpoints, test-time
    speeds and (``mirrored``) each view's mirror image."""
    vocab = cks[0].vocab
    _check_same_glosses(cks)
    table, _ = usable_rows(read_features(features_dir or cks[0].cfg.extract.output_dir),
                           cks[0].cfg.data.duplicates)
    probs: np.ndarray | None = None
    for ck in cks:
        samples = _split_samples(ck, table, split)
        p = gloss_posteriors(ck, samples, speeds, mirrored)
        probs = p if probs is None else probs + p
    assert probs is not None
    labels = np.array([s.label for s in samples])
    scores = np.log(probs / len(cks) + 1e-12)
    cm = confusion(scores, labels, vocab.num_glosses)
    return Evaluation(split, ranking_metrics(scores, labels), per_class_table(cm, vocab.glosses), cm)


def per_class_table(cm: np.ndarray, names: tuple[str, ...]) -> list[tuple[str, int, float, str]]:
    rows = []
    for i, name in enumerate(names):
        n = int(cm[i].sum())
        if not n:
            continue
        wrong = cm[i].copy()
        wrong[i] = 0
        confused = names[int(wrong.argmax())] if wrong.any() else "-"
        rows.append((name, n, cm[i, i] / n, confused))
    return sorted(rows, key=lambda r: (r[2], -r[1]))


@dataclass
class SentenceEvaluation:
    split: str
    sentences: int
    glosses: int
    wer_greedy: float
    wer_beam: float
    examples: list[tuple[list[str], list[str], list[str]]]  # reference, greedy, beam
    kinds_greedy: Edits  # the edits behind each WER, summed over the sentences
    kinds_beam: Edits


def evaluate_sentences(cks: Sequence[LoadedCheckpoint], split: str, count: int, seed: int | None = None,
                       features_dir: str | None = None, examples: int = 5) -> SentenceEvaluation:
    """Word error rate on ``count`` seeded sentences of ``split``'s clips
    (``train.sentences`` settings of the first checkpoint, seed ``val_seed``
    unless given). Several checkpoints are an ensemble: their per-step CTC
    posteriors are averaged before decoding, which needs the same glosses
    and the same CTC step (``model.subsample``)."""
    from asl_ray.continuous.decoding import beam_decoder, merge_repeats
    from asl_ray.continuous.sentences import sentence_plan
    from asl_ray.ingest import sentence_inputs

    first = cks[0]
    _check_same_glosses(cks)
    steps = sorted({ck.cfg.model.subsample for ck in cks})
    if len(steps) > 1:
        raise UserError(f"the checkpoints take CTC steps of {' and '.join(map(str, steps))} frames "
                        "(model.subsample): averaging their posteriors over sentences needs one step")
    table, _ = usable_rows(read_features(features_dir or first.cfg.extract.output_dir), first.cfg.data.duplicates)
    samples = _split_samples(first, table, split)
    s = first.cfg.train.sentences
    if len(samples) < s.min_clips:
        raise UserError(f"{len(samples)} {split} clips cannot make a sentence of {s.min_clips}")
    plan = sentence_plan(len(samples), count, s.val_seed if seed is None else seed, s.min_clips, s.max_clips)
    beam = beam_decoder(s, first.vocab.glosses)
    names = first.vocab.glosses
    for ck in cks:
        ck.model.eval()
    words = 0
    kinds = {"greedy": Edits(0, 0, 0), "beam": Edits(0, 0, 0)}
    shown: list[tuple[list[str], list[str], list[str]]] = []
    for group in plan:
        clips = [(samples[i].landmarks, samples[i].fps) for i in group]
        probs = None
        for ck in cks:  # one sentence (the first's joining), each model with its own inputs and standardiser
            cap = getattr(ck.model, "max_positions", None) or 10**9
            x, _ = sentence_inputs(clips, ck.cfg.features, ck.standardizer, s, cap)
            with torch.no_grad():
                p = ck.model(torch.from_numpy(x)[None], torch.tensor([len(x)]))[0].exp().numpy()  # (ceil(T/k), V+1)
            if probs is not None and p.shape != probs.shape:
                raise UserError(f"the checkpoints read a sentence in {len(probs)} and {len(p)} CTC steps "
                                "(their attention encoders hold different numbers of positions)")
            probs = p if probs is None else probs + p
        assert probs is not None
        lp = np.log(probs / len(cks) + 1e-12)
        ref = [samples[i].label for i in group]
        g, b = greedy(lp).glosses, beam(lp).glosses
        if s.merge_repeats:  # in the reference too, as PHOENIX-2014's scoring does
            ref, g, b = merge_repeats(ref), merge_repeats(g), merge_repeats(b)
        words += len(ref)
        kinds = {"greedy": kinds["greedy"] + edits(ref, g), "beam": kinds["beam"] + edits(ref, b)}
        if len(shown) < examples:
            shown.append(([names[i - 1] for i in ref], [names[i - 1] for i in g], [names[i - 1] for i in b]))
    return SentenceEvaluation(split, len(plan), words, kinds["greedy"].total / max(words, 1),
                              kinds["beam"].total / max(words, 1), shown, kinds["greedy"], kinds["beam"])


@dataclass
class Prediction:
    video: str
    top: list[tuple[str, float]]
    frames: int
    hands_found: float
    sequence: list[tuple[str, int, int]]  # beam-decoded glosses with their first and last video frame


def predict_landmarks(ck: LoadedCheckpoint, landmarks: np.ndarray, fps: float | None, k: int = 5
                      ) -> list[tuple[str, float]]:
    lm, fps = resample(landmarks, fps, ck.cfg.features.max_frames)
    x = torch.from_numpy(ck.standardizer(build_inputs(lm, fps, ck.cfg.features.inputs)))[None]
    ck.model.eval()
    with torch.no_grad():
        lp = ck.model(x, torch.tensor([x.shape[1]]))
    # Posterior over the single-gloss hypotheses (see decode.py).
    probs = torch.softmax(single_label_scores(lp, ck.model.output_lengths(torch.tensor([x.shape[1]])))[0], 0).numpy()
    order = np.argsort(-probs)[:k]
    return [(ck.vocab.glosses[i], float(probs[i])) for i in order]


def decode_sequence(ck: LoadedCheckpoint, landmarks: np.ndarray, fps: float | None) -> list[tuple[str, int, int]]:
    """The gloss sequence of a video that may hold several signs (CTC beam
    search), each with the video frames of its CTC span."""
    from asl_ray.continuous.decoding import beam_decoder

    t = landmarks.shape[0]
    cap = getattr(ck.model, "max_positions", None) or t
    lm, fps = resample(landmarks, fps, cap)
    x = torch.from_numpy(ck.standardizer(build_inputs(lm, fps, ck.cfg.features.inputs)))[None]
    ck.model.eval()
    with torch.no_grad():
        lp = ck.model(x, torch.tensor([x.shape[1]]))[0].numpy()
    d = beam_decoder(ck.cfg.train.sentences, ck.vocab.glosses)(lp)
    if ck.cfg.train.sentences.merge_repeats:
        d = d.merged()
    # CTC step i reads input frames [i·k, i·k + k - 1] (model.subsample = k); input
    # frame j is video frame round(j·(t-1)/(n-1)) (resample's uniform subsampling).
    n, k = x.shape[1], ck.model.subsample
    scale = (t - 1) / max(n - 1, 1)
    return [(ck.vocab.glosses[g - 1], int(round(a * k * scale)), int(round(min(b * k + k - 1, n - 1) * scale)))
            for g, (a, b) in zip(d.glosses, d.spans, strict=True)]


def predict_videos(ck: LoadedCheckpoint, videos: list[Path], k: int = 5) -> list[Prediction | str]:
    """Top-k glosses per video, extracted with the same code as the dataset; a
    video that cannot be read gives its reason instead."""
    from asl_ray.extract import SampleProcessor
    from asl_ray.schema import sample_arrays

    # A model that reads lips needs them extracted, whatever its config's extract says.
    proc = SampleProcessor(ck.cfg.extract.model_copy(
        update={"lips": ck.cfg.extract.lips or ck.cfg.features.lips}))
    out: list[Prediction | str] = []
    try:
        for video in videos:
            row = proc({"video_id": video.stem, "gloss": "?", "label": -1, "split": "predict", "signer_id": None,
                        "source": "predict", "path": str(video), "frame_start": 1, "frame_end": -1, "fps": None})
            if row["status"] != "ok":
                out.append(f"{video}: {row['error']}")
                continue
            arr = sample_arrays(row)
            hands = float((arr.left_mask | arr.right_mask).mean())
            lm = as_read(arr.model_landmarks(ck.cfg.features.lips), ck.cfg.features)  # as a training clip is
            out.append(Prediction(str(video), predict_landmarks(ck, lm, row["fps"], k), row["num_frames"],
                                  hands, decode_sequence(ck, lm, row["fps"])))
    finally:
        proc.close()
    return out


__all__ = ["MetricAccumulator", "evaluate_checkpoint", "predict_videos"]
