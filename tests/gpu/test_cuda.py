"""The code paths only a CUDA GPU takes: the closed-form exact scores,
bf16 autocast, the fp16 gradient scaler, training and evaluation on the
device, and a checkpoint written from a GPU run read back on a CPU.

They skip on a machine without CUDA (CI and this project's 2-core machine)
and run on a GPU machine: `python -m pytest -m gpu tests/gpu`
(README, "On a GPU"; `scripts/device_check.sh` runs them there)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from asl_ray.checkpoint import build_model, load_checkpoint, save_checkpoint
from asl_ray.config import load_config
from asl_ray.dataset import SignDataset, collate
from asl_ray.decode import single_label_scores, single_label_scores_closed
from asl_ray.loop import (
    FitState,
    Precision,
    _batch_loss,
    evaluate,
    fit,
    make_optimizer,
    make_scheduler,
    memory_batches,
    precision_for,
    train_epoch,
)
from asl_ray.losses import LossTerms
from asl_ray.samples import fit_standardizer
from asl_ray.vocab import Vocabulary
from tests.unit.test_decode import closed_form_matches_loop
from tests.unit.test_training_parts import _toy_samples

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine: these tests run on a "
                       "GPU machine (scripts/device_check.sh)"),
]
CUDA = torch.device("cuda")
RECIPE = ["data.wlasl_json=x.json", "model.encoder=attention", "model.hidden_size=32", "model.num_layers=2",
          "model.attention_heads=4", "model.part_embed=true", "model.dropout=0.0", "train.lr=0.003",
          "train.augment.enabled=false", "train.warmup_epochs=0", "train.label_smoothing=0.1"]


def _setup(sets: list[str]):  # type: ignore[no-untyped-def]
    cfg = load_config(None, RECIPE + sets)
    samples = _toy_samples()
    std = fit_standardizer(samples, cfg.features)
    return cfg, samples, std


def test_closed_form_scores_on_cuda_equal_the_recursion_and_are_the_ones_used() -> None:
    for seed in range(3):
        closed_form_matches_loop(CUDA, seed)
    lp = torch.log_softmax(torch.randn(4, 30, 11, device=CUDA), -1)
    lengths = torch.tensor([30, 12, 1, 29])
    assert torch.equal(single_label_scores(lp, lengths), single_label_scores_closed(lp, lengths))


def test_bf16_is_chosen_on_this_gpu_and_its_step_follows_float32() -> None:
    """Autocast to bf16: the loss within 2% of float32's from the same weights
    and batch, the gradient pointing the same way (cosine > 0.99)."""
    assert torch.cuda.is_bf16_supported(), "every GPU this project targets (Ampere and later) has bf16"
    bf16 = precision_for(CUDA, amp=True)
    assert bf16.dtype == torch.bfloat16 and bf16.scaler is None
    assert precision_for(CUDA, amp=False).dtype is None
    cfg, samples, std = _setup([])
    torch.manual_seed(0)
    model = build_model(cfg, 3).to(CUDA)
    batch = {k: v.to(CUDA) for k, v in collate([SignDataset(samples, cfg.features, std)[i] for i in range(12)]).items()}
    terms = LossTerms.of(cfg.train)
    grads, losses = [], []
    for precision in (Precision(), bf16):
        model.zero_grad()
        loss = _batch_loss(model, batch, terms, precision, CUDA, None, None, 1.0)[2]
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert abs(losses[1] - losses[0]) < 0.02 * abs(losses[0])
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0).item() > 0.99


def test_fp16_with_a_gradient_scaler_trains_where_bf16_is_missing() -> None:
    cfg, samples, std = _setup([])
    torch.manual_seed(0)
    model = build_model(cfg, 3).to(CUDA)
    before = [p.detach().clone() for p in model.parameters()]
    fp16 = precision_for(CUDA, amp=True, bf16_supported=False)
    assert fp16.dtype == torch.float16 and fp16.scaler is not None
    opt = make_optimizer(model, cfg.train)
    batches = memory_batches(samples, cfg.features, std, batch_size=6)
    # The scaler starts at 2**16 and halves on every overflowing step, which
    # it skips: the first few steps may be skipped, not all 24.
    epochs = [train_epoch(model, batches(epoch, 3), opt, 3, device=CUDA, precision=fp16,
                          terms=LossTerms.of(cfg.train)) for epoch in range(8)]
    assert all(m["loss"] == m["loss"] for m in epochs)  # not NaN
    assert sum(m["skipped_steps"] for m in epochs) < 12 and epochs[-1]["skipped_steps"] == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_a_run_learns_on_cuda_with_bf16_and_its_checkpoint_scores_the_same_on_cpu(tmp_path: Path) -> None:
    cfg, samples, std = _setup(["train.epochs=25"])
    torch.manual_seed(0)
    model = build_model(cfg, 3).to(CUDA)
    opt = make_optimizer(model, cfg.train)
    state = FitState(model, opt, make_scheduler(opt, cfg.train, cfg.train.epochs))
    val = torch.utils.data.DataLoader(SignDataset(samples, cfg.features, std), batch_size=18, collate_fn=collate)
    fit(state, cfg.train, memory_batches(samples, cfg.features, std, batch_size=6), lambda: val, 3, device=CUDA,
        amp=True)
    h = state.history
    assert h[-1]["val_top1"] == 1.0 and h[-1]["train_loss"] < h[0]["train_loss"]
    assert 0 < h[-1]["gpu_peak_gb"] < 1 and sum(e["train_skipped_steps"] for e in h) == 0

    save_checkpoint(tmp_path, cfg, model, Vocabulary(("g0", "g1", "g2")), std, {"epoch": state.epoch}, h)
    ck = load_checkpoint(tmp_path)  # onto the CPU
    assert next(ck.model.parameters()).device.type == "cpu"
    on_gpu, _ = evaluate(model, val, 3, cfg.train.blank_penalty, CUDA)
    on_cpu, _ = evaluate(ck.model, val, 3, cfg.train.blank_penalty)
    assert on_cpu["top1"] == on_gpu["top1"] == 1.0
    assert on_cpu["loss"] == pytest.approx(on_gpu["loss"], rel=1e-3)
