r"""CTC loss plus a blank penalty against blank collapse.

A CTC model can drive its loss down by emitting blank almost everywhere and
the label on a frame or two; with few videos and many classes it ends up
predicting blank everywhere (the 98.5%-blank collapse this project starts
from). The penalty adds the **blank mass**, the mean blank probability over
the valid (non-padding) frames of the batch::

    blank_mass = (1 / Σ_b T_b) Σ_b Σ_{t < T_b} p_t(blank)
    loss = CTC(zero_infinity, mean over the batch) + weight · blank_mass

Label smoothing, at the level of glosses. For isolated signs the model's
posterior over glosses is ``q = softmax_c log p([c] | x)`` over the exact
single-gloss CTC scores (decode.py). With ``label_smoothing = ε`` the CTC
term is mixed with the cross-entropy of the uniform distribution against
``q``, as label smoothing mixes the one-hot target with a uniform one::

    smooth = -(1 / V) Σ_c log q_c
    loss = (1 - ε) · CTC + ε · smooth + weight · blank_mass

With few videos per gloss this keeps the model from becoming certain of a
training example's gloss (train top-1 reaches ~99% while val is at ~60%).
It assumes one gloss per target, so it is only defined for isolated signs.

Targets are concatenated label sequences with per-sample lengths, as
``torch.nn.functional.ctc_loss`` takes them, so multi-gloss targets work the
same way as the one-gloss targets of isolated signs. Gloss smoothing and the
auxiliary classifier apply to the isolated clips of a batch (one-gloss
targets); sentences (asl_ray/continuous) train through CTC and the peak loss.

The peak loss: what greedy decoding needs. A model can reach a low CTC loss
with a gloss's probability spread thin over many frames, each frame still
won by blank: the summed alignments are likely, but no single frame says
the gloss, so greedy decoding reads nothing (measured on the shipped
recipe: the true gloss's best frame is e^-5 below blank at the median of
WLASL100 val). For target gloss ``g_j`` whose frames lie in the window
``W_j`` (the whole clip; a sentence's clip span), its margin on its best frame is::

    m_j = max_{t ∈ W_j} [ lp_t(g_j) - max_{k ≠ g_j} lp_t(k) ]
    peak = mean_j relu(δ - m_j)

It is zero once one frame of the window is won by the gloss by ``δ`` (the
``peak_margin``), so unlike the blank mass it does not push blank down on
the frames between signs, which a healthy CTC model keeps blank, and it
stops acting as soon as greedy decoding would read the gloss. Its gradient
reaches one frame per gloss: up for the gloss, down for its strongest
competitor there (usually blank). Applied to every clip it also pushes up
glosses the model cannot yet tell apart, which costs exact accuracy
(measured: README); with ``peak_known_only`` it acts only on the isolated
clips whose exact scores already rank the target first (and on sentences),
so it turns "ranked first" into "read by greedy decoding" and leaves the
ranking to CTC.

The presence loss: blank must lose where the sign is, whatever the gloss.
Greedy decoding reads a gloss where it beats blank *and* every other gloss.
On a clip the model has not seen, its belief is split over a few glosses,
each of them below blank even where the sign is plain to see; the peak loss
asks for the target to win outright, which on training clips teaches
certainty about identity rather than where the sign is. The presence loss
asks only that blank lose to the glosses *together*, on the frame of the
target's window where the target is most likely (``t_j``, chosen without
gradient)::

    s_j = log Σ_{k ≠ blank} p_{t_j}(k) - log p_{t_j}(blank)     (log-odds of "a sign")
    presence = mean_j relu(δ - s_j)

Its gradient raises every gloss's logit on ``t_j`` in proportion to its
probability there and lowers blank, so the ranking of glosses on that frame
(which CTC trains) is left as it was; what is learnt is "a sign is here",
which carries over to unseen clips better than which sign. Greedy decoding
then reads the best gloss on the sign's frames. It needs no known-only
restriction, because it never pushes up a gloss the model ranks low.

The label prior (Zeyer et al. 2021, arXiv 2105.14849; Huang et al. 2024,
arXiv 2406.02560). Blank's share of the frames is the model's own doing:
every alignment of a one-gloss target is mostly blank, and CTC is content
to spread the gloss thin between blanks. With ``label_prior = α`` the CTC
term scores each alignment by its posteriors divided by the tokens' prior
``π`` (a running mean of the model's own posterior over the training frames,
held without gradient)::

    loss_CTC' = -log Σ_paths Π_t p_t(π_t) / π(π_t)^α

Blank's prior is near 1 and each gloss's near 1/(V·something), so a path
gains ``α·|log π(g)|`` for each frame it spends on a gloss instead of blank:
paths that say the gloss on more of the sign's frames are preferred, and
greedy decoding, which reads the best token per frame, can see it. The
pressure limits itself: the more frames say glosses, the larger their
prior, the smaller the gain. It does not trade accuracy for fewer blanks:
among glosses the factor is nearly the same for all (WLASL100's train
glosses are near balanced), so which gloss wins a frame is still CTC's
doing. The scores are not normalised per frame, so the loss can go below 0;
PyTorch's CTC gradient assumes normalised log-probabilities (it is off by
``exp(x)`` on every valid frame, checked against a plain forward algorithm
in the unit tests), which :func:`ctc_scores_loss` corrects.

The auxiliary classifier (multi-task): cross-entropy of the model's gloss
classifier on the time-averaged encoder, ``aux_weight · CE(aux, label)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from asl_ray.decode import single_label_scores


def valid_frames(lengths: torch.Tensor, t: int) -> torch.Tensor:
    """(B, T) mask of frames inside each sequence."""
    return torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]


def blank_mass(log_probs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    mask = valid_frames(lengths.to(log_probs.device), log_probs.shape[1])
    return (log_probs[..., 0].exp() * mask).sum() / mask.sum().clamp(min=1)


def gloss_smoothing(log_probs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Batch mean of -(1/V) Σ_c log q_c, q the posterior over single glosses."""
    scores = single_label_scores(log_probs, lengths.to(log_probs.device), grad=True)
    return -torch.log_softmax(scores, dim=1).mean()


def padded_targets(targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
    """Concatenated targets -> (B, L) with 0 (blank) as padding."""
    b, width = len(target_lengths), int(target_lengths.max()) if len(target_lengths) else 0
    out = torch.zeros(b, width, dtype=torch.long, device=targets.device)
    ends = torch.cumsum(target_lengths, 0)
    for i in range(b):
        n = int(target_lengths[i])
        out[i, :n] = targets[int(ends[i]) - n:int(ends[i])]
    return out


def _target_frames(lp: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor,
                   spans: torch.Tensor | None, rows: torch.Tensor | None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per target gloss j: (y (B, L) its id, own (B, T, L) its log-probability
    on every frame, inside (B, T, L) its window, real (B, L) a real gloss of a
    selected row)."""
    b, t, _ = lp.shape
    y = padded_targets(targets.to(lp.device), target_lengths.to(lp.device))  # (B, L)
    frame = torch.arange(t, device=lp.device)[None, :, None]
    if spans is None:
        start = torch.zeros_like(y)
        end = lengths.to(lp.device)[:, None].expand_as(y)
    else:
        start, end = spans[..., 0].to(lp.device), spans[..., 1].to(lp.device)
    inside = (frame >= start[:, None]) & (frame < end[:, None])  # (B, T, L)
    own = lp.gather(2, y[:, None, :].expand(b, t, y.shape[1]))  # (B, T, L)
    real = torch.arange(y.shape[1], device=lp.device)[None] < target_lengths.to(lp.device)[:, None]
    if rows is not None:
        real = real & rows.to(lp.device)[:, None]
    return y, own, inside, real


def peak_loss(log_probs: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor,
              spans: torch.Tensor | None = None, margin: float = 1.0, rows: torch.Tensor | None = None
              ) -> torch.Tensor:
    """mean_j relu(margin - m_j), m_j the best-frame margin of target gloss j
    inside its window (``spans`` (B, L, 2) [start, end) frames; None = each
    sequence's valid frames); only the glosses of ``rows`` (B,) bool, if given."""
    lp = log_probs.float()
    if not len(target_lengths) or int(target_lengths.max()) == 0:
        return lp.sum() * 0
    y, own, inside, real = _target_frames(lp, lengths, targets, target_lengths, spans, rows)
    top2 = lp.topk(2, dim=-1)
    first, second = top2.values[..., :1], top2.values[..., 1:]
    rival = torch.where(top2.indices[..., :1] == y[:, None, :], second, first)  # best other token per frame
    m = torch.where(inside, own - rival, torch.full_like(own, -1e4)).max(1).values  # (B, L)
    return (torch.relu(margin - m) * real).sum() / real.sum().clamp(min=1)


def presence_loss(log_probs: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor,
                  target_lengths: torch.Tensor, spans: torch.Tensor | None = None, margin: float = 1.0
                  ) -> torch.Tensor:
    """mean_j relu(margin - s_j), s_j = log(1 - p(blank)) - log p(blank) on the
    frame of target gloss j's window where gloss j is most likely."""
    lp = log_probs.float()
    if not len(target_lengths) or int(target_lengths.max()) == 0:
        return lp.sum() * 0
    _, own, inside, real = _target_frames(lp, lengths, targets, target_lengths, spans, None)
    best = torch.where(inside, own, torch.full_like(own, -1e4)).argmax(1)  # (B, L) frame index, no gradient
    at = lp.gather(1, best[..., None].expand(-1, -1, lp.shape[2]))  # (B, L, V+1) the log-probs on those frames
    sign = torch.logsumexp(at[..., 1:], dim=-1) - at[..., 0]
    return (torch.relu(margin - sign) * real).sum() / real.sum().clamp(min=1)


def known_rows(log_probs: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor,
               target_lengths: torch.Tensor) -> torch.Tensor:
    """(B,) bool: isolated clips whose exact single-gloss scores already rank the
    target first, and every sentence (which has no such ranking)."""
    isolated = target_lengths == 1
    known = ~isolated.clone()
    if bool(isolated.any()):
        scores = single_label_scores(log_probs[isolated], lengths[isolated].to(log_probs.device))
        first = padded_targets(targets, target_lengths)[isolated, 0]
        known[isolated] = scores.argmax(1).to(first.device) + 1 == first
    return known


def ctc_scores_loss(scores: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor,
                    target_lengths: torch.Tensor) -> torch.Tensor:
    """CTC loss (mean over the batch of each sequence's loss over its target
    length, as ``reduction="mean"``) of per-frame scores (B, T, V+1) that need
    not be normalised; sequences too short for their target count 0."""
    per = F.ctc_loss(scores.transpose(0, 1), targets, lengths, target_lengths, blank=0, reduction="none",
                     zero_infinity=True)
    weight = feasible(targets, target_lengths, lengths).to(scores.dtype) / (
        target_lengths.to(scores.device).clamp(min=1).to(scores.dtype) * len(target_lengths))
    # PyTorch's gradient is the true one plus exp(scores) on every valid frame
    # (right for log_softmax outputs, whose exp sums to 1); take that back out.
    mask = valid_frames(lengths.to(scores.device), scores.shape[1])[..., None]
    extra = (scores.exp() * mask).sum((1, 2))
    correction = (weight * extra).sum()
    return (per * weight).sum() - correction + correction.detach()


def feasible(targets: torch.Tensor, target_lengths: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B,) bool: the sequence has frames for every gloss of its target and a
    blank between repeats (otherwise CTC has no path and zero_infinity drops it)."""
    y = padded_targets(targets, target_lengths)
    repeats = ((y[:, 1:] == y[:, :-1]) & (y[:, 1:] > 0)).sum(1) if y.shape[1] > 1 else torch.zeros_like(
        target_lengths)
    return (target_lengths.to(y.device) + repeats) <= lengths.to(y.device)


class LabelPrior:
    """Running mean of the model's posterior over the tokens (blank at 0) on
    the training frames; each call adds the batch and returns α·log π. Each
    worker keeps its own, and it is not checkpointed: a resumed run starts it
    again from its first batch (it follows the last ~100 steps anyway)."""

    def __init__(self, scale: float, decay: float = 0.99) -> None:
        self.scale, self.decay = scale, decay  # decay 0.99: about the last 100 steps
        self.prior: torch.Tensor | None = None

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            mask = valid_frames(lengths.to(log_probs.device), log_probs.shape[1])[..., None]
            mean = (log_probs.float().exp() * mask).sum((0, 1)) / mask.sum().clamp(min=1)
            self.prior = mean if self.prior is None else self.decay * self.prior.to(mean.device) + (
                1 - self.decay) * mean
            return self.scale * self.prior.clamp(min=1e-8).log()


def ctc_blank_loss(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    targets: torch.Tensor,
    target_lengths: torch.Tensor,
    blank_penalty: float = 0.0,
    label_smoothing: float = 0.0,
    peak_weight: float = 0.0,
    peak_margin: float = 1.0,
    spans: torch.Tensor | None = None,
    aux_logits: torch.Tensor | None = None,
    aux_weight: float = 0.0,
    peak_known_only: bool = False,
    presence_weight: float = 0.0,
    presence_margin: float = 1.0,
    prior: LabelPrior | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, ctc, blank_mass) for log-probs (B, T, V+1) with blank at 0;
    with ``prior``, CTC scores the posteriors divided by the label prior."""
    if prior is not None:
        ctc = ctc_scores_loss(log_probs.float() - prior(log_probs, lengths), lengths, targets, target_lengths)
    else:
        ctc = F.ctc_loss(
            log_probs.transpose(0, 1).float(), targets, lengths, target_lengths,
            blank=0, reduction="mean", zero_infinity=True,
        )
    mass = blank_mass(log_probs, lengths)
    total = ctc + blank_penalty * mass
    isolated = target_lengths == 1
    if label_smoothing and bool(isolated.any()):
        # Mixed into the CTC term of the isolated clips only (a sentence has no single-gloss posterior).
        share = float(isolated.float().mean())
        total = total - label_smoothing * share * ctc + label_smoothing * share * gloss_smoothing(
            log_probs[isolated], lengths[isolated])
    if peak_weight:
        rows = known_rows(log_probs, lengths, targets, target_lengths) if peak_known_only else None
        total = total + peak_weight * peak_loss(log_probs, lengths, targets, target_lengths, spans, peak_margin, rows)
    if presence_weight:
        total = total + presence_weight * presence_loss(log_probs, lengths, targets, target_lengths, spans,
                                                        presence_margin)
    if aux_weight and aux_logits is not None:
        if bool(isolated.any()):
            labels = padded_targets(targets, target_lengths)[:, 0]
            total = total + aux_weight * F.cross_entropy(aux_logits[isolated].float(), labels[isolated] - 1)
        else:
            # A batch of sentences only: keep the classifier in the graph with a
            # zero term, or DDP finds parameters without a gradient and stops.
            total = total + 0.0 * aux_logits.sum()
    return total, ctc, mass


@dataclass(frozen=True)
class LossTerms:
    """The weights of every term besides CTC (from ``train.*``)."""

    blank_penalty: float = 0.0
    label_smoothing: float = 0.0
    peak_weight: float = 0.0
    peak_margin: float = 1.0
    aux_weight: float = 0.0
    peak_known_only: bool = False
    presence_weight: float = 0.0
    presence_margin: float = 1.0
    prior: LabelPrior | None = None  # the training run's running label prior (train.label_prior > 0)
    frame_terms_from: int = 1  # epoch (1-based) from which the peak and presence losses and the prior act

    def at_epoch(self, epoch: int) -> LossTerms:
        """The terms of 1-based ``epoch``: before ``frame_terms_from``, CTC with
        the blank penalty, smoothing and the auxiliary classifier only."""
        if epoch >= self.frame_terms_from:
            return self
        return LossTerms(self.blank_penalty, self.label_smoothing, aux_weight=self.aux_weight)

    @classmethod
    def of(cls, train: Any) -> LossTerms:
        return cls(train.blank_penalty, train.label_smoothing, train.peak_weight, train.peak_margin,
                   train.aux_weight, train.peak_known_only, train.presence_weight, train.presence_margin,
                   LabelPrior(train.label_prior) if train.label_prior else None, train.frame_terms_from_epoch)

    def __call__(self, log_probs: torch.Tensor, batch: dict[str, torch.Tensor],
                 aux_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return ctc_blank_loss(log_probs, batch["lengths"], batch["targets"], batch["target_lengths"],
                              self.blank_penalty, self.label_smoothing, self.peak_weight, self.peak_margin,
                              batch.get("spans"), aux_logits, self.aux_weight, self.peak_known_only,
                              self.presence_weight, self.presence_margin, self.prior)
