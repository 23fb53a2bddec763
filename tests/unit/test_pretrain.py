"""Masked-landmark pre-training (`asl-ray pretrain`) and fine-tuning from its
encoder (`train.init_encoder`): plain torch, no Ray."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from asl_ray.checkpoint import build_model
from asl_ray.config import Config, load_config
from asl_ray.errors import UserError
from asl_ray.extract import rows_to_table
from asl_ray.inputs import input_size
from asl_ray.pretrain import (
    Reconstructor,
    check_encoder,
    load_encoder,
    read_encoder,
    run_pretraining,
    span_mask,
    unlabelled_samples,
)
from asl_ray.storage import write_atomically
from asl_ray.synthetic import synthetic_rows


def test_span_mask_hides_about_the_ratio_in_spans_inside_each_sequence() -> None:
    lengths = torch.tensor([40, 17, 2, 1])
    hidden = span_mask(lengths, 0.5, 8, torch.Generator().manual_seed(0))
    assert hidden.shape == (4, 40)
    for row, n in zip(hidden, lengths.tolist(), strict=True):
        assert not bool(row[n:].any())  # padding is never "hidden"
        shown = n - int(row[:n].sum())
        assert shown >= 1  # something is always left to read
        if n > 2:
            assert int(row[:n].sum()) >= round(0.5 * n)
    # Spans, not scattered frames: the 40-frame sequence's hidden frames come in runs.
    runs = torch.diff(hidden[0].int(), prepend=torch.zeros(1, dtype=torch.int32)).eq(1).sum()
    assert int(runs) <= 3


def test_hidden_frames_do_not_reach_the_encoder_and_only_they_are_scored() -> None:
    torch.manual_seed(0)
    cfg = load_config(None, ["data.wlasl_json=x.json", "model.encoder=attention", "model.hidden_size=16",
                             "model.num_layers=1"])
    width = input_size(cfg.features.inputs)
    net = Reconstructor(build_model(cfg, 1), 16, width).eval()
    x = torch.randn(2, 12, width)
    lengths = torch.tensor([12, 9])
    hidden = span_mask(lengths, 0.5, 3, torch.Generator().manual_seed(1))
    changed = x.clone()
    changed[hidden] += 5.0  # other inputs where the model cannot see them
    with torch.no_grad():
        guess = net.predict(net.model.encode(x.masked_fill(hidden[..., None], 0.0), lengths))
        assert torch.allclose(net.loss(x, lengths, hidden), ((guess - x) ** 2).mean(-1)[hidden].mean())
        # The same prediction, scored against the changed targets of the hidden frames only.
        assert torch.allclose(net.loss(changed, lengths, hidden), ((guess - changed) ** 2).mean(-1)[hidden].mean())
        changed_visible = x.clone()
        changed_visible[~hidden] += 5.0
        assert not torch.allclose(net.predict(net.model.encode(changed_visible.masked_fill(hidden[..., None], 0.0),
                                                               lengths)), guess)


def _dataset(folder: Path, rows: list[dict]) -> str:
    folder.mkdir(parents=True)
    write_atomically(rows_to_table(rows), str(folder), "part-0.parquet")
    return str(folder)


def _config(tmp_path: Path, *extra: str) -> Config:
    rows = synthetic_rows(num_glosses=3, per_gloss=10, seed=1)
    for r in rows:
        r["content_hash"] = "hash-" + r["video_id"]
    own = _dataset(tmp_path / "own", rows)
    # Another dataset: 4 sequences of its own and a copy of one of own's val videos.
    others = synthetic_rows(num_glosses=2, per_gloss=2, seed=7)
    for r in others:
        r["video_id"] = r["video_id"].replace("synthetic", "other")
        r["content_hash"] = "hash-" + r["video_id"]
        r["split"] = "train"
    val_copy = dict(next(r for r in rows if r["split"] == "val"), video_id="copy", split="train")
    extra_dir = _dataset(tmp_path / "extra", [*others, val_copy])
    return load_config(None, ["data.wlasl_json=x.json", f"extract.output_dir={own}", "model.encoder=attention",
                              "model.hidden_size=16", "model.num_layers=1", "pretrain.epochs=6", "pretrain.lr=0.003",
                              "pretrain.batch_size=8", f"pretrain.extra_datasets=[{extra_dir}]",
                              f"pretrain.output={tmp_path / 'enc.pt'}", *extra])


def test_pretraining_reads_no_val_video_learns_and_its_encoder_fine_tunes(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    samples, counts = unlabelled_samples(cfg)
    # own: its 24 train sequences only; extra: 4, without the copy of a val video
    assert list(counts.values()) == [24, 4]
    val_ids = {f"synthetic-{g:02d}-{i:03d}" for g in range(3) for i in (0, 5)}
    assert {s.video_id for s in samples}.isdisjoint(val_ids | {"copy"})
    assert sum(s.video_id.startswith("other") for s in samples) == 4

    lines: list[str] = []
    result = run_pretraining(cfg, echo=lines.append)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert losses[-1] < result.history[-1]["mean_baseline"]  # better than predicting the mean
    assert "28 sequences without labels" in lines[0] and "train.init_encoder=" in lines[-1]
    assert (tmp_path / "enc.png").stat().st_size > 10_000  # the loss curve, beside the encoder

    blob = read_encoder(str(tmp_path / "enc.pt"))
    fine = load_config(None, ["data.wlasl_json=x.json", "model.encoder=attention", "model.hidden_size=16",
                              "model.num_layers=1", f"train.init_encoder={tmp_path / 'enc.pt'}",
                              "train.sentences.val=10"])  # scores sentences: more positions than pre-training
    check_encoder(fine)
    torch.manual_seed(0)
    model = build_model(fine, 3)
    head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("head.")}
    copied = load_encoder(model, blob, "enc.pt")
    state = model.state_dict()
    assert copied == len(blob["encoder"]) and not any(k.startswith("head.") for k in blob["encoder"])
    for key, value in blob["encoder"].items():
        if key == "pos":
            assert torch.equal(state["pos"][:, :value.shape[1]], value) and state["pos"].shape[1] > value.shape[1]
        else:
            assert torch.equal(state[key], value), key
    assert all(torch.equal(state[k], v) for k, v in head.items())  # the head starts fresh


def test_an_encoder_that_does_not_fit_is_a_one_line_error(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "pretrain.epochs=1")
    run_pretraining(cfg, echo=lambda _: None)
    enc = tmp_path / "enc.pt"
    base = ["data.wlasl_json=x.json", "model.encoder=attention", "model.num_layers=1", f"train.init_encoder={enc}"]
    with pytest.raises(UserError, match=r"shape \(1, 160, 16\), this model's \(1, 160, 32\)"):
        check_encoder(load_config(None, [*base, "model.hidden_size=32"]))
    with pytest.raises(UserError, match="pre-trained on inputs"):
        check_encoder(load_config(None, [*base, "model.hidden_size=16", "features.inputs=[phono]"]))
    with pytest.raises(UserError, match="is not in this model"):  # pre-trained as attention, fine-tuned as LSTM
        check_encoder(load_config(None, ["data.wlasl_json=x.json", "model.encoder=lstm", "model.num_layers=1",
                                         "model.hidden_size=16", f"train.init_encoder={enc}"]))
    with pytest.raises(UserError, match="has no convs"):  # this model has convolution blocks it did not learn
        check_encoder(load_config(None, [*base, "model.hidden_size=16", "model.conv_kernel=3"]))
    with pytest.raises(UserError, match="no such file"):
        read_encoder(str(tmp_path / "missing.pt"))
    (tmp_path / "junk.pt").write_text("not torch")
    with pytest.raises(UserError, match="not an encoder file"):
        read_encoder(str(tmp_path / "junk.pt"))
