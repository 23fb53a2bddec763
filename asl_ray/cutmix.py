r"""Temporal CutMix of isolated-sign batches (``train.cutmix``).

The recipe fits its ~630 train clips to ~100% train top-1 while val stays
near 75%: with a handful of clips per gloss it learns the clips, not the
signs. Augmentation moves each clip in space and time; CutMix also mixes
the *labels*, the regulariser that, in image classification with little
data, keeps a model from becoming certain of what it has seen.

For one batch of one-gloss clips, with chance ``p``: a share ``s`` is drawn
from ``share`` and every clip ``i`` gets a span of ``round(s · T_i)`` of its
frames, at a random place, replaced by a span of the same length from clip
``π(i)`` of the same batch (``π`` a random permutation; a partner shorter
than the span is stretched to it). The model's CTC posteriors on the mixed
clip are trained towards both glosses::

    loss = (1 - s) · L(x̃, g_i) + s · L(x̃, g_π(i))

with ``L`` the run's whole loss (CTC, blank penalty, gloss smoothing). Under
CTC this is sound where a classifier's mixed target is not: each gloss's
term only asks that its own frames say it and the rest be blank or
anything, so both terms can be met at once, at their own frames; the
weights say how much of the clip each gloss was given. The velocities at
the two seams are a jump from one clip to the other: the model learns that
a sign can start and stop anywhere, which the sentences of
``asl_ray/continuous`` also teach.

Batches with a multi-gloss target (training sentences) are left alone.
With ``train.label_prior`` the loss is taken twice on a mixed batch, so the
running prior takes that batch in twice (untested together; noted).
Plain torch on the padded batch, after augmentation, so it works the same
for both ingest paths and every device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class TemporalCutMix:
    """``p``: chance that a batch is mixed; ``share``: the range the share of
    each clip's frames given to its partner is drawn from, once per batch."""

    p: float
    share: tuple[float, float]

    def __call__(self, b: Batch, generator: torch.Generator) -> tuple[Batch, Batch | None, float]:
        """(mixed batch, the same batch with the partners' targets or None when
        it was not mixed, the weight of the partners' term)."""
        n = len(b["lengths"])
        if n < 2 or "spans" in b or bool((b["target_lengths"] != 1).any()):
            return b, None, 0.0
        if float(torch.rand((), generator=generator)) >= self.p:
            return b, None, 0.0
        lo, hi = self.share
        s = lo + (hi - lo) * float(torch.rand((), generator=generator))
        perm = torch.randperm(n, generator=generator)
        x = mix_spans(b["x"], b["lengths"], perm, s, generator)
        mixed = {**b, "x": x}
        partner = {**mixed, "labels": b["labels"][perm.to(b["labels"].device)],
                   "targets": b["targets"][perm.to(b["targets"].device)]}
        return mixed, partner, s


def mix_spans(x: torch.Tensor, lengths: torch.Tensor, perm: torch.Tensor, share: float,
              generator: torch.Generator) -> torch.Tensor:
    """A copy of padded ``x`` (B, T, D) in which each sequence ``i`` has
    ``round(share · T_i)`` (at least 1) consecutive frames, at a random
    place, taken from sequence ``perm[i]``: a random span of it, or all of it
    stretched when it is shorter. Padding frames are left as they are."""
    out = x.clone()
    lens = lengths.tolist()
    for i, j in enumerate(perm.tolist()):
        if i == j:
            continue
        ti, tj = int(lens[i]), int(lens[j])
        span = min(ti, max(1, round(share * ti)))
        start = int(torch.randint(0, ti - span + 1, (), generator=generator))
        if tj >= span:
            from_ = int(torch.randint(0, tj - span + 1, (), generator=generator))
            idx = torch.arange(from_, from_ + span)
        else:
            idx = torch.linspace(0, tj - 1, span).round().long()
        out[i, start:start + span] = x[j, idx.to(x.device)]
    return out
