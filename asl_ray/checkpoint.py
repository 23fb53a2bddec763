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
from asl_ray.inputs import Standardizer, input_size
from asl_ray.model import SignModel
from asl_ray.vocab import Vocabulary


def build_model(cfg: Config, num_classes: int) -> SignModel:
    m = cfg.model
    return SignModel(
        input_size(cfg.features.inputs), num_classes + 1, m.hidden_size, m.num_layers, m.dropout,
        m.bidirectional, m.encoder, m.attention_heads, cfg.features.max_frames, m.lstm_mode,
    )


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


@dataclass
class LoadedCheckpoint:
    cfg: Config
    model: SignModel
    vocab: Vocabulary
    standardizer: Standardizer
    state: dict[str, Any]
    history: list[dict[str, float]]


def latest_checkpoint(run_path: Path) -> Path | None:
    """The checkpoint folder of ``run_path`` with the most epochs done, if any.

    Only complete folders count (all files present), so a checkpoint cut off
    by a killed run is never resumed from.
    """
    best: tuple[int, Path] | None = None
    needed = ("model.pt", "state.pt", "history.json", "config.yaml")
    for folder in run_path.glob("checkpoint_*"):
        if not folder.is_dir() or not all((folder / f).is_file() for f in needed):
            continue
        try:
            epochs = len(json.loads((folder / "history.json").read_text()))
        except (OSError, ValueError):
            continue
        if best is None or epochs > best[0]:
            best = (epochs, folder)
    return best[1] if best else None


def resolve_checkpoint(folder: Path | str) -> Path:
    """A checkpoint folder, or a run folder: its best checkpoint, else its latest."""
    folder = Path(folder)
    if (folder / "model.pt").is_file():
        return folder
    best = folder / "best_checkpoint.txt"
    if best.is_file() and (Path(best.read_text().strip()) / "model.pt").is_file():
        return Path(best.read_text().strip())
    latest = latest_checkpoint(folder)
    if latest is None:
        raise UserError(f"{folder}: neither a checkpoint folder (no model.pt) nor a run folder with checkpoints")
    return latest


def load_checkpoint(folder: Path | str, with_state: bool = False) -> LoadedCheckpoint:
    folder = resolve_checkpoint(folder)
    cfg = load_config(folder / "config.yaml")
    vocab = Vocabulary.load(folder / "vocab.json")
    model = build_model(cfg, vocab.num_glosses)
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True) if with_state else {}
    history = json.loads((folder / "history.json").read_text())
    return LoadedCheckpoint(cfg, model, vocab, Standardizer.load(str(folder / "standardizer.npz")), state, history)
