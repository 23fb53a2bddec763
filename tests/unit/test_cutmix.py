"""Temporal CutMix (train.cutmix): what is mixed, and the loss it trains with."""

from __future__ import annotations

import copy

import pytest
import torch

from asl_ray.config import load_config
from asl_ray.cutmix import TemporalCutMix, mix_spans
from asl_ray.loop import _mixing, at_output_rate, train_epoch
from asl_ray.losses import LossTerms
from asl_ray.model import SignModel


def _batch(lengths: list[int], labels: list[int], dim: int = 4) -> dict[str, torch.Tensor]:
    n, t = len(lengths), max(lengths)
    x = torch.zeros(n, t, dim)
    for i, length in enumerate(lengths):
        x[i, :length] = 100 * (i + 1) + torch.arange(length, dtype=torch.float32)[:, None]  # row i, frame k: 100(i+1)+k
    y = torch.tensor(labels)
    return {"x": x, "lengths": torch.tensor(lengths), "labels": y, "targets": y.clone(),
            "target_lengths": torch.ones_like(y)}


def test_each_clip_gets_one_span_of_its_partner_and_keeps_its_padding() -> None:
    b = _batch([20, 10, 3], [1, 2, 3])
    perm = torch.tensor([1, 2, 0])
    out = mix_spans(b["x"], b["lengths"], perm, 0.5, torch.Generator().manual_seed(0))
    for i, (t, j) in enumerate(zip([20, 10, 3], perm.tolist(), strict=True)):
        row = out[i, :t, 0]
        taken = (row < 100 * (i + 1)) | (row >= 100 * (i + 1) + t)  # not row i's own frame values
        span = max(1, round(0.5 * t))
        assert int(taken.sum()) == span
        where = taken.nonzero().flatten()
        assert int(where[-1] - where[0]) + 1 == span  # one consecutive span
        got = row[where] - 100 * (j + 1)  # the partner's frame indices
        assert bool((got >= 0).all()) and bool((got < [20, 10, 3][j]).all())
        assert bool((got.diff() >= 0).all())  # in order
        assert torch.equal(out[i, t:], b["x"][i, t:])  # padding as it was
    # clip 0 (20 frames) takes 10 from clip 1 (10 frames): all of it, in order
    assert torch.equal(out[0, :20, 0][out[0, :20, 0] >= 200], b["x"][1, :10, 0])
    # clip 1 (10 frames) takes 5 from clip 2 (3 frames): clip 2 stretched to 5
    assert torch.equal(out[1, :10, 0][out[1, :10, 0] >= 300], torch.tensor([300.0, 300, 301, 302, 302]))
    assert torch.equal(mix_spans(b["x"], b["lengths"], torch.arange(3), 0.5, torch.Generator()), b["x"])


def test_only_batches_of_single_clips_are_mixed_and_the_partner_targets_follow() -> None:
    b = _batch([12, 8, 10, 9], [1, 2, 3, 4])
    mixed, partner, share = TemporalCutMix(1.0, (0.2, 0.4))(b, torch.Generator().manual_seed(1))
    assert partner is not None and 0.2 <= share <= 0.4
    assert not torch.equal(mixed["x"], b["x"]) and torch.equal(mixed["labels"], b["labels"])
    assert torch.equal(partner["x"], mixed["x"])
    assert sorted(partner["targets"].tolist()) == [1, 2, 3, 4] and torch.equal(partner["targets"], partner["labels"])
    assert TemporalCutMix(0.0, (0.2, 0.4))(b, torch.Generator())[1] is None
    sentences = {**b, "targets": torch.tensor([1, 2, 3, 4, 1]), "target_lengths": torch.tensor([2, 1, 1, 1])}
    assert TemporalCutMix(1.0, (0.2, 0.4))(sentences, torch.Generator())[1] is None
    half = [TemporalCutMix(0.5, (0.2, 0.4))(b, g)[1] is not None for g in
            [torch.Generator().manual_seed(s) for s in range(400)]]
    assert 150 < sum(half) < 250


def test_a_mixed_step_trains_towards_both_glosses_by_their_shares() -> None:
    """The step's gradient is that of (1 - s) L(x̃, own) + s L(x̃, partner's)
    on the mixed clips, with L the run's whole loss (here CTC + blank
    penalty + gloss smoothing)."""
    torch.manual_seed(0)
    model = SignModel(4, 5, hidden_size=8, num_layers=1, encoder="attention", dropout=0.0)
    b = _batch([12, 8, 10, 9], [1, 2, 3, 4])
    b["x"] = b["x"] / 200
    terms = LossTerms(0.1, 0.1)
    mixer = TemporalCutMix(1.0, (0.3, 0.3))
    mixed, partner, share = mixer(b, torch.Generator().manual_seed(3))
    assert partner is not None and share == pytest.approx(0.3)

    ref = copy.deepcopy(model)
    lp = ref(mixed["x"], mixed["lengths"])
    loss = 0.7 * terms(lp, at_output_rate(ref, mixed), None)[0] + 0.3 * terms(lp, at_output_rate(ref, partner),
                                                                                None)[0]
    loss.backward()
    expected = [w.detach() - 0.5 * w.grad for w in ref.parameters()]

    net = copy.deepcopy(model)
    metrics = train_epoch(net, [b], torch.optim.SGD(net.parameters(), lr=0.5), 4, terms=terms,
                          cutmix=(mixer, torch.Generator().manual_seed(3)), grad_clip=None)
    assert metrics["loss"] == pytest.approx(float(loss.detach()), rel=1e-5)
    assert all(torch.allclose(a, e, atol=1e-6) for a, e in zip(net.parameters(), expected, strict=True))


def test_an_epochs_mixing_does_not_depend_on_where_the_run_started() -> None:
    cfg = load_config(None, ["data.wlasl_json=x.json", "train.cutmix=0.5", "train.cutmix_share=[0.1,0.3]"]).train
    first, again = _mixing(cfg, 7), _mixing(cfg, 7)
    assert first is not None and again is not None and first[0] == TemporalCutMix(0.5, (0.1, 0.3))
    assert torch.equal(torch.rand(5, generator=first[1]), torch.rand(5, generator=again[1]))
    other = _mixing(cfg, 8)
    assert other is not None and not torch.equal(torch.rand(5, generator=_mixing(cfg, 7)[1]),  # type: ignore[index]
                                                 torch.rand(5, generator=other[1]))
    assert _mixing(load_config(None, ["data.wlasl_json=x.json"]).train, 7) is None


def test_a_share_range_outside_zero_to_one_is_a_one_line_config_error() -> None:
    from asl_ray.errors import ConfigError

    for bad in ("[0.6,0.2]", "[0,0.3]", "[0.2,1]"):
        with pytest.raises(ConfigError, match=r"train.cutmix_share must be \[low, high\], 0 < low <= high < 1"):
            load_config(None, ["data.wlasl_json=x.json", f"train.cutmix_share={bad}"])
