from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F

from asl_ray.decode import (
    CollapseNotice,
    MetricAccumulator,
    collapse_summary,
    collapse_warning,
    greedy_decode,
    single_label_scores,
    single_label_scores_closed,
    single_label_scores_loop,
)


def _brute_force(lp: np.ndarray, c: int) -> float:
    """log p([c]) by summing every alignment that collapses to [c]."""
    t, v = lp.shape
    total = -np.inf
    for path in itertools.product(range(v), repeat=t):
        arr = np.array(path)
        keep = np.ones(t, bool)
        keep[1:] = arr[1:] != arr[:-1]
        if [x for x in arr[keep] if x != 0] == [c]:
            total = np.logaddexp(total, lp[np.arange(t), arr].sum())
    return float(total)


def test_exact_scores_match_brute_force_and_ctc_loss() -> None:
    torch.manual_seed(0)
    lp = torch.log_softmax(torch.randn(2, 5, 4), -1)
    lengths = torch.tensor([5, 3])
    for form in (single_label_scores, single_label_scores_closed):
        scores = form(lp, lengths)
        for b, n in enumerate(lengths.tolist()):
            for c in range(1, 4):
                brute = _brute_force(lp[b, :n].numpy(), c)
                assert abs(scores[b, c - 1].item() - brute) < 1e-4
            ctc = F.ctc_loss(lp[b:b + 1, :n].transpose(0, 1), torch.tensor([[c]]), torch.tensor([n]),
                             torch.tensor([1]), reduction="sum")
            assert abs(-ctc.item() - scores[b, c - 1].item()) < 1e-4


def closed_form_matches_loop(device: torch.device, seed: int) -> None:
    """The closed form (GPUs) equals the per-frame recursion to 1e-5, scores
    and gradients, on random log-probabilities of a WLASL100-sized batch with
    uneven lengths (one of a single frame, one that fills the batch) and
    blank winning most frames of half the clips. The reference is the
    recursion in float64 (the float32 loop's own gradient is off by up to
    2e-5; the closed form's by ~1e-6); shared with the GPU tests."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 70, 101, generator=g, dtype=torch.float64) * 3
    x[:8, :, 0] += 6
    lp = torch.log_softmax(x, -1).float().to(device)
    lengths = torch.randint(1, 71, (16,), generator=g)
    lengths[0], lengths[1] = 70, 1
    w = torch.randn(16, 100, generator=g, dtype=torch.float64).to(device)

    def scores_and_grad(form, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
        inputs = inputs.clone().requires_grad_(True)
        scores = form(inputs, lengths, grad=True)
        # The loss's use of it (log-softmax over glosses, losses.gloss_smoothing) and a single gloss's score.
        out = torch.log_softmax(scores.double(), 1).mul(w).sum() + scores[:, 7].double().sum()
        return scores.double(), torch.autograd.grad(out, inputs)[0].double()

    fast, g_fast = scores_and_grad(single_label_scores_closed, lp)
    ref, g_ref = scores_and_grad(single_label_scores_loop, lp.double())
    loop32 = single_label_scores_loop(lp, lengths)
    assert fast.shape == (16, 100) and single_label_scores_closed(lp, lengths).dtype == torch.float32
    assert ((fast - ref).norm() / ref.norm()).item() < 1e-5
    assert ((fast - loop32.double()).norm() / ref.norm()).item() < 1e-5
    assert torch.isfinite(g_fast).all()
    assert ((g_fast - g_ref).norm() / g_ref.norm()).item() < 1e-5
    # Frames past a clip's length get no gradient.
    pad = torch.arange(70, device=lp.device)[None] >= lengths.to(lp.device)[:, None]
    assert g_fast[pad].abs().max().item() == 0.0


def test_closed_form_scores_equal_the_loop() -> None:
    for seed in range(3):
        closed_form_matches_loop(torch.device("cpu"), seed)


def test_ranking_works_when_blank_dominates() -> None:
    lp = torch.full((1, 10, 5), -8.0)
    lp[0, :, 0] = -0.01  # blank wins every frame
    lp[0, 4, 3] = -3.0  # but class 3 is clearly second on one frame
    lp = torch.log_softmax(lp, -1)
    assert greedy_decode(lp, torch.tensor([10])) == [[]]
    assert single_label_scores(lp, torch.tensor([10])).argmax().item() == 2  # class id 3


def test_greedy_decode_merges_repeats() -> None:
    path = torch.tensor([[0, 2, 2, 0, 2, 3, 3, 0]])
    lp = F.one_hot(path, 4).float().log()
    assert greedy_decode(lp, torch.tensor([8])) == [[2, 2, 3]]
    assert greedy_decode(lp, torch.tensor([3])) == [[2]]


def test_metrics_and_collapse_warning() -> None:
    acc = MetricAccumulator(num_classes=4)
    lp = torch.full((4, 6, 5), -10.0)
    lp[:, :, 0] = 0.0
    labels = torch.tensor([1, 2, 3, 4])
    for i, y in enumerate(labels.tolist()):
        lp[i, 2, y] = -1.0 if i < 3 else -20.0  # three right, one wrong
    lp[3, 2, 1] = -1.0
    lp = torch.log_softmax(lp, -1)
    acc.add(lp, torch.full((4,), 6), labels, loss=1.0)
    m = acc.compute()
    assert m["top1"] == 0.75 and m["blank_ratio"] == 1.0 and m["greedy_acc"] == 0.0
    assert m["greedy_empty"] == 1.0 and m["greedy_extra"] == 0.0  # blank on every frame: read as nothing
    assert m["top5"] == 1.0
    assert acc.confusion()[3, 0] == 1
    assert collapse_warning(m, 4) is None  # blank everywhere, but ranking is far above chance
    assert "BLANK COLLAPSE" in (collapse_warning({"blank_ratio": 0.99, "top1": 0.01}, 100) or "")


def test_greedy_misses_are_told_apart_and_survive_the_all_reduce() -> None:
    paths = torch.tensor([[0, 2, 2, 0],   # gloss 2 of a gloss-2 clip: right
                          [0, 0, 0, 0],   # nothing
                          [0, 3, 0, 1],   # two glosses: an insertion
                          [1, 1, 0, 0]])  # one gloss, the wrong one
    lp = torch.log_softmax(F.one_hot(paths, 5).float() * 5, -1)
    acc = MetricAccumulator(num_classes=4)
    acc.add(lp, torch.full((4,), 4), torch.tensor([2, 2, 3, 4]), loss=1.0)
    for m in (acc.compute(), acc.merge(acc).compute()):
        assert (m["greedy_acc"], m["greedy_empty"], m["greedy_extra"]) == (0.25, 0.25, 0.25)


def test_collapse_is_summarised_once_for_the_run() -> None:
    def epoch(e: int, top1: float, blank: float) -> dict[str, float]:
        return {"epoch": e, "vocab_limit": 100, "val_top1": top1, "val_blank_ratio": blank}

    healthy = [epoch(1, 0.3, 0.99), epoch(2, 0.5, 0.9)]
    assert collapse_summary(healthy) is None
    cleared = [epoch(1, 0.01, 0.99), epoch(2, 0.015, 0.98), epoch(3, 0.4, 0.97)]
    assert collapse_summary(cleared) == "blank collapse in 2 of 3 epochs (first 1); cleared after epoch 2"
    stuck = [epoch(1, 0.3, 0.9), epoch(2, 0.01, 0.99)]
    assert (collapse_summary(stuck) or "").startswith("blank collapse in 1 of 2 epochs (first 2); not cleared")


def test_a_flickering_collapse_is_said_once_and_its_clearing_once() -> None:
    notice = CollapseNotice()
    said = [notice.update("BLANK COLLAPSE" if collapsed else None, e)
            for e, collapsed in enumerate([False, True, True, False, True, False, True, False], 1)]
    assert said == [None, "BLANK COLLAPSE", None,
                    "blank collapse cleared at epoch 4 (the run's summary says if it came back)",
                    None, None, None, None]
