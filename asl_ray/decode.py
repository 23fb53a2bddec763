r"""Greedy CTC decoding, exact isolated-sign scores and the metrics built on them.

Exact scoring. For an isolated sign the hypotheses are the single-gloss
targets ``[c]``. Every CTC alignment of ``[c]`` is ``blank* c+ blank*``, so
its log-likelihood follows from three states per class, computed for all
classes at once in O(T·V) (``lp`` = log-probabilities, blank = 0)::

    a_t    = a_{t-1} + lp_t(0)                          only blanks so far (a_{-1} = 0)
    s_t(c) = lp_t(c) + logaddexp(s_{t-1}(c), a_{t-1})   in the run of c
    e_t(c) = lp_t(0) + logaddexp(e_{t-1}(c), s_{t-1}(c)) blanks after c
    log p([c]) = logaddexp(s_{T-1}(c), e_{T-1}(c))

Ranking classes by ``log p([c])`` gives top-1/top-5 even when blank wins the
argmax of almost every frame, which is exactly when greedy decoding shows
nothing and hides how close the model is. A softmax over these scores is the
posterior over glosses that ``predict`` prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from asl_ray.continuous.decoding import merge_repeats

NEG_INF = -1e30


def single_label_scores(log_probs: torch.Tensor, lengths: torch.Tensor, grad: bool = False) -> torch.Tensor:
    """log p([c] | x) for every class c ≥ 1: (B, V) from log-probs (B, T, V+1).

    Detached unless ``grad``: the training loss differentiates through it for
    label smoothing (see losses.py); metrics only read it.

    Two forms of one recursion, chosen by device: on a GPU the per-frame loop
    is ~9 small kernel launches a frame, forward and again backward, so the
    closed form (a few whole-tensor kernels) is used there. On a CPU a
    training step costs about the same either way (312 against 304 ms for a
    WLASL100 batch of 16, benchmarks/gpu_step.py; with the gradient the
    closed form is the faster, 48 against 70 ms), and scoring without the
    gradient, as the metrics and evaluation do, is 3.4x faster by the loop
    (16 clips x 80 frames; torch's CPU logcumsumexp is slow), so CPUs keep
    the loop. Tests hold the two equal.
    """
    if log_probs.is_cuda:
        return single_label_scores_closed(log_probs, lengths, grad)
    return single_label_scores_loop(log_probs, lengths, grad)


def single_label_scores_closed(log_probs: torch.Tensor, lengths: torch.Tensor, grad: bool = False) -> torch.Tensor:
    """``single_label_scores`` with the recursion of the module docstring unrolled
    into cumulative sums (P = cumulative sum of lp(c) over frames, A = of
    lp(0), P_{-1} = A_{-1} = 0)::

        s_t(c) = P_t(c) + logcumsumexp_{k ≤ t}(A_{k-1} - P_{k-1}(c))
        e_t(c) = A_t + logcumsumexp_{1 ≤ k ≤ t}(s_{k-1}(c) - A_{k-1})

    Both only look back, so padding frames after a clip's last one never
    reach its score, read at t = length - 1. The cumulative sums run to a few
    thousand in magnitude and are differenced, so they are taken in float64:
    then the scores are within 1e-12 of the recursion in float64, where in
    float32 they would be off by up to 1.6e-4 at 160 frames (the float32
    loop: 6e-4). The result is float32.
    """
    lp = (log_probs if grad else log_probs.detach()).double()
    b, t_max, _ = lp.shape
    if t_max == 0:
        return torch.full((b, lp.shape[2] - 1), NEG_INF, device=lp.device)
    blank, labels = lp[..., 0], lp[..., 1:]
    a = blank.cumsum(1)  # (B, T)
    p = labels.cumsum(1)  # (B, T, V)
    a_prev = torch.cat([a.new_zeros(b, 1), a[:, :-1]], 1)
    p_prev = torch.cat([p.new_zeros(b, 1, p.shape[2]), p[:, :-1]], 1)
    s = p + torch.logcumsumexp(a_prev[..., None] - p_prev, 1)
    # Frame 0 has no s_{-1}: a finite stand-in for -inf keeps the gradient of
    # logcumsumexp free of 0 * inf.
    q = torch.cat([torch.full_like(s[:, :1], NEG_INF), s[:, :-1] - a[:, :-1, None]], 1)
    e = a[..., None] + torch.logcumsumexp(q, 1)
    last = (lengths.to(lp.device).long() - 1).clamp(0, t_max - 1)[:, None, None].expand(-1, 1, s.shape[2])
    out = torch.logaddexp(s.gather(1, last), e.gather(1, last))[:, 0]
    empty = (lengths.to(lp.device) <= 0)[:, None]
    return torch.where(empty, torch.full_like(out, NEG_INF), out).float()


def single_label_scores_loop(log_probs: torch.Tensor, lengths: torch.Tensor, grad: bool = False) -> torch.Tensor:
    """``single_label_scores`` by the per-frame recursion of the module docstring,
    in float32 (float64 for float64 input: the tests' reference)."""
    lp = log_probs if grad else log_probs.detach()
    lp = lp if lp.dtype == torch.float64 else lp.float()
    b, t_max, _ = lp.shape
    blank, labels = lp[..., 0], lp[..., 1:]
    a = torch.zeros(b, device=lp.device)
    s = torch.full_like(labels[:, 0], NEG_INF)
    e = torch.full_like(labels[:, 0], NEG_INF)
    lengths = lengths.to(lp.device)
    for t in range(t_max):
        live = (t < lengths)[:, None]
        s_new = labels[:, t] + torch.logaddexp(s, a[:, None])
        e_new = blank[:, t, None] + torch.logaddexp(e, s)
        a_new = a + blank[:, t]
        s = torch.where(live, s_new, s)
        e = torch.where(live, e_new, e)
        a = torch.where(live[:, 0], a_new, a)
    return torch.logaddexp(s, e)


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best path: argmax per frame, merge repeats, drop blanks."""
    best = log_probs.argmax(-1).cpu().numpy()
    out = []
    for seq, n in zip(best, lengths.cpu().numpy(), strict=True):
        path = seq[:n]
        keep = np.ones(len(path), bool)
        keep[1:] = path[1:] != path[:-1]
        out.append([int(c) for c in path[keep] if c != 0])
    return out


def blank_frames(log_probs: torch.Tensor, lengths: torch.Tensor) -> tuple[int, int]:
    """(frames whose argmax is blank, valid frames)."""
    mask = torch.arange(log_probs.shape[1], device=log_probs.device)[None] < lengths.to(log_probs.device)[:, None]
    is_blank = (log_probs.argmax(-1) == 0) & mask
    return int(is_blank.sum()), int(mask.sum())


@dataclass
class MetricAccumulator:
    """Sufficient statistics of an epoch's metrics: a confusion matrix and a few
    counts. Accumulators of disjoint parts of the data add up (``merge``, or
    ``to_vector`` + an all-reduce), which is how the ranks of a distributed
    run agree on val metrics without gathering any per-sample score."""

    num_classes: int  # glosses, without blank
    counts: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))  # confusion, rows = true
    top5_hits: int = 0
    greedy_hits: int = 0
    greedy_empty: int = 0  # isolated clips greedy decoding reads as nothing
    greedy_extra: int = 0  # ... as two glosses or more (an insertion, whatever the gloss)
    blank: int = 0
    frames: int = 0
    loss_sum: float = 0.0
    samples: int = 0
    sentences: int = 0  # multi-gloss rows (label 0): scored by word error rate
    sentence_glosses: int = 0
    greedy_edits: int = 0
    beam_sentences: int = 0
    beam_edits: int = 0
    # Score consecutive repetitions of a gloss as one, in readings and
    # references (train.sentences.merge_repeats; continuous/decoding.py).
    merge_repeats: bool = False

    def __post_init__(self) -> None:
        if self.counts.shape != (self.num_classes, self.num_classes):
            self.counts = np.zeros((self.num_classes, self.num_classes), np.int64)

    def add(self, log_probs: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor, loss: float,
            targets: torch.Tensor | None = None, target_lengths: torch.Tensor | None = None,
            beam: Callable[[np.ndarray], Any] | None = None) -> None:
        """A batch: isolated clips (label ≥ 1) into the ranking metrics, sentences
        (label 0, ``targets``) into the word error rate, greedy and (given a
        ``beam`` decoder) beam search."""
        iso = (labels > 0).cpu()
        if bool((~iso).any()):
            assert targets is not None and target_lengths is not None, "sentences need their targets"
            self._add_sentences(log_probs[~iso.to(log_probs.device)], lengths[~iso.to(lengths.device)],
                                _split_targets(targets, target_lengths, ~iso), beam)
        if not bool(iso.any()):
            return
        if not bool(iso.all()):
            keep = iso.to(log_probs.device)
            log_probs, lengths, labels = log_probs[keep], lengths[iso.to(lengths.device)], labels[iso]
        scores = single_label_scores(log_probs, lengths).cpu().numpy()
        y = labels.cpu().numpy() - 1  # class ids 1..V -> columns 0..V-1
        np.add.at(self.counts, (y, scores.argmax(1)), 1)
        k = min(5, scores.shape[1])
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        self.top5_hits += int((top == y[:, None]).any(1).sum())
        decoded = [self._reading(d) for d in greedy_decode(log_probs, lengths)]
        self.greedy_hits += sum(d == [int(t) + 1] for d, t in zip(decoded, y.tolist(), strict=True))
        self.greedy_empty += sum(not d for d in decoded)
        self.greedy_extra += sum(len(d) > 1 for d in decoded)
        nb, nf = blank_frames(log_probs, lengths)
        self.blank += nb
        self.frames += nf
        self.loss_sum += loss * len(y)
        self.samples += len(y)

    def _add_sentences(self, log_probs: torch.Tensor, lengths: torch.Tensor, refs: list[list[int]],
                       beam: Callable[[np.ndarray], Any] | None) -> None:
        from asl_ray.continuous.wer import edits

        refs = [self._reading(r) for r in refs]
        self.sentences += len(refs)
        self.sentence_glosses += sum(len(r) for r in refs)
        for ref, hyp in zip(refs, greedy_decode(log_probs, lengths), strict=True):
            self.greedy_edits += edits(ref, self._reading(hyp)).total
        if beam is not None:
            lp = log_probs.detach().float().cpu().numpy()
            for i, ref in enumerate(refs):
                self.beam_edits += edits(ref, self._reading(beam(lp[i, :int(lengths[i])]).glosses)).total
            self.beam_sentences += len(refs)

    def _reading(self, glosses: list[int]) -> list[int]:
        return merge_repeats(glosses) if self.merge_repeats else glosses

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.sentences:
            out["wer_greedy"] = self.greedy_edits / max(self.sentence_glosses, 1)
            if self.beam_sentences:
                out["wer_beam"] = self.beam_edits / max(self.sentence_glosses, 1)
        if not self.samples:
            return out
        per_class = self.counts.sum(1)
        seen = per_class > 0
        return out | {
            "loss": self.loss_sum / self.samples,
            "top1": float(np.trace(self.counts)) / self.samples,
            "top5": self.top5_hits / self.samples,
            "mean_class_acc": float(np.mean(np.diag(self.counts)[seen] / per_class[seen])),
            "greedy_acc": self.greedy_hits / self.samples,
            "greedy_empty": self.greedy_empty / self.samples,
            "greedy_extra": self.greedy_extra / self.samples,
            "blank_ratio": self.blank / max(self.frames, 1),
        }

    def confusion(self) -> np.ndarray:
        return self.counts

    _SCALARS = ("top5_hits", "greedy_hits", "greedy_empty", "greedy_extra", "blank", "frames", "loss_sum",
                "samples", "sentences", "sentence_glosses", "greedy_edits", "beam_sentences", "beam_edits")

    def to_vector(self) -> np.ndarray:
        """Everything as one float64 vector (exact for counts below 2**53), for an all-reduce."""
        return np.concatenate([self.counts.ravel().astype(np.float64),
                               np.array([float(getattr(self, k)) for k in self._SCALARS])])

    @classmethod
    def from_vector(cls, num_classes: int, vec: np.ndarray, merge_repeats: bool = False) -> MetricAccumulator:
        n = num_classes * num_classes
        acc = cls(num_classes, np.rint(vec[:n]).astype(np.int64).reshape(num_classes, num_classes),
                  merge_repeats=merge_repeats)
        for k, v in zip(cls._SCALARS, vec[n:], strict=True):
            setattr(acc, k, float(v) if k == "loss_sum" else int(round(float(v))))
        return acc

    def merge(self, other: MetricAccumulator) -> MetricAccumulator:
        return MetricAccumulator.from_vector(self.num_classes, self.to_vector() + other.to_vector(),
                                             self.merge_repeats)


def _split_targets(targets: torch.Tensor, target_lengths: torch.Tensor, rows: torch.Tensor) -> list[list[int]]:
    """The concatenated targets of the selected rows, one list per row."""
    ends = torch.cumsum(target_lengths.cpu(), 0).tolist()
    flat = targets.cpu().tolist()
    return [flat[e - n:e] for e, n, keep in zip(ends, target_lengths.cpu().tolist(), rows.tolist(), strict=True)
            if keep]


def ranking_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """top-1, top-5 and mean per-class top-1 of (N, V) class scores; labels are ids 1..V."""
    y = labels - 1  # class ids 1..V -> columns 0..V-1
    order = np.argsort(-scores, axis=1)
    top1 = order[:, 0] == y
    top5 = (order[:, :5] == y[:, None]).any(1)
    per_class = [top1[y == c].mean() for c in np.unique(y)]
    return {"top1": float(top1.mean()), "top5": float(top5.mean()), "mean_class_acc": float(np.mean(per_class))}


def confusion(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(V, V) counts, rows = true gloss, columns = top-1 prediction."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (labels - 1, scores.argmax(1)), 1)
    return cm


def epoch_collapsed(m: dict[str, float]) -> bool:
    """Whether one epoch's metrics (a history row) show the collapse: val
    figures when there was val, else train; chance over that epoch's vocabulary."""
    val = "val_top1" in m
    blank = m.get("val_blank_ratio" if val else "train_blank_ratio", 0.0)
    top1 = m.get("val_top1" if val else "train_top1", 1.0)
    return collapse_warning({"blank_ratio": blank, "top1": top1}, int(m.get("vocab_limit", 1))) is not None


def collapse_summary(history: list[dict[str, float]]) -> str | None:
    """One line for the end of a run that collapsed at some point: how long, and whether it cleared."""
    hit = [int(m["epoch"]) for m in history if epoch_collapsed(m)]
    if not hit:
        return None
    last = int(history[-1]["epoch"])
    state = (f"cleared after epoch {hit[-1]}" if hit[-1] < last else
             "not cleared at the end: raise train.blank_penalty, shrink train.vocab_size or the model, or add data")
    return f"blank collapse in {len(hit)} of {len(history)} epochs (first {hit[0]}); {state}"


class CollapseNotice:
    """What to say of the collapse after an epoch: its warning once when it
    starts, one line when it first clears, then nothing, however often it
    flickers back (seen: five returns in a 60-epoch quickstart run, each
    said twice); the run's summary (:func:`collapse_summary`) counts the epochs."""

    def __init__(self) -> None:
        self.state = "never"  # never -> warned -> cleared

    def update(self, warning: str | None, epoch: int) -> str | None:
        if warning and self.state == "never":
            self.state = "warned"
            return warning
        if not warning and self.state == "warned":
            self.state = "cleared"
            return f"blank collapse cleared at epoch {epoch} (the run's summary says if it came back)"
        return None


def collapse_warning(metrics: dict[str, float], num_classes: int) -> str | None:
    """The report's failure: nearly every frame blank and accuracy at chance."""
    chance = 1.0 / max(num_classes, 1)
    if metrics.get("blank_ratio", 0.0) > 0.95 and metrics.get("top1", 1.0) <= 2 * chance:
        return (f"BLANK COLLAPSE: {metrics['blank_ratio']:.1%} of frames predict blank and top-1 "
                f"{metrics['top1']:.1%} is at chance ({chance:.1%}); raise train.blank_penalty, shrink "
                f"train.vocab_size or the model, or add data")
    return None
