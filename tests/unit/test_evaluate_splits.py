"""`asl-ray evaluate --split` scores any split the feature dataset has (test
included, as papers report it) and names the splits present when asked for
one that is not there; `--sentences` with several checkpoints decodes their
averaged posteriors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from asl_ray import evaluation, ingest
from asl_ray.checkpoint import LoadedCheckpoint, build_model, load_checkpoint, save_checkpoint
from asl_ray.cli import main
from asl_ray.config import load_config
from asl_ray.errors import UserError
from asl_ray.evaluation import evaluate_sentences
from asl_ray.extract import rows_to_table
from asl_ray.samples import fit_standardizer, load_splits
from asl_ray.storage import write_atomically
from asl_ray.synthetic import synthetic_rows


def _checkpoint(tmp_path: Path) -> Path:
    rows = synthetic_rows(num_glosses=3, per_gloss=10, seed=1)
    for i, r in enumerate(rows):
        if i % 5 == 1:
            r["split"] = "test"
    features = tmp_path / "features"
    features.mkdir()
    write_atomically(rows_to_table(rows), str(features), "part-0.parquet")
    cfg = load_config(None, ["data.wlasl_json=x.json", f"extract.output_dir={features}", "model.hidden_size=16",
                             "model.num_layers=1"])
    splits = load_splits(rows_to_table(rows), None, cfg.features)
    std = fit_standardizer(splits.train, cfg.features)
    return save_checkpoint(tmp_path / "ck", cfg, build_model(cfg, splits.vocab.num_glosses), splits.vocab, std,
                           {"epoch": 0}, [])


def test_test_split_evaluates_and_a_missing_split_names_those_present(tmp_path: Path) -> None:
    ck = _checkpoint(tmp_path)
    ok = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(ck), "--split", "test", "--out",
                                   str(tmp_path / "eval")])
    assert ok.exit_code == 0, ok.output
    assert "test: 6 samples, 3 glosses" in ok.output  # 2 of every gloss's 10 rows
    assert (tmp_path / "eval" / "per_class.csv").is_file()

    bad = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(ck), "--split", "dev"])
    assert bad.exit_code == 2
    lines = [line for line in bad.output.splitlines() if line.strip()]
    assert lines == ["error: --split 'dev': not in the feature dataset, whose splits are: test, train, val"]


def _model_checkpoint(tmp_path: Path, name: str, seed: int, subsample: int) -> LoadedCheckpoint:
    rows = synthetic_rows(num_glosses=3, per_gloss=10, seed=1)
    features = tmp_path / "features"
    if not features.is_dir():
        features.mkdir()
        write_atomically(rows_to_table(rows), str(features), "part-0.parquet")
    cfg = load_config(None, ["data.wlasl_json=x.json", f"extract.output_dir={features}", "model.hidden_size=16",
                             "model.num_layers=1", "model.encoder=attention", f"model.subsample={subsample}"])
    splits = load_splits(rows_to_table(rows), None, cfg.features)
    torch.manual_seed(seed)
    return load_checkpoint(save_checkpoint(tmp_path / name, cfg, build_model(cfg, splits.vocab.num_glosses),
                                           splits.vocab, fit_standardizer(splits.train, cfg.features),
                                           {"epoch": 0}, []))


def test_sentence_ensemble_averages_posteriors_and_needs_one_ctc_step(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    a = _model_checkpoint(tmp_path, "a", 0, 4)
    b = _model_checkpoint(tmp_path, "b", 1, 4)
    alone = evaluate_sentences([a], "val", 6)
    # Averaging a model's posteriors with themselves changes nothing.
    twice = evaluate_sentences([a, a], "val", 6)
    assert (twice.wer_greedy, twice.wer_beam, twice.examples) == (alone.wer_greedy, alone.wer_beam, alone.examples)

    # Two models: what is decoded is the log of their mean posterior per CTC step.
    inputs: list[np.ndarray] = []
    decoded: list[np.ndarray] = []
    real_inputs, real_greedy = ingest.sentence_inputs, evaluation.greedy

    def record_inputs(*args: Any, **kwargs: Any) -> Any:
        out = real_inputs(*args, **kwargs)
        inputs.append(out[0])
        return out

    def record_greedy(lp: np.ndarray) -> Any:
        decoded.append(lp)
        return real_greedy(lp)

    monkeypatch.setattr(ingest, "sentence_inputs", record_inputs)
    monkeypatch.setattr(evaluation, "greedy", record_greedy)
    pair = evaluate_sentences([a, b], "val", 6)
    assert pair.glosses == alone.glosses and pair.sentences == 6 and len(decoded) == 6
    with torch.no_grad():
        x = torch.from_numpy(inputs[0])[None]
        pa, pb = (ck.model(x, torch.tensor([x.shape[1]]))[0].exp().numpy() for ck in (a, b))
    assert decoded[0].shape[0] == -(-x.shape[1] // 4)
    np.testing.assert_allclose(decoded[0], np.log((pa + pb) / 2 + 1e-12), atol=1e-5)
    assert not np.allclose(pa, pb, atol=1e-3)  # the two models do differ
    monkeypatch.undo()
    with pytest.raises(UserError, match="CTC steps of 4 and 8 frames"):
        evaluate_sentences([a, _model_checkpoint(tmp_path, "c", 2, 8)], "val", 6)
    out = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "a"), "--checkpoint",
                                    str(tmp_path / "b"), "--sentences", "6", "--out", str(tmp_path / "eval")])
    assert out.exit_code == 0, out.output
    assert f"WER greedy {pair.wer_greedy:.1%}, beam {pair.wer_beam:.1%} (ensemble of 2" in out.output


def test_merge_repeats_reaches_clips_and_sentences_from_the_command_line(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Every reading doubled (each gloss read twice in a row): kept, no clip is
    read right and every read one is an insertion; with --merge-repeats the
    clips and the sentences score as the undoubled readings do."""
    import re

    from asl_ray import decode
    from asl_ray.continuous import decoding
    from asl_ray.continuous.decoding import Decoded

    _model_checkpoint(tmp_path, "a", 0, 4)
    args = ["evaluate", "--checkpoint", str(tmp_path / "a"), "--sentences", "6", "--out", str(tmp_path / "eval")]

    def scores(*extra: str) -> tuple[list[str], list[str]]:
        out = CliRunner().invoke(main, [*args, *extra])
        assert out.exit_code == 0, out.output
        clips = re.search(r"greedy(?: \(repeats merged\))? ([\d.]+)% \(read as nothing ([\d.]+)%, as 2\+ glosses "
                          r"([\d.]+)%\)", out.output)
        wer = re.search(r"WER greedy ([\d.]+)%, beam ([\d.]+)%", out.output)
        assert clips and wer, out.output
        assert ("(repeats merged)" in out.output) == ("--merge-repeats" in extra)
        return list(clips.groups()), list(wer.groups())

    plain_clips, _ = scores()
    plain_merged_clips, plain_merged_wer = scores("--merge-repeats")
    assert plain_merged_clips == plain_clips  # nothing read twice yet: merging changes no clip

    real_decode, real_greedy, real_beam = decode.greedy_decode, evaluation.greedy, decoding.beam_decoder
    monkeypatch.setattr(decode, "greedy_decode", lambda lp, n: [[g for g in d for _ in (0, 1)]
                                                                 for d in real_decode(lp, n)])

    def twice(d: Decoded) -> Decoded:
        return Decoded([g for g in d.glosses for _ in (0, 1)], [s for s in d.spans for _ in (0, 1)], d.score)

    monkeypatch.setattr(evaluation, "greedy", lambda lp: twice(real_greedy(lp)))
    def beam_twice(sentences: Any, glosses: Any) -> Any:
        beam = real_beam(sentences, glosses)
        return lambda lp: twice(beam(lp))

    monkeypatch.setattr(decoding, "beam_decoder", beam_twice)
    kept_clips, kept_wer = scores("--keep-repeats")
    assert float(kept_clips[0]) == 0 and float(kept_clips[2]) == pytest.approx(100 - float(plain_clips[1]), abs=0.11)
    assert float(kept_clips[2]) > 0
    assert float(kept_wer[0]) > float(plain_merged_wer[0]) and float(kept_wer[1]) > float(plain_merged_wer[1])
    assert scores("--merge-repeats") == (plain_clips, plain_merged_wer)


def test_mirror_tta_averages_each_clip_and_its_mirror_image(tmp_path: Path) -> None:
    from dataclasses import replace

    from asl_ray.augment import mirror
    from asl_ray.extract import read_features

    ck = _model_checkpoint(tmp_path, "a", 0, 1)
    samples = evaluation._split_samples(ck, read_features(str(tmp_path / "features")), "val")
    flipped = [replace(s, landmarks=mirror(s.landmarks)) for s in samples]
    plain, other = evaluation.gloss_posteriors(ck, samples), evaluation.gloss_posteriors(ck, flipped)
    assert not np.allclose(plain, other, atol=1e-4)  # the mirror image is another view
    np.testing.assert_allclose(evaluation.gloss_posteriors(ck, samples, mirrored=True), (plain + other) / 2,
                               atol=1e-6)
    out = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "a"), "--tta-mirror", "--out",
                                    str(tmp_path / "eval")])
    assert out.exit_code == 0 and "x 1 speed(s) x 2 (mirrored)" in out.output, out.output

    ck.cfg.features.dominant_hand = True
    with pytest.raises(UserError, match="reads every sequence in its right-handed form"):
        evaluation.gloss_posteriors(ck, samples, mirrored=True)
