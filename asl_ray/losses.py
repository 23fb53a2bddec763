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
same way as the one-gloss targets of isolated signs.
"""

from __future__ import annotations

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


def ctc_blank_loss(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    targets: torch.Tensor,
    target_lengths: torch.Tensor,
    blank_penalty: float = 0.0,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, ctc, blank_mass) for log-probs (B, T, V+1) with blank at 0."""
    ctc = F.ctc_loss(
        log_probs.transpose(0, 1).float(), targets, lengths, target_lengths,
        blank=0, reduction="mean", zero_infinity=True,
    )
    mass = blank_mass(log_probs, lengths)
    total = ctc + blank_penalty * mass
    if label_smoothing:
        if bool((target_lengths != 1).any()):
            raise ValueError("train.label_smoothing needs one-gloss targets (isolated signs)")
        total = total - label_smoothing * ctc + label_smoothing * gloss_smoothing(log_probs, lengths)
    return total, ctc, mass
