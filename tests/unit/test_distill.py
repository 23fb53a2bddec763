"""Distillation from trained checkpoints (distill.py): the KL term per CTC
step, the teachers reading the student's inputs through their own
standardisers, a student that learns to match, and one-line errors for
teachers that do not fit the run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from asl_ray.checkpoint import LoadedCheckpoint, build_model, load_checkpoint, save_checkpoint
from asl_ray.config import Config, load_config
from asl_ray.dataset import SignDataset, collate
from asl_ray.decode import single_label_scores
from asl_ray.distill import Teacher, check_teachers, distill_loss, gloss_distill_loss
from asl_ray.errors import UserError
from asl_ray.loop import FitState, fit, make_optimizer, make_scheduler, memory_batches
from asl_ray.samples import fit_standardizer
from asl_ray.vocab import Vocabulary
from tests.unit.test_training_parts import _toy_samples

VOCAB = Vocabulary(("g0", "g1", "g2"))
BASE = ["data.wlasl_json=x.json", "model.hidden_size=16", "model.num_layers=1", "model.dropout=0.0",
        "train.lr=0.01", "train.augment.enabled=false", "train.warmup_epochs=0"]


def test_distill_loss_is_the_kl_per_valid_step() -> None:
    g = torch.Generator().manual_seed(0)
    lp = torch.log_softmax(torch.randn(2, 4, 3, generator=g), -1)
    q = torch.softmax(torch.randn(2, 4, 3, generator=g), -1)
    lengths = torch.tensor([4, 2])
    by_hand = [float((q[b, s] * (q[b, s].log() - lp[b, s])).sum()) for b in range(2) for s in range(int(lengths[b]))]
    assert float(distill_loss(lp, q, lengths)) == pytest.approx(sum(by_hand) / 6, rel=1e-5)
    assert float(distill_loss(lp, lp.exp(), lengths)) == pytest.approx(0.0, abs=1e-6)
    padded = lp.clone()
    padded[1, 2:] = torch.log_softmax(torch.randn(2, 3, generator=g), -1)  # steps past row 1's length
    assert float(distill_loss(padded, q, lengths)) == pytest.approx(float(distill_loss(lp, q, lengths)))
    one_hot = torch.zeros_like(q)
    one_hot[..., 0] = 1.0  # 0 · log 0 terms count as 0, not NaN
    assert torch.isfinite(distill_loss(lp, one_hot, lengths))


def test_gloss_distill_loss_is_the_kl_between_gloss_posteriors_on_one_gloss_clips() -> None:
    g = torch.Generator().manual_seed(0)
    lp = torch.log_softmax(torch.randn(3, 5, 4, generator=g), -1)
    lengths = torch.tensor([5, 3, 4])
    q = torch.softmax(torch.randn(3, 3, generator=g), -1)
    rows = torch.tensor([True, False, True])  # row 1: a sentence
    p = torch.softmax(single_label_scores(lp, lengths), 1)
    by_hand = [float((q[b] * (q[b].log() - p[b].log())).sum()) for b in (0, 2)]
    assert float(gloss_distill_loss(lp, lengths, q, rows)) == pytest.approx(sum(by_hand) / 2, rel=1e-5)
    assert float(gloss_distill_loss(lp, lengths, p, torch.ones(3, dtype=torch.bool))) == pytest.approx(0.0, abs=1e-6)
    assert float(gloss_distill_loss(lp, lengths, q, torch.zeros(3, dtype=torch.bool))) == 0.0
    lp = lp.requires_grad_()
    gloss_distill_loss(lp, lengths, q, rows).backward()
    assert lp.grad is not None and float(lp.grad[1].abs().sum()) == 0.0  # a sentence row pays nothing


def _teacher(tmp_path: Path, name: str, overrides: list[str], epochs: int, samples_used: slice) -> Path:
    torch.manual_seed(len(name))
    cfg = load_config(None, [*BASE, f"train.epochs={epochs}", *overrides])
    samples = _toy_samples()
    std = fit_standardizer(samples[samples_used], cfg.features)  # not the student's standardiser
    model = build_model(cfg, 3)
    opt = make_optimizer(model, cfg.train)
    state = FitState(model, opt, make_scheduler(opt, cfg.train, epochs))
    fit(state, cfg.train, memory_batches(samples, cfg.features, std, batch_size=6), None, 3)
    return save_checkpoint(tmp_path / name, cfg, model, VOCAB, std, {"epoch": epochs}, state.history)


def test_teachers_average_their_posteriors_on_their_own_standardised_inputs(tmp_path: Path) -> None:
    cks = [load_checkpoint(_teacher(tmp_path, n, [], 1, sl)) for n, sl in (("a", slice(0, 9)), ("bb", slice(9, 18)))]
    samples = _toy_samples()
    features = cks[0].cfg.features
    student = fit_standardizer(samples, features)
    assert not np.allclose(student.mean, cks[0].standardizer.mean)
    raw = collate([SignDataset(samples[:4], features, None)[i] for i in range(4)])
    x_student = torch.from_numpy(student(raw["x"].numpy()))
    got = Teacher(cks, student)(x_student, raw["lengths"])
    with torch.no_grad():
        want = sum(ck.model(torch.from_numpy(ck.standardizer(raw["x"].numpy())), raw["lengths"]).exp()
                   for ck in cks) / 2
    assert got.shape == (4, 16, 4)
    valid = raw["lengths"].max()  # every toy clip has 16 frames
    np.testing.assert_allclose(got[:, :valid].numpy(), want[:, :valid].numpy(), atol=1e-4)
    np.testing.assert_allclose(got.sum(-1).numpy(), 1.0, atol=1e-5)


def test_gloss_teachers_average_their_gloss_posteriors_over_their_own_steps(tmp_path: Path) -> None:
    cks = [load_checkpoint(_teacher(tmp_path, n, o, 1, slice(None)))
           for n, o in (("a", []), ("b4", ["model.subsample=4"]))]
    samples = _toy_samples()
    std = cks[0].standardizer
    raw = collate([SignDataset(samples[:4], cks[0].cfg.features, std)[i] for i in range(4)])
    lengths = raw["lengths"] - torch.tensor([0, 5, 9, 3])  # clips of several lengths, padded
    got = Teacher(cks, std, level="glosses")(raw["x"], lengths)
    with torch.no_grad():
        want = sum(torch.softmax(single_label_scores(
            ck.model(torch.from_numpy(ck.standardizer(samples_x)), lengths),
            (lengths + ck.cfg.model.subsample - 1) // ck.cfg.model.subsample), 1)
            for ck, samples_x in ((c, std.mean + raw["x"].numpy() * std.std) for c in cks)) / 2
    assert got.shape == (4, 3)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4)
    # A teacher with another CTC step fits a gloss-level run, not a per-step one.
    cfg = _run_cfg(tmp_path, tmp_path / "b4", "train.distill_level=glosses")
    assert len(check_teachers(cfg, VOCAB)) == 1
    with pytest.raises(UserError, match="distill_level=glosses can"):
        check_teachers(_run_cfg(tmp_path, tmp_path / "b4"), VOCAB)


@pytest.mark.parametrize("level", ["steps", "glosses"])
def test_a_student_learns_to_match_its_teacher(tmp_path: Path, level: str) -> None:
    # A teacher trained for one epoch says something CTC on the labels would
    # not teach: only the distillation term can bring a student to it.
    ck = load_checkpoint(_teacher(tmp_path, "t", [], 1, slice(None)))
    samples = _toy_samples()

    def student(weight: float) -> list[dict[str, float]]:
        torch.manual_seed(1)
        cfg = load_config(None, [*BASE, "train.epochs=15", f"train.distill_weight={weight}",
                                 f"train.distill_level={level}"])
        std = fit_standardizer(samples, cfg.features)
        model = build_model(cfg, 3)
        opt = make_optimizer(model, cfg.train)
        state = FitState(model, opt, make_scheduler(opt, cfg.train, 15))
        val = torch.utils.data.DataLoader(SignDataset(samples, cfg.features, std), batch_size=18,
                                          collate_fn=collate)
        fit(state, cfg.train, memory_batches(samples, cfg.features, std, batch_size=6), lambda: val, 3,
            teacher=Teacher([ck], std, level=level))
        return state.history

    taught, alone = student(10.0), student(0.0)  # weight 0: the term is measured, not trained on
    kd = [h["train_distill"] for h in taught]
    assert kd[-1] < 0.5 * alone[-1]["train_distill"], (kd, [h["train_distill"] for h in alone])


def _run_cfg(tmp_path: Path, teacher: Path, *more: str) -> Config:
    return load_config(None, [*BASE, f"train.distill_from=[{teacher}]", *more])


def test_teachers_that_do_not_fit_the_run_are_one_line_errors(tmp_path: Path) -> None:
    good = _teacher(tmp_path, "t", [], 1, slice(None))
    assert [type(c) for c in check_teachers(_run_cfg(tmp_path, good), VOCAB)] == [LoadedCheckpoint]
    cases = [
        (_run_cfg(tmp_path, tmp_path / "missing"), VOCAB, "train.distill_from: .*missing: neither a checkpoint"),
        (_run_cfg(tmp_path, good), Vocabulary(("g0", "g1", "g9")), "its 3 glosses are not this run's 3"),
        (_run_cfg(tmp_path, good, "features.inputs=[phono]"), VOCAB, "reads inputs"),
        (_run_cfg(tmp_path, good, "model.subsample=4"), VOCAB, "every 1 frames, this run every 4"),
        (_run_cfg(tmp_path, good, "extract.output_dir=elsewhere"), VOCAB, "trained on other data"),
    ]
    for cfg, vocab, message in cases:
        with pytest.raises(UserError, match=message) as e:
            check_teachers(cfg, vocab)
        assert "\n" not in str(e.value)
    sentences = _teacher(tmp_path, "att", ["model.encoder=attention"], 1, slice(None))
    with pytest.raises(UserError, match="positions"):
        check_teachers(_run_cfg(tmp_path, sentences, "model.encoder=attention", "train.sentences.share=0.5"), VOCAB)
