r"""Distillation: a run learns to match the CTC posterior of trained checkpoints.

Why. The seeds of one recipe, their posteriors averaged, read better than any
one of them: on WLASL100 val the CTC recipe's three seeds read sentences at a
word error rate of 40.4% together against 48.4% alone, and the attention
recipe's three rank isolated clips at 73.0% against 72.6% (README). An
ensemble costs its size at every prediction; distillation trains one model,
the student, towards the ensemble's output so that one model's cost buys
some of the ensemble's gain.

What. The teachers are ``train.distill_from`` (checkpoint or run folders).
They read each training batch (the student's augmented view, sentences
included) without gradients, and their per-step posteriors are averaged
(blank included), ``q``. The student's term is the KL divergence from
``q`` at every CTC step, averaged over the batch's valid steps::

    L_kd = (1 / Σ_b S_b) Σ_b Σ_{s < S_b} Σ_v q_{b,s,v} (log q_{b,s,v} − log p_{b,s,v})
    loss = CTC terms + train.distill_weight · L_kd

Per step rather than per gloss because a CTC model's output is its
alignment: matching ``q`` step by step teaches where a gloss is said as well
as which one, which is what greedy decoding of sentences reads. It needs
teacher and student to take their steps over the same frames: the same
inputs and the same ``model.subsample``; teachers trained on other data
could have seen this run's val videos, so their data section must match too.

``train.distill_level=glosses`` matches a gloss posterior instead, for
isolated-sign recipes whose CTC output is blank on every frame (README,
"WLASL100: what matters"): there a per-step match mostly teaches blank, and
what ranks glosses is the exact single-gloss score log p([g] | x)
(``decode.single_label_scores``). Teachers' posteriors over glosses,
``q_g = softmax_g(score_g)``, are averaged, and on each one-gloss clip of the
batch (sentences have no single gloss to rank) the student pays::

    L_kd = (1 / |clips|) Σ_clips Σ_g q_g (log q_g − log p_g),  p = softmax(student scores)

Each model scores a clip over its own CTC steps, so here the teachers'
``model.subsample`` may differ from the student's.

Plain torch: the Ray Train worker builds a :class:`Teacher` and hands it to
``loop.fit``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from asl_ray.checkpoint import LoadedCheckpoint, load_checkpoint, max_positions
from asl_ray.config import Config
from asl_ray.decode import single_label_scores
from asl_ray.errors import UserError
from asl_ray.inputs import Standardizer
from asl_ray.vocab import Vocabulary


def distill_loss(log_probs: torch.Tensor, teacher: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over valid steps of KL(teacher ‖ student): ``log_probs`` (B, S, V+1)
    the student's log-posteriors, ``teacher`` (B, S, V+1) probabilities,
    ``lengths`` (B,) valid steps per row."""
    s = log_probs.shape[1]
    valid = (torch.arange(s, device=log_probs.device)[None, :] < lengths.to(log_probs.device)[:, None])
    kl = _kl(teacher, log_probs)
    return (kl * valid).sum() / valid.sum().clamp(min=1)


def _kl(q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """KL(q ‖ p) over the last axis; xlogy makes 0·log 0 = 0."""
    q = q.to(log_p.dtype)
    return (torch.xlogy(q, q) - q * log_p).sum(-1)


def gloss_distill_loss(log_probs: torch.Tensor, lengths: torch.Tensor, teacher: torch.Tensor,
                       rows: torch.Tensor) -> torch.Tensor:
    """Mean over the ``rows`` (bool (B,): the one-gloss clips) of KL(teacher ‖
    student) between posteriors over single glosses: ``log_probs`` (B, S, V+1)
    the student's CTC output over ``lengths`` steps, ``teacher`` (B, V)
    probabilities. Zero when no row is selected."""
    scores = single_label_scores(log_probs, lengths, grad=True)
    kl = _kl(teacher, torch.log_softmax(scores, dim=1))
    sel = rows.to(kl.device)
    return (kl * sel).sum() / sel.sum().clamp(min=1)


class Teacher:
    """The averaged posterior of trained models, per CTC step (``level``
    "steps") or over single glosses ("glosses"), on inputs standardised by the
    student's standardiser (each teacher's own is applied instead)."""

    def __init__(self, checkpoints: Sequence[LoadedCheckpoint], student: Standardizer,
                 device: torch.device | None = None, level: str = "steps") -> None:
        device = device or torch.device("cpu")
        self.level = level
        self.models = [ck.model.to(device).eval() for ck in checkpoints]
        # x_teacher = (x_student · std_s + mean_s − mean_t) / std_t, per input.
        self.scale = [torch.as_tensor(student.std / ck.standardizer.std, dtype=torch.float32, device=device)
                      for ck in checkpoints]
        self.shift = [torch.as_tensor((student.mean - ck.standardizer.mean) / ck.standardizer.std,
                                      dtype=torch.float32, device=device) for ck in checkpoints]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The mean over teachers of their probabilities: (B, S, V+1) per CTC
        step, or (B, V) over single glosses; ``lengths`` in frames."""
        total = None
        for model, scale, shift in zip(self.models, self.scale, self.shift, strict=True):
            lp = model(x * scale + shift, lengths).float()
            if self.level == "glosses":
                p = torch.softmax(single_label_scores(lp, model.output_lengths(lengths)), dim=1)
            else:
                p = lp.exp()
            total = p if total is None else total + p
        assert total is not None
        return total / len(self.models)


def _data_key(cfg: Config) -> dict[str, object]:
    """What decides the splits: the data section and the feature dataset read."""
    return {**cfg.data.model_dump(mode="json"), "features": str(cfg.extract.output_dir)}


def check_teachers(cfg: Config, vocab: Vocabulary) -> list[LoadedCheckpoint]:
    """Load ``train.distill_from`` and check each fits the run; one-line errors."""
    loaded = []
    for where in cfg.train.distill_from:
        try:
            ck = load_checkpoint(where)
        except UserError as e:
            raise UserError(f"train.distill_from: {e}") from e
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"train.distill_from={where}: not a checkpoint ({type(e).__name__}: {e})") from e
        t = ck.cfg
        if ck.vocab.glosses != vocab.glosses:
            raise UserError(f"train.distill_from={where}: its {ck.vocab.num_glosses} glosses are not this run's "
                            f"{vocab.num_glosses} (train.vocab_size and the data must match)")
        if list(t.features.inputs) != list(cfg.features.inputs):
            raise UserError(f"train.distill_from={where}: reads inputs {list(t.features.inputs)}, this run "
                            f"{list(cfg.features.inputs)}")
        if cfg.train.distill_level == "steps" and t.model.subsample != cfg.model.subsample:
            raise UserError(f"train.distill_from={where}: takes a CTC step every {t.model.subsample} frames, this "
                            f"run every {cfg.model.subsample} (model.subsample): per-step posteriors cannot be matched "
                            "(train.distill_level=glosses can)")
        if t.model.encoder == "attention" and max_positions(t) < max_positions(cfg):
            raise UserError(f"train.distill_from={where}: its attention encoder has {max_positions(t)} positions, "
                            f"this run's inputs reach {max_positions(cfg)} (train.sentences must match)")
        if _data_key(t) != _data_key(cfg):
            raise UserError(f"train.distill_from={where}: trained on other data (data section or "
                            "extract.output_dir differs), so it may have seen this run's val videos")
        loaded.append(ck)
    return loaded


def load_teacher(cfg: Config, vocab: Vocabulary, student: Standardizer, device: torch.device) -> Teacher | None:
    """The run's :class:`Teacher`, or None when ``train.distill_from`` is empty."""
    if not cfg.train.distill_from:
        return None
    return Teacher(check_teachers(cfg, vocab), student, device, cfg.train.distill_level)

