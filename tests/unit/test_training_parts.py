"""Model, loss, augmentation, inputs and the plain-torch loop, without Ray."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from asl_ray.augment import POSE_HAND_POINTS, augment, change_speed, drop_landmarks, mirror, move_hands
from asl_ray.checkpoint import build_model, load_checkpoint, save_checkpoint
from asl_ray.config import AugmentConfig, Config, FeaturesConfig, TrainConfig, load_config
from asl_ray.dataset import SignDataset, collate
from asl_ray.decode import single_label_scores
from asl_ray.features import video_features
from asl_ray.inputs import BLOCK_SIZES, LEFT, RIGHT, build_inputs, build_inputs_many, input_size, part_columns
from asl_ray.loop import (
    FitState,
    Precision,
    at_output_rate,
    evaluate,
    fit,
    make_average,
    make_optimizer,
    make_scheduler,
    memory_batches,
    perturb_weights,
    precision_for,
    stage_plan,
    train_epoch,
)
from asl_ray.losses import LossTerms, blank_mass, ctc_blank_loss, gloss_smoothing
from asl_ray.model import PartEmbedding, SignModel, count_parameters, drop_path
from asl_ray.samples import Sample, fit_standardizer
from asl_ray.vocab import Vocabulary
from tests.fixtures import fake_landmarks


def _landmarks(seed: int, t: int = 14) -> np.ndarray:
    pose, left, right = fake_landmarks(t=t, seed=seed)
    return video_features(pose, left, right, fps=25).landmarks


def _with_lips(lm: np.ndarray, seed: int = 0) -> np.ndarray:
    """(T, 115, 3): 40 lip points scattered about the nose, lost in frame 1."""
    rng = np.random.default_rng(seed)
    lips = lm[:, :1] + rng.normal(0, 0.05, (lm.shape[0], 40, 3)).astype(np.float32)
    lips[1:2] = np.nan
    return np.concatenate([lm, lips], axis=1)


def test_input_blocks_have_their_sizes_and_no_nan() -> None:
    lm = _with_lips(_landmarks(0))
    kinds = ["phono", "masks", "hands", "pose", "velocity", "bones", "palm", "lips"]
    x = build_inputs(lm, 25, kinds)
    assert x.shape == (14, input_size(kinds)) == (14, sum(BLOCK_SIZES.values()))
    assert np.isfinite(x).all()
    assert (x[3:6, 36 + 1] == 0).all() and (x[:3, 36 + 1] == 1).all()  # left-hand mask
    assert x[1, -1] == 0 and (x[[0, 2], -1] == 1).all()  # face found (the lips block's last column)


def test_inputs_of_many_clips_in_one_pass_equal_one_by_one() -> None:
    """No velocity may cross from one clip into the next, and each clip keeps its
    own frame rate: the one-pass inputs are bit-for-bit the per-clip ones."""
    kinds = list(BLOCK_SIZES)
    clips = [(_with_lips(_landmarks(0, t=14)), 25.0), (_with_lips(_landmarks(1, t=9)), None),
             (_with_lips(_landmarks(2, t=1)), 30.0), (_with_lips(_landmarks(3, t=2)), 12.5),
             (_with_lips(_landmarks(4, t=20))[::-1], 50.0)]
    many = build_inputs_many(clips, kinds)
    assert [len(x) for x in many] == [14, 9, 1, 2, 20]
    for (lm, fps), x in zip(clips, many, strict=True):
        np.testing.assert_array_equal(x, build_inputs(lm, fps, kinds))
    assert build_inputs_many([], kinds) == []


def test_bones_are_unit_directions_free_of_hand_size() -> None:
    lm = _landmarks(2)
    x = build_inputs(lm, 25, ["bones"]).reshape(14, 40, 3)
    norms = np.linalg.norm(x, axis=-1)
    present = np.isfinite(lm[:, 33:75]).all(axis=(1, 2))  # frames with both hands
    assert present.any() and np.allclose(norms[present], 1.0, atol=1e-5)
    assert (x[~np.isfinite(lm[:, 33:54]).all(axis=(1, 2)), :20] == 0).all()  # a missing hand reads 0
    # Growing the right hand about its wrist leaves its bone directions as they were.
    big = lm.copy()
    big[:, 54:75] = lm[:, 54:55] + 1.7 * (lm[:, 54:75] - lm[:, 54:55])
    np.testing.assert_allclose(build_inputs(big, 25, ["bones"]), build_inputs(lm, 25, ["bones"]), atol=1e-5)


def _rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return (q if np.linalg.det(q) > 0 else -q).astype(np.float32)


def test_palm_block_is_handshape_free_of_hand_orientation() -> None:
    lm = _landmarks(2)
    x = build_inputs(lm, 25, ["palm"]).reshape(14, 40, 3)
    both = np.isfinite(lm[:, 33:75]).all(axis=(1, 2))
    assert both.any() and np.allclose(np.linalg.norm(x[both], axis=-1), 1.0, atol=1e-5)
    # Middle finger's base bone lies along the palm frame's y axis, by construction.
    np.testing.assert_allclose(x[both, 20 + 8], np.tile([0, 1, 0], (both.sum(), 1)), atol=1e-5)
    # Each frame's right hand turned its own way about its wrist (and grown):
    # the body-frame bones change, the palm-frame bones do not.
    turned = lm.copy()
    for t in range(14):
        wrist = lm[t, 54]
        turned[t, 54:75] = wrist + 1.3 * (lm[t, 54:75] - wrist) @ _rotation(t).T
    np.testing.assert_allclose(build_inputs(turned, 25, ["palm"]), build_inputs(lm, 25, ["palm"]), atol=1e-4)
    assert not np.allclose(build_inputs(turned, 25, ["bones"])[both], build_inputs(lm, 25, ["bones"])[both],
                           atol=1e-2)
    # A bent finger is a different handshape: only that finger's bones move.
    bent = lm.copy()
    bent[:, 62:63] = lm[:, 61:62] + (lm[:, 62:63] - lm[:, 61:62]) @ _rotation(99).T  # index tip (joint 8)
    moved = np.abs(build_inputs(bent, 25, ["palm"]) - build_inputs(lm, 25, ["palm"])).reshape(14, 40, 3)
    assert moved[both, 20 + 7].max() > 1e-2 and moved[:, np.arange(40) != 20 + 7].max() < 1e-6


def test_palm_block_reads_a_left_hand_as_its_mirror_image() -> None:
    """Mirroring makes the right hand a left one; with z flipped for the left
    hand the two give the same handshape input, as the palm normals in phono."""
    lm = _landmarks(3)
    x = build_inputs(lm, 25, ["palm"]).reshape(14, 2, 60)
    m = build_inputs(mirror(lm), 25, ["palm"]).reshape(14, 2, 60)
    np.testing.assert_allclose(m[:, 0], x[:, 1], atol=1e-5)
    np.testing.assert_allclose(m[:, 1], x[:, 0], atol=1e-5)
    assert part_columns(["palm"]) == {"left": list(range(60)), "right": list(range(60, 120))}


def test_mirror_is_an_involution_and_swaps_hands() -> None:
    lm = _landmarks(1)
    m = mirror(lm)
    np.testing.assert_allclose(mirror(m), lm)
    np.testing.assert_allclose(m[:, 54:75, 0], -lm[:, 33:54, 0])
    np.testing.assert_allclose(m[:, 11], lm[:, 12] * [-1, 1, 1])


def test_augment_changes_length_and_values_but_stays_finite() -> None:
    lm = _landmarks(2, t=40)
    rng = np.random.default_rng(0)
    out = augment(lm, AugmentConfig(speed=(0.8, 0.8), frame_drop=0.0, mirror=1.0), rng)
    assert out.shape[0] == 50 and out.shape[1:] == (75, 3)
    assert not np.allclose(out[:40], lm)
    assert augment(lm, AugmentConfig(enabled=False), rng) is not None
    np.testing.assert_array_equal(augment(lm, AugmentConfig(enabled=False), rng), lm)
    assert np.isnan(out).any() == np.isnan(lm).any()


def test_move_hands_turns_resizes_and_moves_each_hand_alone() -> None:
    lm = _landmarks(3, t=20)
    lm[5, LEFT] = np.nan  # the left hand not found in frame 5
    body = np.setdiff1d(np.arange(33), np.r_[POSE_HAND_POINTS[0], POSE_HAND_POINTS[1]])
    wrists = [LEFT.start, RIGHT.start]

    shifted = move_hands(lm, 0.0, 0.0, 0.2, np.random.default_rng(0))
    np.testing.assert_array_equal(shifted[:, body], lm[:, body])
    moves = []
    for part, pose_pts in ((LEFT, POSE_HAND_POINTS[0]), (RIGHT, POSE_HAND_POINTS[1])):
        d = (shifted[:, part] - lm[:, part]).reshape(-1, 3)
        d = d[np.isfinite(d).all(axis=1)]
        np.testing.assert_allclose(d, np.broadcast_to(d[0], d.shape), atol=1e-5)  # one move for the clip
        assert 0 < np.abs(d[0]).max() <= 0.2
        np.testing.assert_allclose(shifted[:, list(pose_pts)] - lm[:, list(pose_pts)],
                                   np.broadcast_to(d[0], (20, 4, 3)), atol=1e-5)  # the pose's hand goes along
        moves.append(d[0])
    assert not np.allclose(moves[0], moves[1])  # each hand draws its own
    assert np.isnan(shifted[5, LEFT]).all() and np.isfinite(shifted[5, RIGHT]).all()

    turned = move_hands(lm, 20.0, 0.3, 0.0, np.random.default_rng(1))
    np.testing.assert_array_equal(turned[:, body], lm[:, body])
    for w, part in zip(wrists, (LEFT, RIGHT), strict=True):
        np.testing.assert_allclose(turned[:, w], lm[:, w], atol=1e-6)  # about the wrist
        before = np.linalg.norm(lm[:, part] - lm[:, [w]], axis=-1)[:, 1:]
        after = np.linalg.norm(turned[:, part] - lm[:, [w]], axis=-1)[:, 1:]
        ratio = (after / before)[np.isfinite(before)]
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-4)  # one size change for the whole hand
        assert 0.7 <= ratio[0] <= 1.3 and abs(ratio[0] - 1) > 1e-3
        assert not np.allclose(turned[:, part][np.isfinite(turned[:, part])],
                               (lm[:, [w]] + (lm[:, part] - lm[:, [w]]) * ratio[0])[np.isfinite(lm[:, part])],
                               atol=1e-3)  # and a turn
    # Frame 5 has no left hand: the pose's left-hand points turn about the pose's wrist.
    np.testing.assert_allclose(turned[5, POSE_HAND_POINTS[0][0]], lm[5, POSE_HAND_POINTS[0][0]], atol=1e-6)
    assert not np.allclose(turned[5, POSE_HAND_POINTS[0][1]], lm[5, POSE_HAND_POINTS[0][1]])

    # Through augment: off by default, on when asked; lips untouched.
    quiet = dict(speed=None, frame_drop=0.0, rotate_deg=0.0, scale=0.0, shear=0.0, noise=0.0)
    lips = _with_lips(lm)
    np.testing.assert_array_equal(augment(lips, AugmentConfig(**quiet), np.random.default_rng(2)), lips)
    out = augment(lips, AugmentConfig(**quiet, hand_shift=0.1), np.random.default_rng(2))
    assert not np.allclose(out[:, RIGHT], lips[:, RIGHT])
    np.testing.assert_array_equal(out[:, 75:], lips[:, 75:])


def test_model_lengths_mask_padding() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 7, 10)
    lengths = torch.tensor([7, 4])
    for mode in ("masked", "packed"):
        model = SignModel(10, 5, hidden_size=16, num_layers=2, dropout=0.0, lstm_mode=mode).eval()
        out = model(x, lengths)
        assert out.shape == (2, 7, 5)
        alone = model(x[1:, :4], torch.tensor([4]))
        torch.testing.assert_close(out[1, :4], alone[0], atol=1e-5, rtol=1e-5)  # padding never leaks in
    padded = SignModel(10, 5, hidden_size=16, num_layers=1, dropout=0.0, lstm_mode="padded").eval()
    assert not torch.allclose(padded(x, lengths)[1, :4], padded(x[1:, :4], torch.tensor([4]))[0], atol=1e-4)
    attn = SignModel(10, 5, hidden_size=16, num_layers=1, dropout=0.0, encoder="attention").eval()
    torch.testing.assert_close(attn(x, lengths)[1, :4], attn(x[1:, :4], torch.tensor([4]))[0], atol=1e-5, rtol=1e-5)
    assert count_parameters(model) > 0


def test_conv_blocks_keep_padding_out_and_reach_k_frames() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 12, 6)
    lengths = torch.tensor([12, 5])
    model = SignModel(6, 4, hidden_size=8, num_layers=2, dropout=0.0, encoder="attention", conv_kernel=5).eval()
    plain = SignModel(6, 4, hidden_size=8, num_layers=2, dropout=0.0, encoder="attention").eval()
    assert count_parameters(model) > count_parameters(plain)
    out = model(x, lengths)
    torch.testing.assert_close(out[1, :5], model(x[1:, :5], torch.tensor([5]))[0], atol=1e-5, rtol=1e-5)
    # One block alone: frame 0 reads frames 0-2 (kernel 5, centred), not frame 3.
    block = model.convs[0]
    nopad = torch.zeros(1, 12, dtype=torch.bool)
    h = torch.randn(1, 12, 8)
    moved = h.clone()
    moved[0, 3] += torch.randn(8)  # not a constant: LayerNorm would take it out
    assert torch.allclose(block(h, nopad)[0, 0], block(moved, nopad)[0, 0])
    assert not torch.allclose(block(h, nopad)[0, 1], block(moved, nopad)[0, 1])


def test_part_columns_are_the_columns_each_hand_moves() -> None:
    kinds = ["phono", "masks", "hands", "pose", "velocity", "bones"]
    cols = part_columns(kinds)
    assert list(cols) == ["left", "right", "body"]
    assert sorted(i for c in cols.values() for i in c) == list(range(input_size(kinds)))
    lm = _landmarks(0)[:3]  # frames where both hands are found
    x = build_inputs(lm, 25, kinds)
    rng = np.random.default_rng(0)
    for part, hand in (("left", LEFT), ("right", RIGHT)):
        moved = lm.copy()
        moved[:, hand] += rng.normal(0, 0.05, moved[:, hand].shape).astype(np.float32)
        changed = set(np.flatnonzero(np.abs(build_inputs(moved, 25, kinds) - x).max(0) > 1e-6))
        assert changed and changed <= set(cols[part]), part
    assert list(part_columns(["phono"])) == ["left", "right"]  # a part with no column is left out


def test_part_embedding_reads_each_part_from_its_own_columns() -> None:
    torch.manual_seed(0)
    parts = [[0, 2], [1, 3, 4], [5]]
    embed = PartEmbedding(6, parts, 8).eval()
    x = torch.randn(2, 7, 6)
    other = x.clone()
    other[..., [1, 3, 4]] += torch.randn(2, 7, 3)  # the second part only
    assert torch.equal(embed.part(x, 0), embed.part(other, 0)) and torch.equal(embed.part(x, 2), embed.part(other, 2))
    assert not torch.allclose(embed.part(x, 1), embed.part(other, 1))
    assert not torch.allclose(embed(x), embed(other))
    with pytest.raises(ValueError, match="cover the 6 inputs exactly once"):
        PartEmbedding(6, [[0, 1], [1, 2, 3, 4, 5]], 8)
    cfg = load_config(None, ["data.wlasl_json=x.json", "model.encoder=attention", "model.part_embed=true",
                             "model.hidden_size=16",
                             "features.inputs=[phono,masks,hands,pose,velocity,bones]"])
    model, joint = build_model(cfg, 5), build_model(cfg.model_copy(update={"model": cfg.model.model_copy(
        update={"part_embed": False})}), 5)
    assert isinstance(model.proj[0], PartEmbedding) and count_parameters(model) > count_parameters(joint)
    lengths = torch.tensor([9, 4])
    out = model(torch.randn(2, 9, input_size(cfg.features.inputs)), lengths)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 9, 6)


def test_part_layers_attend_over_time_within_each_part_only() -> None:
    torch.manual_seed(0)
    parts = [[0, 2], [1, 3, 4], [5]]
    embed = PartEmbedding(6, parts, 8, temporal=(2, 16, 1, 0.0)).eval()
    x = torch.randn(1, 7, 6)
    nopad = torch.zeros(1, 7, dtype=torch.bool)
    seq = embed.temporal[0] if embed.temporal is not None else None
    assert seq is not None

    def part0(inp: torch.Tensor) -> torch.Tensor:  # part 0 after its own attention layer
        return seq(embed.part(inp, 0) + embed.part_pos[:, :7], src_key_padding_mask=nopad)

    other = x.clone()
    other[0, 5, [1, 3, 4, 5]] += torch.randn(4)  # the other parts, at frame 5 only
    torch.testing.assert_close(part0(x), part0(other))  # a part never reads another part's columns
    later = x.clone()
    later[0, 5, [0, 2]] += torch.randn(2)  # part 0 itself, at frame 5
    assert not torch.allclose(part0(x)[0, 0], part0(later)[0, 0])  # frame 0 now reads frame 5: context over time
    model = SignModel(6, 4, hidden_size=8, num_layers=1, dropout=0.0, encoder="attention", parts=parts,
                      part_layers=1, attention_heads=2).eval()
    plain = SignModel(6, 4, hidden_size=8, num_layers=1, dropout=0.0, encoder="attention", parts=parts,
                      attention_heads=2).eval()
    assert count_parameters(model) > count_parameters(plain)
    xs, lengths = torch.randn(2, 9, 6), torch.tensor([9, 4])
    torch.testing.assert_close(model(xs, lengths)[1, :4], model(xs[1:, :4], torch.tensor([4]))[0],
                               atol=1e-5, rtol=1e-5)  # padding never leaks in, before the fusion either
    with pytest.raises(ValueError, match="model.part_layers=1: needs model.part_embed=true"):
        Config.model_validate({"model": {"encoder": "attention", "part_layers": 1}})


@pytest.mark.parametrize("conv_kernel", [0, 3])  # attention layers alone (as row 26), and with conv blocks
def test_stochastic_depth_drops_whole_layers_per_sample_in_training_only(conv_kernel: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(4000, 3, 5)
    branch = torch.rand(4000, 3, 5) + 1.0  # mean 1.5: a missing 1 / (1 - rate) would show as 1.125
    y = drop_path(x, x + branch, 0.25)
    dropped = (y == x).all(dim=(1, 2))  # the whole branch of a sample, never part of it
    kept = torch.isclose(y, x + branch / 0.75, atol=1e-5).all(dim=(1, 2))
    assert bool((dropped ^ kept).all())
    assert abs(dropped.float().mean().item() - 0.25) < 0.03
    assert abs((y - x).mean().item() - branch.mean().item()) < 0.05  # unbiased: inference sees the mean
    kwargs = dict(hidden_size=8, num_layers=3, dropout=0.0, encoder="attention", attention_heads=2,
                  conv_kernel=conv_kernel)
    torch.manual_seed(1)
    deep = SignModel(6, 4, drop_path=0.6, **kwargs)  # type: ignore[arg-type]
    assert deep.drop_rates == pytest.approx([0.2, 0.4, 0.6])
    torch.manual_seed(1)
    plain = SignModel(6, 4, **kwargs)  # type: ignore[arg-type]
    xs, lengths = torch.randn(8, 9, 6), torch.tensor([9, 4, 9, 9, 7, 9, 9, 2])
    torch.testing.assert_close(deep.eval()(xs, lengths), plain.eval()(xs, lengths))  # off at inference
    deep.train()
    draws = [deep(xs, lengths) for _ in range(3)]  # dropout is 0: only the skipped layers differ
    assert not torch.allclose(draws[0], draws[1]) or not torch.allclose(draws[1], draws[2])
    with pytest.raises(ValueError, match="model.drop_path=0.2: needs model.encoder=attention"):
        Config.model_validate({"model": {"encoder": "lstm", "drop_path": 0.2}})


def test_conv_kernel_needs_the_attention_encoder() -> None:
    with pytest.raises(ValueError, match="model.conv_kernel=9: needs model.encoder=attention"):
        Config.model_validate({"model": {"encoder": "lstm", "conv_kernel": 9}})


def test_landmark_dropout_hides_spans_never_a_whole_clip() -> None:
    lm = _landmarks(1, t=40)
    rng = np.random.default_rng(0)
    for _ in range(20):
        out = drop_landmarks(lm, 1.0, 0.0, rng)
        for hand in (slice(33, 54), slice(54, 75)):
            hidden = np.isnan(out[:, hand]).all(axis=(1, 2)) & ~np.isnan(lm[:, hand]).all(axis=(1, 2))
            assert 0 < hidden.sum() <= 0.6 * 40 + 1
        np.testing.assert_array_equal(out[:, :33], lm[:, :33])  # hand_drop leaves the pose alone
        masked = drop_landmarks(lm, 0.0, 1.0, rng)
        gone = np.isnan(masked).all(axis=(1, 2))
        assert 1 <= gone.sum() <= 8 and np.ptp(np.flatnonzero(gone)) == gone.sum() - 1  # one span, <= 20%
    np.testing.assert_array_equal(drop_landmarks(lm, 0.0, 0.0, rng), lm)
    x = build_inputs(augment(_with_lips(lm), AugmentConfig(hand_drop=1.0, time_mask=1.0), rng), 25.0,
                     list(BLOCK_SIZES))
    assert np.isfinite(x).all()


def test_subsample_averages_windows_of_valid_frames_only() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 10, 6)
    lengths = torch.tensor([10, 5])
    for encoder in ("lstm", "attention"):
        model = SignModel(6, 4, hidden_size=8, num_layers=1, dropout=0.0, encoder=encoder, subsample=4).eval()
        out = model(x, lengths)
        assert out.shape == (2, 3, 4)  # ceil(10 / 4) CTC steps
        assert model.output_lengths(lengths).tolist() == [3, 2]
        alone = model(x[1:, :5], torch.tensor([5]))
        assert alone.shape == (1, 2, 4)
        torch.testing.assert_close(out[1, :2], alone[0], atol=1e-5, rtol=1e-5)  # padding never leaks in
        h = model.encode(x[:1], lengths[:1])
        by_hand = torch.stack([h[0, 0:4].mean(0), h[0, 4:8].mean(0), h[0, 8:10].mean(0)])
        torch.testing.assert_close(model.pool(h, lengths[:1])[0], by_hand)
        torch.testing.assert_close(out[0], torch.log_softmax(model.head(by_hand), -1), atol=1e-5, rtol=1e-5)


def test_batches_are_scored_in_ctc_steps_when_the_model_subsamples() -> None:
    model = SignModel(6, 4, hidden_size=8, num_layers=1, dropout=0.0, subsample=4)
    b = {"x": torch.zeros(2, 10, 6), "lengths": torch.tensor([10, 5]), "labels": torch.tensor([0, 2]),
         "spans": torch.tensor([[[0, 3], [3, 10]], [[0, 5], [-1, -1]]])}
    out = at_output_rate(model, b)
    assert out["lengths"].tolist() == [3, 2]
    # A gloss keeps at least one step; a span's end rounds up; padding stays -1.
    assert out["spans"].tolist() == [[[0, 1], [0, 3]], [[0, 2], [-1, -1]]]
    assert at_output_rate(SignModel(6, 4, hidden_size=8, num_layers=1), b) is b


def test_reverse_within_lengths() -> None:
    from asl_ray.model import reverse_within_lengths

    x = torch.arange(10.0).reshape(2, 5, 1)
    out = reverse_within_lengths(x, torch.tensor([5, 3]))
    assert out[..., 0].tolist() == [[4, 3, 2, 1, 0], [7, 6, 5, 8, 9]]


def test_blank_penalty_raises_the_loss_of_a_blank_model() -> None:
    lp = torch.full((2, 6, 4), -8.0)
    lp[..., 0] = 0.0
    lp = torch.log_softmax(lp, -1)
    lengths, targets, tl = torch.tensor([6, 3]), torch.tensor([1, 2]), torch.tensor([1, 1])
    assert blank_mass(lp, lengths).item() == pytest.approx(lp[0, 0, 0].exp().item(), rel=1e-5)
    base, _, _ = ctc_blank_loss(lp, lengths, targets, tl, 0.0)
    pen, ctc, mass = ctc_blank_loss(lp, lengths, targets, tl, 2.0)
    assert pen.item() == pytest.approx(base.item() + 2.0 * mass.item(), rel=1e-6)
    two = ctc_blank_loss(lp, lengths, torch.tensor([1, 2, 3]), torch.tensor([2, 1]), 0.0)[0]
    assert torch.isfinite(two)  # multi-gloss targets work the same way


def test_gloss_smoothing_is_the_uniform_cross_entropy_of_the_exact_posterior() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 5, requires_grad=True)
    lp = torch.log_softmax(logits, -1)
    lengths, targets, tl = torch.tensor([7, 4, 2]), torch.tensor([1, 3, 4]), torch.ones(3, dtype=torch.long)
    # Brute force: log p([c]) from torch's own CTC, for every class c.
    scores = torch.stack([
        -torch.nn.functional.ctc_loss(lp.transpose(0, 1), torch.full((3,), c), lengths, tl, reduction="none")
        for c in range(1, 5)], 1)
    expected = -torch.log_softmax(scores, 1).mean()
    smooth = gloss_smoothing(lp, lengths)
    assert smooth.item() == pytest.approx(expected.item(), rel=1e-5)
    assert smooth.item() >= np.log(4) - 1e-6  # equality only for a uniform posterior
    total, ctc, mass = ctc_blank_loss(lp, lengths, targets, tl, 0.5, 0.2)
    assert total.item() == pytest.approx(0.8 * ctc.item() + 0.2 * smooth.item() + 0.5 * mass.item(), rel=1e-5)
    # A batch with a sentence (two glosses): smoothing is taken over its isolated clip only.
    mixed, ctc2, _ = ctc_blank_loss(lp[:2], lengths[:2], torch.tensor([1, 2, 3]), torch.tensor([2, 1]), 0.0, 0.1)
    alone = gloss_smoothing(lp[1:2], lengths[1:2])
    assert mixed.item() == pytest.approx(ctc2.item() * (1 - 0.05) + 0.05 * alone.item(), rel=1e-5)
    # It trains: gradients reach the logits and agree with the brute-force loss's.
    (g_ours,) = torch.autograd.grad(smooth, logits, retain_graph=True)
    (g_ref,) = torch.autograd.grad(expected, logits)
    assert torch.allclose(g_ours, g_ref, atol=1e-5) and g_ours.abs().sum() > 0
    # The scores used for metrics stay detached.
    assert not single_label_scores(lp, lengths).requires_grad


def test_gloss_smoothing_is_log_v_for_a_uniform_posterior() -> None:
    lp = torch.log_softmax(torch.zeros(2, 6, 5), -1)  # every gloss equally likely on every frame
    assert gloss_smoothing(lp, torch.tensor([6, 3])).item() == pytest.approx(np.log(4), abs=1e-6)


def test_change_speed_plays_faster_and_slower() -> None:
    lm = _landmarks(0, t=20)
    assert change_speed(lm, 2.0).shape[0] == 10 and change_speed(lm, 0.5).shape[0] == 40
    assert change_speed(lm, 1.0) is lm
    np.testing.assert_array_equal(change_speed(lm, 0.5)[::2], lm)


def _toy_samples(n_per_class: int = 6) -> list[Sample]:
    """Three 'glosses' that differ in how the right hand moves."""
    out = []
    for c in range(3):
        for i in range(n_per_class):
            pose, left, right = fake_landmarks(t=16, seed=100 * c + i, hand_gap=False)
            right = right + np.linspace(0, 60, 16)[:, None, None] * [[(c - 1.0), (c % 2) * 1.0, 0]]
            lm = video_features(pose, left, right, fps=25).landmarks
            out.append(Sample(f"{c}-{i}", f"g{c}", c + 1, lm, 25.0))
    return out


def test_loop_learns_a_toy_problem_and_checkpoint_roundtrips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = load_config(None, ["data.wlasl_json=x.json", "model.hidden_size=32", "model.num_layers=1",
                             "model.dropout=0.0", "train.epochs=25", "train.lr=0.01", "train.blank_penalty=0.5",
                             "train.augment.enabled=false", "train.warmup_epochs=0"])
    samples = _toy_samples()
    std = fit_standardizer(samples, cfg.features)
    model = build_model(cfg, 3)
    opt = make_optimizer(model, cfg.train)
    state = FitState(model, opt, make_scheduler(opt, cfg.train, cfg.train.epochs))

    batches = memory_batches(samples, cfg.features, std, batch_size=6)
    val = torch.utils.data.DataLoader(SignDataset(samples, cfg.features, std), batch_size=18, collate_fn=collate)
    seen: list[float] = []
    fit(state, cfg.train, batches, lambda: val, 3, on_epoch_end=lambda st, m: seen.append(m["val_top1"]))
    assert len(seen) == 25 and state.epoch == 25
    assert seen[-1] == 1.0 and state.history[-1]["train_loss"] < state.history[0]["train_loss"]

    vocab = Vocabulary(("g0", "g1", "g2"))
    save_checkpoint(tmp_path, cfg, model, vocab, std, {"epoch": state.epoch}, state.history)
    ck = load_checkpoint(tmp_path)
    m1, _ = evaluate(model, val, 3)
    m2, _ = evaluate(ck.model, val, 3)
    assert m1 == m2 and ck.vocab == vocab


def test_an_epoch_counts_the_seconds_spent_waiting_for_its_batches() -> None:
    """``train_data_wait_seconds``: how long the device sat idle for want of
    data (a loader that takes 50 ms a batch), not the steps' own time."""
    cfg = load_config(None, ["data.wlasl_json=x.json", "model.hidden_size=16", "model.num_layers=1",
                             "train.augment.enabled=false"])
    samples = _toy_samples()
    model = build_model(cfg, 3)
    batches = list(memory_batches(samples, cfg.features, fit_standardizer(samples, cfg.features), batch_size=6)(0, 3))

    def slow():  # type: ignore[no-untyped-def]
        for b in batches:
            time.sleep(0.05)
            yield b

    t0 = time.perf_counter()
    m = train_epoch(model, slow(), make_optimizer(model, cfg.train), 3)
    took = time.perf_counter() - t0
    assert 0.15 <= m["data_wait_seconds"] <= 0.3 and m["data_wait_seconds"] < took
    assert train_epoch(model, batches, make_optimizer(model, cfg.train), 3)["data_wait_seconds"] < 0.05


def test_weight_average_warms_up_then_follows_the_decay() -> None:
    model = torch.nn.Linear(2, 1)
    average = make_average(model, 0.9)
    assert average is not None and make_average(model, 0.0) is None
    with torch.no_grad():
        model.weight.fill_(1.0)
    average.update_parameters(model)  # the first step copies
    assert torch.equal(average.module.weight, model.weight)
    with torch.no_grad():
        model.weight.fill_(3.0)
    average.update_parameters(model)  # n = 1: decay min(0.9, 2/11)
    d = 2 / 11
    assert torch.allclose(average.module.weight, torch.full((1, 2), d * 1.0 + (1 - d) * 3.0))
    for _ in range(100):  # (1 + n) / (10 + n) passes 0.9 at n = 80
        average.update_parameters(model)
    with torch.no_grad():
        model.weight.fill_(13.0)
    before = average.module.weight.clone()
    average.update_parameters(model)  # n = 102: the decay itself
    assert torch.allclose(average.module.weight, 0.9 * before + 0.1 * 13.0)


def test_fit_scores_and_saves_the_weight_average_and_resumes_both(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = load_config(None, ["data.wlasl_json=x.json", "model.hidden_size=16", "model.num_layers=1",
                             "train.epochs=3", "train.lr=0.01", "train.augment.enabled=false",
                             "train.ema_decay=0.95"])
    samples = _toy_samples()
    std = fit_standardizer(samples, cfg.features)
    model = build_model(cfg, 3)
    opt = make_optimizer(model, cfg.train)
    state = FitState(model, opt, make_scheduler(opt, cfg.train, 3), average=make_average(model, 0.95))
    val = torch.utils.data.DataLoader(SignDataset(samples, cfg.features, std), batch_size=18, collate_fn=collate)
    fit(state, cfg.train, memory_batches(samples, cfg.features, std, batch_size=6), lambda: val, 3)
    assert state.average is not None and int(state.average.n_averaged) == 3 * 3  # 18 samples, batches of 6
    averaged, _ = evaluate(state.average.module, val, 3, cfg.train.blank_penalty)
    trained, _ = evaluate(model, val, 3, cfg.train.blank_penalty)
    assert state.history[-1]["val_loss"] == pytest.approx(averaged["loss"])
    assert averaged["loss"] != pytest.approx(trained["loss"])  # the val metrics are the average's

    vocab = Vocabulary(("g0", "g1", "g2"))
    save_checkpoint(tmp_path, cfg, state.scored_model(), vocab, std, state.saved(), state.history)
    ck = load_checkpoint(tmp_path, with_state=True)
    assert evaluate(ck.model, val, 3, cfg.train.blank_penalty)[0]["loss"] == pytest.approx(averaged["loss"])
    opt2 = make_optimizer(ck.model, cfg.train)
    again = FitState(ck.model, opt2, make_scheduler(opt2, cfg.train, 3), average=make_average(ck.model, 0.95))
    again.restore(ck.state, ck.history)
    assert again.epoch == 3 and again.average is not None and int(again.average.n_averaged) == 9
    for name, w in model.state_dict().items():
        assert torch.equal(again.model.state_dict()[name], w)
        assert torch.equal(again.average.module.state_dict()[name], state.average.module.state_dict()[name])


def test_late_dropout_takes_the_head_from_its_epoch_on_and_on_resume() -> None:
    cfg = load_config(None, ["data.wlasl_json=x.json", "model.hidden_size=16", "model.num_layers=1",
                             "model.dropout=0.1", "train.epochs=4", "train.augment.enabled=false",
                             "train.late_dropout=0.8", "train.late_dropout_from_epoch=3"])
    samples = _toy_samples(2)
    std = fit_standardizer(samples, cfg.features)
    model = build_model(cfg, 3)
    opt = make_optimizer(model, cfg.train)
    state = FitState(model, opt, make_scheduler(opt, cfg.train, 4))
    seen: list[float] = []
    fit(state, cfg.train, memory_batches(samples, cfg.features, std, batch_size=6), None, 3,
        on_epoch_end=lambda st, m: seen.append(st.model.head[0].p))
    assert seen == [0.1, 0.1, 0.8, 0.8]
    fresh = build_model(cfg, 3)  # a run resumed at epoch 3 has it from its first epoch
    opt2 = make_optimizer(fresh, cfg.train)
    again = FitState(fresh, opt2, make_scheduler(opt2, cfg.train, 4))
    again.epoch = 3
    fit(again, cfg.train, memory_batches(samples, cfg.features, std, batch_size=6), None, 3)
    assert fresh.head[0].p == 0.8


def test_awp_acts_from_its_epoch_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import asl_ray.loop as loop

    cfg = load_config(None, ["data.wlasl_json=x.json", "model.hidden_size=16", "model.num_layers=1",
                             "train.epochs=4", "train.augment.enabled=false", "train.awp=0.005",
                             "train.awp_from_epoch=3"])
    samples = _toy_samples(2)
    std = fit_standardizer(samples, cfg.features)
    model = build_model(cfg, 3)
    opt = make_optimizer(model, cfg.train)
    sizes: list[float] = []
    real = loop.train_epoch

    def spy(*args: object, **kwargs: object) -> dict[str, float]:
        sizes.append(float(kwargs["awp"]))  # type: ignore[arg-type]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "train_epoch", spy)
    fit(FitState(model, opt, make_scheduler(opt, cfg.train, 4)), cfg.train,
        memory_batches(samples, cfg.features, std, batch_size=6), None, 3)
    assert sizes == [0.0, 0.0, 0.005, 0.005]


def test_augmented_samples_stay_within_max_frames() -> None:
    cfg = FeaturesConfig(max_frames=16)
    samples = [Sample("a", "g", 1, _landmarks(0, t=16), 25.0)]
    ds = SignDataset(samples, cfg, None, AugmentConfig(speed=(0.8, 0.8), frame_drop=0.0))
    x, _ = ds[0]
    assert x.shape[0] == 16  # slowed down to 20 frames, resampled back to 16
    model = SignModel(x.shape[1], 3, hidden_size=16, num_layers=1, encoder="attention", max_frames=16)
    assert model(x[None], torch.tensor([16])).shape == (1, 16, 3)


def test_curriculum_plan_and_vocab() -> None:
    cfg = TrainConfig(epochs=4, curriculum=[2, 10, 50], curriculum_epochs=2)
    assert stage_plan(cfg, 20) == [2, 2, 10, 10, 20, 20, 20, 20]
    v = Vocabulary.from_train_glosses(["b", "a", "a", "c", "b", "a"], 2)
    assert v.glosses == ("a", "b") and len(v) == 3 and v.id_of("c") is None and v.gloss_of(0) == "<blank>"


def test_attention_heads_must_divide_hidden_size() -> None:
    from asl_ray.errors import ConfigError

    with pytest.raises(ConfigError, match="model.attention_heads=3: must divide model.hidden_size=64"):
        load_config(None, ["data.wlasl_json=x", "model.encoder=attention", "model.hidden_size=64",
                           "model.attention_heads=3"])
    assert isinstance(Config.model_fields["features"].default, FeaturesConfig)


def test_a_step_with_non_finite_gradients_is_skipped() -> None:
    """A batch whose gradient is NaN (a corrupt input row) leaves the weights
    as they were; before, optimizer.step wrote NaN into every weight."""
    torch.manual_seed(0)
    cfg = load_config(None, ["data.wlasl_json=x.json", "model.hidden_size=16", "model.num_layers=1",
                             "train.augment.enabled=false"])
    samples = _toy_samples()
    std = fit_standardizer(samples, cfg.features)
    model = build_model(cfg, 3)
    opt = make_optimizer(model, cfg.train)
    good = collate([SignDataset(samples, cfg.features, std)[i] for i in range(6)])
    bad = {k: v.clone() for k, v in good.items()}
    bad["x"][0, 0, 0] = float("nan")
    before = [p.detach().clone() for p in model.parameters()]
    metrics = train_epoch(model, [bad], opt, 3)
    assert metrics["skipped_steps"] == 1.0
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    metrics = train_epoch(model, [good, bad, good], opt, 3)
    assert metrics["skipped_steps"] == 1.0 and math.isfinite(metrics["grad_norm"])
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


def test_awp_steps_with_the_gradient_of_the_perturbed_weights_from_the_weights_as_they_were() -> None:
    """train.awp: the step is -lr times the gradient taken where every weight
    matrix was pushed up its gradient by awp times its norm, applied to the
    unperturbed weights; biases are not pushed; the metrics are the clean ones."""
    import copy

    torch.manual_seed(0)
    cfg = load_config(None, ["data.wlasl_json=x.json", "model.hidden_size=16", "model.num_layers=1",
                             "model.dropout=0.0", "train.augment.enabled=false"])
    samples = _toy_samples()
    std = fit_standardizer(samples, cfg.features)
    model = build_model(cfg, 3)
    batch = collate([SignDataset(samples, cfg.features, std)[i] for i in range(0, 18, 3)])
    terms = LossTerms(0.0, 0.0)

    def loss_of(net: torch.nn.Module) -> torch.Tensor:
        return terms(net(batch["x"], batch["lengths"]), at_output_rate(net, batch), None)[0]

    def stepped(awp: float) -> tuple[list[torch.Tensor], float]:
        net = copy.deepcopy(model)
        metrics = train_epoch(net, [batch], torch.optim.SGD(net.parameters(), lr=0.5), 3, awp=awp)
        return [p.detach() for p in net.parameters()], metrics["loss"]

    ref = copy.deepcopy(model)
    clean = loss_of(ref)
    clean.backward()
    g0 = [p.grad.clone() for p in ref.parameters()]
    moved = perturb_weights(ref, 0.05)
    assert len(moved) == sum(p.dim() > 1 for p in ref.parameters()) > 0
    for (_p, delta), w in zip(moved, [w for w in model.parameters() if w.dim() > 1], strict=True):
        assert torch.allclose(delta.norm(), 0.05 * w.detach().norm())
    ref.zero_grad()
    loss_of(ref).backward()
    g1 = [p.grad.clone() for p in ref.parameters()]
    expected = [w.detach() - 0.5 * g for w, g in zip(model.parameters(), g1, strict=True)]

    after, reported = stepped(0.05)
    assert all(torch.allclose(a, e, atol=1e-6) for a, e in zip(after, expected, strict=True))
    assert reported == pytest.approx(float(clean.detach()), rel=1e-5)  # measured before the push
    plain, _ = stepped(0.0)
    assert all(torch.allclose(a, w.detach() - 0.5 * g, atol=1e-6)
               for a, w, g in zip(plain, model.parameters(), g0, strict=True))
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(after, plain, strict=True))


@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled")
def test_mixed_precision_follows_the_device() -> None:
    assert precision_for(torch.device("cpu"), amp=True) == Precision()  # CPU: float32
    assert precision_for(torch.device("cuda"), amp=False) == Precision()
    bf16 = precision_for(torch.device("cuda"), amp=True, bf16_supported=True)
    assert bf16.dtype == torch.bfloat16 and bf16.scaler is None  # same range as fp32: no scaler
    fp16 = precision_for(torch.device("cuda"), amp=True, bf16_supported=False)
    assert fp16.dtype == torch.float16 and isinstance(fp16.scaler, torch.amp.GradScaler)
