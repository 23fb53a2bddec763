"""CTC that decodes: word error rate, sentences joined from clips, the decoders,
the peak loss and the auxiliary classifier. Plain numpy/torch, no Ray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from asl_ray.config import FeaturesConfig, SentencesConfig
from asl_ray.continuous.decoding import BeamDecoder, Decoded, GlossBigram, greedy, merge_repeats, path_glosses
from asl_ray.continuous.sentences import group_sizes, join_clips, sentence_plan, trim_rest
from asl_ray.continuous.wer import edits, word_error_rate
from asl_ray.decode import MetricAccumulator
from asl_ray.extract import rows_to_table
from asl_ray.ingest import prepare_table, sentence_table
from asl_ray.ingest_worker import shard_batches
from asl_ray.inputs import input_size
from asl_ray.losses import LabelPrior, LossTerms, ctc_blank_loss, ctc_scores_loss, peak_loss, presence_loss
from asl_ray.model import SignModel
from asl_ray.samples import fit_standardizer, load_splits
from asl_ray.synthetic import synthetic_rows

FEATURES = FeaturesConfig(inputs=["phono", "masks", "hands", "pose", "velocity"], max_frames=40)


# ------------------------------------------------------------------- word error rate

def test_word_error_rate_on_hand_made_cases() -> None:
    assert edits([1, 2, 3], [1, 2, 3]).total == 0
    assert edits([1, 2, 3], [1, 3]) == edits([1, 2, 3], [1, 3]).__class__(0, 1, 0)  # a deletion
    assert (edits([1, 2], [1, 4, 2]).insertions, edits([1, 2], [1, 4, 2]).total) == (1, 1)
    assert (edits([1, 2, 3], [1, 5, 3]).substitutions, edits([1, 2, 3], [1, 5, 3]).total) == (1, 1)
    assert edits([1, 2], []).deletions == 2 and edits([], [7]).insertions == 1
    assert edits(["a", "b", "c", "d"], ["b", "c", "x", "d", "e"]).total == 3  # del a, ins x, ins e
    # Corpus WER: all edits over all reference glosses, so a hypothesis can exceed 100% on one sentence.
    assert word_error_rate([[1, 2], [3, 4, 5]], [[1, 2], [3]]) == pytest.approx(2 / 5)
    assert word_error_rate([[1]], [[2, 3, 4]]) == pytest.approx(3.0)
    # Kinds summed over sentences, as `evaluate --sentences` reports them.
    summed = edits([1, 2, 3], [1, 3]) + edits([1, 2, 3], [1, 5, 3]) + edits([1, 2], [1, 4, 2])
    assert (summed.substitutions, summed.deletions, summed.insertions) == (1, 1, 1)
    assert summed.describe(8) == "substitutions 12.5%, deletions 12.5%, insertions 12.5%"


# ------------------------------------------------------------------- sentences

def test_trim_rest_keeps_the_frames_with_hands_and_a_margin() -> None:
    lm = np.zeros((20, 75, 3), np.float32)
    lm[:, 33:75] = np.nan
    lm[6:12, 33:54] = 0.5  # left hand seen in frames 6..11
    out = trim_rest(lm, keep_rest=2)
    assert out.shape[0] == 10  # 4..13
    np.testing.assert_array_equal(out, lm[4:14])
    no_hands = np.where(np.isnan(lm), np.nan, 0)[:, :, :]
    no_hands[:, 33:75] = np.nan
    assert trim_rest(no_hands).shape[0] == 20  # nothing to go by: unchanged


def test_join_clips_interpolates_the_transition_and_returns_spans() -> None:
    a = np.zeros((10, 75, 3), np.float32)
    b = np.ones((5, 75, 3), np.float32)
    b[:, 40] = np.nan  # a point missing in the second clip stays missing in the seam
    joined, spans = join_clips([(a, 25.0), (b, 25.0)], fps=25.0, gap=3, keep_rest=100)
    assert joined.shape == (18, 75, 3)
    assert spans == [(0, 10), (13, 18)]
    np.testing.assert_allclose(joined[10:13, 0, 0], [0.25, 0.5, 0.75])
    assert np.isnan(joined[10:13, 40]).all()
    # A 50 fps clip is resampled to the sentence's 25 fps: half the frames.
    joined, spans = join_clips([(a, 50.0), (b, 25.0)], fps=25.0, gap=0, keep_rest=100)
    assert spans == [(0, 5), (5, 10)]


def test_sentence_plans_use_every_clip_once_per_round_within_the_size_limits() -> None:
    rng = np.random.default_rng(1)
    for n in range(2, 40):
        sizes = group_sizes(n, rng, 2, 5)
        assert all(2 <= k <= 5 for k in sizes) and n - sum(sizes) < 2
    plan = sentence_plan(30, 200, seed=4)
    assert len(plan) == 200 and all(2 <= len(g) <= 5 for g in plan)
    first_round, used = [], 0
    for g in plan:
        if used + len(g) > 30:
            break
        first_round += g
        used += len(g)
    assert len(first_round) == len(set(first_round))  # no clip twice before every clip is used
    assert plan == sentence_plan(30, 200, seed=4)  # fixed under its seed
    assert plan != sentence_plan(30, 200, seed=5)


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return rows_to_table(synthetic_rows(num_glosses=4, per_gloss=10, seed=3))


def test_training_batches_join_clips_of_one_split_into_multi_gloss_targets(table: pa.Table) -> None:
    splits = load_splits(table, None, FEATURES)
    std = fit_standardizer(splits.train, FEATURES)
    train = table.filter(pa.compute.equal(table.column("split"), "train"))
    s = SentencesConfig(share=0.5)
    out = prepare_table(train, FEATURES, std, splits.vocab, sentences=s)
    labels = out.column("label").to_numpy()
    targets = out.column("targets").to_pylist()
    n_train = train.num_rows
    isolated = labels > 0
    joined = sum(len(t) for t, iso in zip(targets, isolated, strict=True) if not iso)
    assert joined == pytest.approx(n_train / 2, abs=2)
    assert int(isolated.sum()) + joined == n_train  # every clip once: alone or in one sentence
    assert all(2 <= len(t) <= 5 for t, iso in zip(targets, isolated, strict=True) if not iso)
    batches = list(shard_batches([out], 8, input_size(FEATURES.inputs), np.random.default_rng(0), by_length=True))
    b = next(b for b in batches if bool((b["labels"] == 0).any()))
    i = int(torch.nonzero(b["labels"] == 0)[0])
    n = int(b["target_lengths"][i])
    spans = b["spans"][i, :n]
    assert bool((spans[:, 0] < spans[:, 1]).all()) and int(spans[-1, 1]) <= int(b["lengths"][i])
    assert bool((spans[1:, 0] >= spans[:-1, 1]).all())  # in order, not overlapping
    with pytest.raises(ValueError, match="one split"):
        prepare_table(table, FEATURES, std, splits.vocab, sentences=s)  # train and val rows together
    with pytest.raises(ValueError, match="one split"):
        sentence_table(table, FEATURES, std, splits.vocab, s, 5)


def test_val_sentences_are_fixed_and_drawn_from_the_given_clips(table: pa.Table) -> None:
    splits = load_splits(table, None, FEATURES)
    std = fit_standardizer(splits.train, FEATURES)
    val = table.filter(pa.compute.equal(table.column("split"), "val"))
    s = SentencesConfig(val=6, val_seed=2)
    one, two = (sentence_table(val, FEATURES, std, splits.vocab, s, 6) for _ in range(2))
    assert one.num_rows == 6 and one.column("targets").to_pylist() == two.column("targets").to_pylist()
    val_glosses = {splits.vocab.id_of(g) for g in val.column("gloss").to_pylist()}
    assert {g for t in one.column("targets").to_pylist() for g in t} <= val_glosses
    assert set(one.column("label").to_pylist()) == {0}


# ------------------------------------------------------------------- decoding

def _lp(rows: list[list[float]]) -> np.ndarray:
    p = np.asarray(rows, np.float64)
    return np.log(p / p.sum(1, keepdims=True)).astype(np.float32)


def test_greedy_reads_the_best_path_with_spans() -> None:
    lp = _lp([[.9, .05, .05], [.1, .8, .1], [.1, .8, .1], [.8, .1, .1], [.1, .1, .8], [.1, .8, .1], [.1, .8, .1]])
    d = greedy(lp)
    assert d.glosses == [1, 2, 1] and d.spans == [(1, 2), (4, 4), (5, 6)]
    assert path_glosses([1, 0, 1, 1, 2, 0]).glosses == [1, 1, 2]  # a blank separates a repeated gloss


def test_beam_search_sums_alignments_where_greedy_takes_one_path() -> None:
    # Gloss 1 never wins a frame, but its mass over three frames beats blank's
    # single path: the prefix [1] is the most likely sequence.
    lp = _lp([[.4, .35, .25], [.4, .35, .25], [.4, .35, .25]])
    assert greedy(lp).glosses == []
    best = BeamDecoder(num_glosses=2, beam_size=8)(lp)
    assert best.glosses == [1]
    p_blank = 0.4 ** 3
    p_one = sum(0.35 ** k * 0.4 ** (3 - k) * (3 - k + 1) for k in range(1, 4))  # runs of 1 with blanks around
    assert p_one > p_blank
    # Clear-cut sequences decode the same both ways, spans included.
    lp = _lp([[.9, .05, .05], [.05, .9, .05], [.9, .05, .05], [.05, .05, .9], [.9, .05, .05]])
    assert BeamDecoder(2)(lp).glosses == greedy(lp).glosses == [1, 2]
    assert BeamDecoder(2)(lp).spans == [(1, 1), (3, 3)]
    with pytest.raises(ValueError, match="tokens"):
        BeamDecoder(3)(lp)


def test_a_gloss_bigram_prior_can_reorder_the_beam() -> None:
    # Gloss 1 or 2 are nearly tied on the one sign frame; a prior that has
    # only ever seen gloss 2 at the start of a sentence picks 2.
    lp = _lp([[.9, .05, .05], [.1, .46, .44], [.9, .05, .05]])
    assert BeamDecoder(2)(lp).glosses == [1]
    prior = GlossBigram([[2, 1], [2, 1], [2]], num_glosses=2)
    assert prior.log_prob(0, 2) > prior.log_prob(0, 1)
    assert BeamDecoder(2, prior=prior, prior_weight=1.0)(lp).glosses == [2]


# ------------------------------------------------------------------- losses

def test_peak_loss_is_zero_once_the_gloss_wins_a_frame_by_the_margin() -> None:
    lengths, targets, tl = torch.tensor([4]), torch.tensor([1]), torch.tensor([1])
    won = torch.log(torch.tensor([[[.9, .05, .05], [.05, .9, .05], [.9, .05, .05], [.9, .05, .05]]]))
    assert peak_loss(won, lengths, targets, tl, margin=1.0).item() == 0.0
    logits = torch.log(torch.tensor([[[.9, .05, .05], [.6, .3, .1], [.9, .05, .05], [.9, .05, .05]]]))
    logits.requires_grad_(True)
    lp = torch.log_softmax(logits, -1)
    loss = peak_loss(lp, lengths, targets, tl, margin=1.0)
    assert loss.item() == pytest.approx(1.0 - (np.log(.3) - np.log(.6)), rel=1e-5)
    (grad,) = torch.autograd.grad(loss, logits)
    assert grad[0, 1, 1] < 0 < grad[0, 1, 0]  # up for the gloss, down for blank, on its best frame only
    assert float(grad[0, [0, 2, 3]].abs().sum()) == 0.0


def test_peak_loss_looks_for_each_gloss_inside_its_own_span() -> None:
    # Sentence [1, 2]: gloss 2 wins frame 1, which lies in gloss 1's span only.
    lp = torch.log(torch.tensor([[[.9, .05, .05], [.05, .05, .9], [.9, .05, .05], [.9, .05, .05]]]))
    args = (lp, torch.tensor([4]), torch.tensor([1, 2]), torch.tensor([2]))
    whole = peak_loss(*args, spans=None)
    own = peak_loss(*args, spans=torch.tensor([[[0, 2], [2, 4]]]))
    assert own.item() > whole.item()  # gloss 2 gets no credit for a frame outside its span


def test_presence_loss_lowers_blank_where_the_gloss_is_likeliest_and_keeps_the_glosses_ranking() -> None:
    lengths, targets, tl = torch.tensor([4]), torch.tensor([1]), torch.tensor([1])
    # Frame 1: blank 0.6 against the glosses' 0.4 together (gloss 2 ahead of the target there).
    probs = torch.tensor([[[.9, .05, .05], [.6, .15, .25], [.9, .08, .02], [.9, .05, .05]]])
    logits = torch.log(probs).requires_grad_(True)
    lp = torch.log_softmax(logits, -1)
    loss = presence_loss(lp, lengths, targets, tl, margin=1.0)
    assert loss.item() == pytest.approx(1.0 - (np.log(.4) - np.log(.6)), rel=1e-5)
    (grad,) = torch.autograd.grad(loss, logits)
    assert grad[0, 1, 0] > 0 > grad[0, 1, 1] and grad[0, 1, 2] < 0  # blank down, every gloss up
    # in proportion to its probability: the log-ratio of the two glosses does not move
    assert float(grad[0, 1, 1] / grad[0, 1, 2]) == pytest.approx(.15 / .25, rel=1e-4)
    assert float(grad[0, [0, 2, 3]].abs().sum()) == 0.0  # frame 1 only: where gloss 1 is likeliest
    # Zero once blank loses there by the margin, whichever gloss leads.
    beaten = torch.log(torch.tensor([[[.9, .05, .05], [.1, .3, .6], [.9, .05, .05], [.9, .05, .05]]]))
    assert presence_loss(beaten, lengths, targets, tl, margin=1.0).item() == 0.0
    assert peak_loss(beaten, lengths, targets, tl, margin=1.0).item() > 0  # the peak loss asks for gloss 1 to win
    # Through ctc_blank_loss and its weight.
    base = ctc_blank_loss(lp, lengths, targets, tl)[0]
    with_presence = ctc_blank_loss(lp, lengths, targets, tl, presence_weight=2.0)[0]
    assert (with_presence - base).item() == pytest.approx(2 * loss.item(), rel=1e-5)


def _forward_algorithm_nll(x: torch.Tensor, target: list[int], length: int) -> torch.Tensor:
    """-log Σ_paths Π_t exp(x_t(path_t)): the plain CTC forward recursion, for one (T, V+1) sequence."""
    ext = [0]
    for g in target:
        ext += [g, 0]
    alpha = [x[0, 0], x[0, ext[1]]] + [torch.tensor(-1e30, dtype=x.dtype)] * (len(ext) - 2)
    for t in range(1, length):
        new = []
        for s_ in range(len(ext)):
            terms = [alpha[s_]] + ([alpha[s_ - 1]] if s_ > 0 else [])
            if s_ > 1 and ext[s_] != 0 and ext[s_] != ext[s_ - 2]:
                terms.append(alpha[s_ - 2])
            new.append(torch.logsumexp(torch.stack(terms), 0) + x[t, ext[s_]])
        alpha = new
    return -torch.logsumexp(torch.stack(alpha[-2:]), 0)


def test_ctc_of_scores_that_are_not_normalised_has_the_true_gradient() -> None:
    # PyTorch's CTC gradient is right only for log_softmax outputs; the label
    # prior feeds it posteriors divided by a prior, so losses.py corrects it.
    torch.manual_seed(0)
    scores = (torch.randn(2, 6, 4, dtype=torch.float64) - 1).requires_grad_(True)
    lengths, targets, tl = torch.tensor([6, 5]), torch.tensor([1, 2, 3]), torch.tensor([2, 1])
    loss = ctc_scores_loss(scores, lengths, targets, tl)
    want = (_forward_algorithm_nll(scores[0], [1, 2], 6) / 2 + _forward_algorithm_nll(scores[1], [3], 5)) / 2
    assert loss.item() == pytest.approx(want.item(), rel=1e-9)
    (got,) = torch.autograd.grad(loss, scores)
    (true,) = torch.autograd.grad(want, scores)
    assert torch.allclose(got, true, atol=1e-9)
    (plain,) = torch.autograd.grad(torch.nn.functional.ctc_loss(
        scores.transpose(0, 1), targets, lengths, tl, reduction="mean"), scores)
    assert not torch.allclose(plain, true, atol=1e-3)  # what the correction is for
    # A sequence too short for its target counts 0, with no gradient (as zero_infinity).
    short = ctc_scores_loss(scores[:1, :1], torch.tensor([1]), torch.tensor([1, 2]), torch.tensor([2]))
    assert short.item() == 0.0


def test_the_label_prior_prefers_paths_that_say_the_gloss_on_more_frames() -> None:
    peaky = torch.log(torch.tensor([[[.9, .1], [.1, .9], [.9, .1], [.9, .1]]]))  # the gloss on one frame
    spread = torch.log(torch.tensor([[[.5, .5], [.3, .7], [.3, .7], [.5, .5]]]))  # on the sign's frames
    lengths, targets, tl = torch.tensor([4]), torch.tensor([1]), torch.tensor([1])
    assert ctc_blank_loss(peaky, lengths, targets, tl)[1] < ctc_blank_loss(spread, lengths, targets, tl)[1]
    prior = LabelPrior(0.5)
    prior.prior = torch.tensor([.95, .05])
    prior.decay = 1.0  # hold it fixed for the comparison
    assert ctc_blank_loss(spread, lengths, targets, tl, prior=prior)[1] < \
        ctc_blank_loss(peaky, lengths, targets, tl, prior=prior)[1]
    # The prior is a running mean of the posteriors on valid frames.
    running = LabelPrior(1.0, decay=0.5)
    lp = torch.log(torch.tensor([[[.8, .2], [.6, .4], [.5, .5]]]))
    assert torch.allclose(running(lp, torch.tensor([2])).exp(), torch.tensor([.7, .3]))
    assert torch.allclose(running(lp[:, 2:], torch.tensor([1])).exp(), torch.tensor([.6, .4]))


def test_frame_terms_can_wait_for_a_later_epoch() -> None:
    terms = LossTerms(0.1, 0.1, peak_weight=1.0, aux_weight=0.5, presence_weight=1.0, prior=LabelPrior(0.3),
                      frame_terms_from=3)
    early = terms.at_epoch(2)
    assert (early.peak_weight, early.presence_weight, early.prior) == (0.0, 0.0, None)
    assert (early.blank_penalty, early.label_smoothing, early.aux_weight) == (0.1, 0.1, 0.5)
    assert terms.at_epoch(3) is terms and terms.at_epoch(4) is terms


def test_the_auxiliary_head_adds_its_cross_entropy_on_isolated_clips() -> None:
    torch.manual_seed(0)
    model = SignModel(5, 4, hidden_size=8, num_layers=1, dropout=0.0, aux_head=True)
    x, lengths = torch.randn(3, 6, 5), torch.tensor([6, 4, 5])
    lp, aux = model(x, lengths, with_aux=True)
    assert aux.shape == (3, 3) and torch.equal(lp, model(x, lengths))
    targets, tl = torch.tensor([1, 2, 3, 3]), torch.tensor([1, 1, 2])  # the last row is a sentence
    base = ctc_blank_loss(lp, lengths, targets, tl)[0]
    with_aux = ctc_blank_loss(lp, lengths, targets, tl, aux_logits=aux, aux_weight=0.5)[0]
    ce = torch.nn.functional.cross_entropy(aux[:2], torch.tensor([0, 1]))
    assert (with_aux - base).item() == pytest.approx(0.5 * ce.item(), rel=1e-5)
    batch = {"lengths": lengths, "targets": targets, "target_lengths": tl}
    assert LossTerms(aux_weight=0.5)(lp, batch, aux)[0].item() == pytest.approx(with_aux.item(), rel=1e-6)


def test_metric_accumulator_scores_sentences_by_word_error_rate() -> None:
    lp = torch.from_numpy(np.stack([
        _lp([[.9, .05, .05], [.05, .9, .05], [.9, .05, .05], [.05, .05, .9]]),  # reads [1, 2]
        _lp([[.9, .05, .05], [.05, .9, .05], [.9, .05, .05], [.9, .05, .05]]),  # reads [1]
        _lp([[.9, .05, .05], [.05, .05, .9], [.9, .05, .05], [.9, .05, .05]]),  # isolated clip of gloss 2
    ]))
    lengths, labels = torch.tensor([4, 4, 4]), torch.tensor([0, 0, 2])
    targets, tl = torch.tensor([1, 2, 2, 1, 2]), torch.tensor([2, 2, 1])
    acc = MetricAccumulator(2)
    acc.add(lp, lengths, labels, 1.0, targets, tl, BeamDecoder(2))
    m = acc.compute()
    assert m["wer_greedy"] == pytest.approx(1 / 4) and m["wer_beam"] == pytest.approx(1 / 4)  # [2,1] -> [1]
    assert m["top1"] == 1.0 and m["greedy_acc"] == 1.0 and acc.samples == 1
    merged = acc.merge(acc).compute()  # survives the all-reduce vector
    assert merged["wer_greedy"] == pytest.approx(1 / 4) and merged["top1"] == 1.0


def test_repeats_merge_in_readings_spans_and_references_only_when_asked() -> None:
    # A gloss read twice (gloss, blank, gloss): one sign under PHOENIX-2014's scoring.
    d = Decoded([2, 2, 1, 2], [(1, 1), (3, 4), (6, 6), (8, 9)], -1.0)
    assert d.merged() == Decoded([2, 1, 2], [(1, 4), (6, 6), (8, 9)], -1.0)  # only consecutive ones
    assert merge_repeats([1, 1, 1, 2, 1]) == [1, 2, 1] and merge_repeats([]) == []
    twice = [[.9, .05, .05], [.05, .05, .9], [.9, .05, .05], [.05, .05, .9]]  # reads [2, 2]
    lp = torch.from_numpy(np.stack([
        _lp(twice),  # isolated clip of gloss 2
        _lp(twice),  # sentence [2, 2]: right either way
        _lp([[.9, .05, .05], [.05, .9, .05], [.9, .05, .05], [.05, .9, .05]]),  # sentence [1, 2] read [1, 1]
    ]))
    lengths, labels = torch.tensor([4, 4, 4]), torch.tensor([2, 0, 0])
    targets, tl = torch.tensor([2, 2, 2, 1, 2]), torch.tensor([1, 2, 2])
    strict, merging = MetricAccumulator(2), MetricAccumulator(2, merge_repeats=True)
    for acc in (strict, merging):
        acc.add(lp, lengths, labels, 1.0, targets, tl, BeamDecoder(2))
    s = strict.compute()
    assert s["greedy_acc"] == 0.0 and s["greedy_extra"] == 1.0 and s["top1"] == 1.0
    assert s["wer_greedy"] == pytest.approx(1 / 4) and s["wer_beam"] == pytest.approx(1 / 4)
    for m in (merging.compute(), merging.merge(merging).compute()):  # the flag survives a merge
        assert m["greedy_acc"] == 1.0 and m["greedy_extra"] == 0.0 and m["top1"] == 1.0
        # References merged too: [2] (read [2]) and [1, 2] (read [1]): one deletion in three glosses.
        assert m["wer_greedy"] == pytest.approx(1 / 3) and m["wer_beam"] == pytest.approx(1 / 3)


def test_a_batch_of_sentences_only_still_reaches_the_auxiliary_head() -> None:
    """DDP needs a gradient for every parameter each step: with no isolated clip
    in a batch the classifier gets a zero one rather than none."""
    torch.manual_seed(0)
    model = SignModel(5, 4, hidden_size=8, num_layers=1, dropout=0.0, aux_head=True)
    x, lengths = torch.randn(2, 6, 5), torch.tensor([6, 5])
    lp, aux = model(x, lengths, with_aux=True)
    loss = ctc_blank_loss(lp, lengths, torch.tensor([1, 2, 3, 1]), torch.tensor([2, 2]), aux_logits=aux,
                          aux_weight=0.5)[0]
    loss.backward()
    assert model.aux is not None
    grads = [p.grad for p in model.aux.parameters()]
    assert all(g is not None and float(g.abs().sum()) == 0.0 for g in grads)


def test_the_prior_corpus_is_read_by_gloss_name_and_unknown_glosses_are_named(tmp_path: Path) -> None:
    from asl_ray.continuous.decoding import beam_decoder, read_corpus
    from asl_ray.errors import UserError

    corpus = tmp_path / "glosses.txt"
    corpus.write_text("book go\n\ngo book\nbook go\n")
    assert read_corpus(corpus, ("go", "book")) == [[2, 1], [1, 2], [2, 1]]
    s = SentencesConfig(prior_corpus=corpus, prior_weight=2.0)
    lp = _lp([[.9, .05, .05], [.1, .46, .44], [.9, .05, .05]])
    assert beam_decoder(SentencesConfig(), ("go", "book"))(lp).glosses == [1]
    assert beam_decoder(s, ("go", "book"))(lp).glosses == [2]  # "book" starts most corpus sentences
    corpus.write_text("book went\n")
    with pytest.raises(UserError, match=r"glosses.txt:1: gloss 'went' is not in the model's vocabulary"):
        read_corpus(corpus, ("go", "book"))


def test_the_peak_loss_can_be_kept_to_clips_the_model_already_ranks_right() -> None:
    # Two isolated clips, both with gloss 1 short of its margin; the exact scores
    # rank gloss 1 first on the first clip and gloss 2 first on the second.
    lp = torch.log(torch.tensor([
        [[.9, .05, .05], [.6, .3, .1], [.9, .05, .05]],
        [[.9, .02, .08], [.6, .1, .3], [.9, .02, .08]],
    ]))
    lengths, targets, tl = torch.tensor([3, 3]), torch.tensor([1, 1]), torch.tensor([1, 1])
    from asl_ray.losses import known_rows

    assert known_rows(lp, lengths, targets, tl).tolist() == [True, False]
    both = ctc_blank_loss(lp, lengths, targets, tl, peak_weight=1.0)[0]
    known = ctc_blank_loss(lp, lengths, targets, tl, peak_weight=1.0, peak_known_only=True)[0]
    base = ctc_blank_loss(lp, lengths, targets, tl)[0]
    first = peak_loss(lp[:1], lengths[:1], targets[:1], tl[:1])
    assert (known - base).item() == pytest.approx(first.item(), rel=1e-5)
    assert (both - base).item() > (known - base).item()
