"""Checkpoint folders: everything needed to resume, evaluate or predict.

    model.pt         weights (state dict of the unwrapped model)
    state.pt         optimiser, scheduler, epoch, best score
    history.json     per-epoch metrics so far
    vocab.json       gloss <-> id, blank at 0
    standardizer.npz input mean/std from the train split
    config.yaml      the resolved config of the run

Tensors load with ``torch.load(weights_only=True)``: a checkpoint is data,
never code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from asl_ray.config import Config, dump_config, load_config
from asl_ray.errors import UserError
from asl_ray.inputs import Standardizer, input_size, part_columns
from asl_ray.model import SignModel
from asl_ray.storage import absolute, is_file, join, local_folder, read_text, subfolders
from asl_ray.vocab import Vocabulary


def build_model(cfg: Config, num_classes: int) -> SignModel:
    m = cfg.model
    return SignModel(
        input_size(cfg.features.inputs), num_classes + 1, m.hidden_size, m.num_layers, m.dropout,
        m.bidirectional, m.encoder, m.attention_heads, max_positions(cfg), m.lstm_mode,
        aux_head=cfg.train.aux_weight > 0, subsample=m.subsample, conv_kernel=m.conv_kernel,
        parts=list(part_columns(cfg.features.inputs).values()) if m.part_embed else None,
        part_layers=m.part_layers, drop_path=m.drop_path,
    )


def max_positions(cfg: Config) -> int:
    """Frames the attention encoder has positions for: a clip's ``max_frames``,
    times the longest sentence when the run trains or scores sentences."""
    s = cfg.train.sentences
    return cfg.features.max_frames * (s.max_clips if s.used else 1)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP wrapper (or the model itself)."""
    inner = getattr(model, "module", model)
    return inner if isinstance(inner, torch.nn.Module) else model


def save_checkpoint(
    folder: Path, cfg: Config, model: torch.nn.Module, vocab: Vocabulary, standardizer: Standardizer,
    state: dict[str, Any], history: list[dict[str, float]],
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(unwrap(model).state_dict(), folder / "model.pt")
    torch.save(state, folder / "state.pt")
    (folder / "history.json").write_text(json.dumps(history, indent=1))
    vocab.save(folder / "vocab.json")
    standardizer.save(str(folder / "standardizer.npz"))
    (folder / "config.yaml").write_text(dump_config(cfg))
    return folder


CHECKPOINT_FILES = ("model.pt", "state.pt", "history.json", "config.yaml")


@dataclass
class LoadedCheckpoint:
    cfg: Config
    model: SignModel
    vocab: Vocabulary
    standardizer: Standardizer
    state: dict[str, Any]
    history: list[dict[str, float]]

    def with_decoding(self, prior: Path | None = None, prior_weight: float | None = None,
                      merge_repeats: bool | None = None) -> LoadedCheckpoint:
        """The checkpoint with its decoding settings (``train.sentences``: beam search's gloss
        prior, repeats merged) changed where given, as the command line asks."""
        if prior is None and prior_weight is None and merge_repeats is None:
            return self
        s = self.cfg.train.sentences
        s = s.model_copy(update={"prior_corpus": prior or s.prior_corpus,
                                 "prior_weight": s.prior_weight if prior_weight is None else prior_weight,
                                 "merge_repeats": s.merge_repeats if merge_repeats is None else merge_repeats})
        self.cfg = self.cfg.model_copy(update={"train": self.cfg.train.model_copy(update={"sentences": s})})
        return self


def _complete_checkpoints(run_location: str) -> list[tuple[str, list[dict[str, float]]]]:
    """(folder, history) of every complete checkpoint folder of a run folder."""
    found = []
    for folder in subfolders(run_location, "checkpoint_"):
        if not all(is_file(join(folder, f)) for f in CHECKPOINT_FILES):
            continue
        try:
            found.append((folder, list(json.loads(read_text(join(folder, "history.json")) or ""))))
        except ValueError:
            continue
    return found


def latest_checkpoint(run_location: Path | str) -> str | None:
    """The checkpoint folder of a run folder (local path or URI) with the most
    epochs done, if any: the one to resume from.

    Only complete folders count (all files present), so a checkpoint cut off
    by a killed run is never resumed from.
    """
    found = _complete_checkpoints(str(run_location))
    return max(found, key=lambda fh: len(fh[1]))[0] if found else None


def epochs_done(checkpoint: str) -> int:
    """Epochs in a checkpoint's history (0 when it cannot be read)."""
    try:
        return len(json.loads(read_text(join(checkpoint, "history.json")) or "[]"))
    except ValueError:
        return 0


def resume_point(resume_from: str | None, run_location: str, handed: str | None = None) -> str | None:
    """Where a (re)starting training worker continues: the most advanced of
    ``resume_from``, the checkpoint Ray Train handed it (``handed``, if any)
    and the latest complete checkpoint of its run folder (which, after a
    failure, holds what this run has done since)."""
    candidates = [c for c in (resume_from, handed, latest_checkpoint(run_location)) if c]
    return max(candidates, key=epochs_done) if candidates else None


def best_checkpoint(run_location: Path | str) -> str | None:
    """The complete checkpoint whose epoch scored best (val top-1, train top-1
    without val; the later epoch on a tie): a run's model when no
    ``best_checkpoint.txt`` says so, e.g. a tune trial's."""

    def score(fh: tuple[str, list[dict[str, float]]]) -> tuple[float, int]:
        last = fh[1][-1] if fh[1] else {}
        return float(last.get("val_top1", last.get("train_top1", -1.0))), len(fh[1])

    found = _complete_checkpoints(str(run_location))
    return max(found, key=score)[0] if found else None


def resolve_checkpoint(location: Path | str) -> str:
    """A checkpoint folder, or a run folder: the checkpoint its
    ``best_checkpoint.txt`` names, else its best-scoring one (local path or
    URI; the answer is in the same form)."""
    location = absolute(str(location))
    if is_file(join(location, "model.pt")):
        return location
    marker = (read_text(join(location, "best_checkpoint.txt")) or "").strip()
    if marker and is_file(join(marker, "model.pt")):
        return marker
    best = best_checkpoint(location)
    if best is None:
        raise UserError(f"{location}: neither a checkpoint folder (no model.pt) nor a run folder with checkpoints")
    return best


def load_checkpoint(location: Path | str, with_state: bool = False) -> LoadedCheckpoint:
    """A checkpoint (or a run folder's best one), local or at a URI (downloaded once)."""
    folder = local_folder(resolve_checkpoint(location))
    cfg = load_config(folder / "config.yaml")
    vocab = Vocabulary.load(folder / "vocab.json")
    model = build_model(cfg, vocab.num_glosses)
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True) if with_state else {}
    history = json.loads((folder / "history.json").read_text())
    return LoadedCheckpoint(cfg, model, vocab, Standardizer.load(str(folder / "standardizer.npz")), state, history)
