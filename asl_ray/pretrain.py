"""Self-supervised pre-training of the encoder: masked-landmark reconstruction. Plain torch.

Spans of ``mask_span`` frames are hidden until ``mask_ratio`` of a
sequence's frames are; a hidden frame's inputs are set to 0 (the train mean,
after standardising). The encoder reads the sequence, a linear head predicts
every hidden frame's standardised inputs, and the loss is their mean squared
error, over hidden frames only. Spans rather than single frames, so that a
hidden frame cannot simply be read off its two neighbours: the encoder has to
model how hands and arms move over a sign's duration. The CTC head is not
trained here; fine-tuning (``train.init_encoder``) starts from the encoder's
weights (input projection, positions, attention or LSTM layers, convolution
blocks) with a fresh head.

Why: WLASL100 has 632 labelled train videos; sequences without labels
(other datasets' files, the report's fix 10) are the only data there is more
of. The labels of what is read are never used, and the config's own dataset
gives its train split only: no val or test sequence is ever seen.
Measured on WLASL100 (README, row 18): with 716 sequences (632 train videos
and 84 asl-signs files) the fine-tuned model is not better than the one
trained from scratch (69.3% against 72.6% val top-1 over 3 seeds); it fits
the train set sooner, and val does not follow.

It runs in one process (CUDA when there is a GPU): on this project's data a
run takes minutes; distributing it over Ray Train is not done.
"""

from __future__ import annotations

import io
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from asl_ray.checkpoint import build_model
from asl_ray.config import Config
from asl_ray.dataset import SignDataset, collate
from asl_ray.errors import UserError
from asl_ray.inputs import Standardizer, input_size
from asl_ray.loop import make_scheduler
from asl_ray.model import SignModel
from asl_ray.samples import Sample, fit_standardizer, split_samples
from asl_ray.storage import Location, put_file, read_features
from asl_ray.vocab import Vocabulary

# Weights that belong to the classifier, not the encoder: never transferred.
HEAD_PREFIXES = ("head.", "aux.")


def span_mask(lengths: torch.Tensor, ratio: float, span: int, generator: torch.Generator | None = None
              ) -> torch.Tensor:
    """(B, T) bool, True on hidden frames: spans of ``span`` frames starting
    at random frames, added until ``ratio`` of each sequence's frames are
    hidden (spans may overlap, and are cut at the sequence's end). A
    sequence of any length >= 2 keeps at least one frame visible."""
    b, t = len(lengths), int(lengths.max())
    hidden = torch.zeros(b, t, dtype=torch.bool)
    for i, n in enumerate(lengths.tolist()):
        want = min(max(1, round(ratio * n)), n - 1) if n > 1 else 0
        while int(hidden[i, :n].sum()) < want:
            start = int(torch.randint(0, n, (1,), generator=generator))
            hidden[i, start:min(start + span, n)] = True
        if n > 1 and bool(hidden[i, :n].all()):  # the last span overshot: show one frame again
            hidden[i, int(torch.randint(0, n, (1,), generator=generator))] = False
    return hidden


class Reconstructor(nn.Module):
    """A :class:`SignModel`'s encoder plus a linear head that predicts inputs."""

    def __init__(self, model: SignModel, hidden_size: int, input_size: int) -> None:
        super().__init__()
        self.model = model
        self.predict = nn.Linear(hidden_size, input_size)

    def loss(self, x: torch.Tensor, lengths: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the hidden frames' predicted inputs."""
        seen = x.masked_fill(hidden[..., None], 0.0)
        guess = self.predict(self.model.encode(seen, lengths))
        return ((guess - x) ** 2).mean(-1)[hidden].mean()


def encoder_width(cfg: Config) -> int:
    """Width of the encoder's states: the BiLSTM's two directions are concatenated."""
    m = cfg.model
    return m.hidden_size * (2 if m.encoder == "lstm" and m.bidirectional else 1)


@dataclass
class PretrainResult:
    output: str
    sequences: int
    history: list[dict[str, float]]


def unlabelled_samples(cfg: Config) -> tuple[list[Sample], dict[str, int]]:
    """The config's train split and every sequence of ``pretrain.extra_datasets``
    (labels unused) that is not one of the config's val or test videos (same
    content hash); how many came from where."""
    import pyarrow.compute as pc

    from asl_ray.trainer import load_data, refuse_stale

    samples = list(load_data(cfg).train)
    counts = {cfg.extract.output_dir: len(samples)}
    own = read_features(cfg.extract.output_dir, columns=["split", "content_hash"])
    held_out = own.filter(pc.not_equal(own.column("split"), "train")).column("content_hash").drop_null()
    for location in cfg.pretrain.extra_datasets:
        table = read_features(location)
        refuse_stale(table, location)
        table = table.filter(pc.invert(pc.is_in(table.column("content_hash"), value_set=held_out)))
        if not table.num_rows:
            raise UserError(f"pretrain.extra_datasets: {location} has no extracted sequences that are not "
                            f"val or test videos of {cfg.extract.output_dir}")
        every = Vocabulary(tuple(sorted(set(table.column("gloss").to_pylist()))))
        extra = [s for split in sorted(set(table.column("split").to_pylist()))
                 for s in split_samples(table, split, every, cfg.features)]
        samples += extra
        counts[location] = len(extra)
    return samples, counts


def batches(samples: Sequence[Sample], cfg: Config, standardizer: Standardizer, epoch: int
            ) -> Iterator[dict[str, torch.Tensor]]:
    """A fresh seeded shuffle of augmented views (the training augmentation)."""
    ds = SignDataset(samples, cfg.features, standardizer, cfg.train.augment, seed=cfg.train.seed + 1000 * epoch)
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(cfg.train.seed + epoch)).tolist()
    size = cfg.pretrain.batch_size
    for i in range(0, len(order), size):
        yield collate([ds[j] for j in order[i:i + size]])


def run_pretraining(cfg: Config, echo: Callable[[str], Any] = print) -> PretrainResult:
    """Pre-train the encoder ``cfg.model`` describes; write it to ``pretrain.output``."""
    p = cfg.pretrain
    torch.manual_seed(cfg.train.seed)
    samples, counts = unlabelled_samples(cfg)
    standardizer = fit_standardizer(samples[:counts[cfg.extract.output_dir]], cfg.features)  # as training's
    width = input_size(cfg.features.inputs)
    model = build_model(cfg, 1)
    net = Reconstructor(model, encoder_width(cfg), width)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net.to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=p.lr, weight_decay=cfg.train.weight_decay)
    scheduler = make_scheduler(optimizer, cfg.train.model_copy(update={"schedule": "cosine"}), p.epochs)
    where = ", ".join(f"{n:,} from {loc}" for loc, n in counts.items())
    echo(f"pretrain: {len(samples):,} sequences without labels ({where}); hiding {p.mask_ratio:.0%} of the "
         f"frames in spans of {p.mask_span}; {p.epochs} epochs on {device}")
    gen = torch.Generator().manual_seed(cfg.train.seed)
    history: list[dict[str, float]] = []
    t_start = time.perf_counter()
    for epoch in range(p.epochs):
        net.train()
        total, baseline, n = 0.0, 0.0, 0
        for b in batches(samples, cfg, standardizer, epoch):
            hidden = span_mask(b["lengths"], p.mask_ratio, p.mask_span, gen)
            x, lengths, hidden = b["x"].to(device), b["lengths"].to(device), hidden.to(device)
            loss = net.loss(x, lengths, hidden)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.train.grad_clip or math.inf)
            optimizer.step()
            total += float(loss.detach()) * len(lengths)
            # What predicting the mean (0) for every hidden frame would score.
            baseline += float((x ** 2).mean(-1)[hidden].mean()) * len(lengths)
            n += len(lengths)
        scheduler.step()
        elapsed = time.perf_counter() - t_start
        row = {"epoch": epoch + 1, "loss": total / n, "mean_baseline": baseline / n, "seconds": elapsed}
        history.append(row)
        eta = elapsed / (epoch + 1) * (p.epochs - epoch - 1)
        echo(f"pretrain epoch {epoch + 1}/{p.epochs}: reconstruction loss {row['loss']:.3f} "
             f"(predicting the mean: {row['mean_baseline']:.3f}), {elapsed:.0f} s, ETA {eta:.0f} s")
    blob = {"encoder": {k: v.cpu() for k, v in model.state_dict().items() if not k.startswith(HEAD_PREFIXES)},
            "model": cfg.model.model_dump(mode="json"), "inputs": list(cfg.features.inputs),
            "mean": standardizer.mean, "std": standardizer.std, "history": history, "sequences": counts}
    buf = io.BytesIO()
    torch.save(blob, buf)
    _write_bytes(buf.getvalue(), p.output)
    picture = _curve(history, p.output)
    echo(f"pretrain: loss curve {picture}")
    echo(f"pretrain: encoder written to {p.output}; train from it with --set train.init_encoder={p.output}")
    return PretrainResult(p.output, len(samples), history)


def _write_bytes(data: bytes, location: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "encoder.pt"
        path.write_bytes(data)
        put_file(path, location)


def _curve(history: list[dict[str, float]], output: str) -> str:
    """The loss curve beside the encoder file: ``enc.pt`` -> ``enc.png``."""
    from asl_ray.plots import pretrain_curve

    stem = output.rsplit(".", 1)[0] if output.rsplit("/", 1)[-1].count(".") else output
    location = stem + ".png"
    with tempfile.TemporaryDirectory() as tmp:
        put_file(pretrain_curve(history, Path(tmp) / "curve.png"), location)
    return location


def read_encoder(location: str) -> dict[str, Any]:
    """A pre-trained encoder file (local path or URI); a one-line error when it is not one."""
    try:
        loc = Location.of(location)
        with loc.fs.open_input_file(loc.path) as fh:
            data = fh.read()
    except (FileNotFoundError, OSError):
        raise UserError(f"train.init_encoder={location}: no such file (write one with `asl-ray pretrain`)") from None
    try:
        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception:
        raise UserError(f"train.init_encoder={location}: not an encoder file `asl-ray pretrain` wrote") from None
    if not isinstance(blob, dict) or "encoder" not in blob:
        raise UserError(f"train.init_encoder={location}: not an encoder file `asl-ray pretrain` wrote")
    return blob


def load_encoder(model: nn.Module, blob: dict[str, Any], location: str) -> int:
    """Copy a pre-trained encoder's weights into ``model`` (its head stays as
    it is); how many tensors were copied. The attention encoder's positions
    may differ in count (a model that scores sentences has more): the
    pre-trained ones fill the first rows."""
    own = model.state_dict()
    for key, value in blob["encoder"].items():
        if key not in own:
            raise UserError(f"train.init_encoder={location}: its {key} is not in this model (pre-trained as "
                            f"{_describe(blob['model'])}): pre-train with this config's model section")
        if key == "pos" and value.shape[2:] == own[key].shape[2:]:
            rows = min(value.shape[1], own[key].shape[1])
            own[key][:, :rows] = value[:, :rows]
            continue
        if value.shape != own[key].shape:
            raise UserError(f"train.init_encoder={location}: {key} has shape {tuple(value.shape)}, this model's "
                            f"{tuple(own[key].shape)} (pre-trained as {_describe(blob['model'])}, inputs "
                            f"{blob['inputs']}): pre-train with this config's model and features")
        own[key] = value
    missing = [k for k in own if not k.startswith(HEAD_PREFIXES) and k not in blob["encoder"]]
    if missing:
        raise UserError(f"train.init_encoder={location}: has no {missing[0]} (pre-trained as "
                        f"{_describe(blob['model'])}): pre-train with this config's model section")
    model.load_state_dict(own)
    return len(blob["encoder"])


def _describe(m: dict[str, Any]) -> str:
    return (f"{m['encoder']} {m['hidden_size']}x{m['num_layers']}, conv_kernel {m.get('conv_kernel', 0)}, "
            f"part_embed {m.get('part_embed', False)}, part_layers {m.get('part_layers', 0)}")


def check_encoder(cfg: Config) -> None:
    """Before a run starts: the encoder file exists and fits the config's model."""
    if not cfg.train.init_encoder:
        return
    blob = read_encoder(cfg.train.init_encoder)
    if list(blob["inputs"]) != list(cfg.features.inputs):
        raise UserError(f"train.init_encoder={cfg.train.init_encoder}: pre-trained on inputs {blob['inputs']}, "
                        f"this config has {list(cfg.features.inputs)}")
    load_encoder(build_model(cfg, 1), blob, cfg.train.init_encoder)
