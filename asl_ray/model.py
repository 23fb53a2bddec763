"""BiLSTM-CTC sign model (and an attention encoder option). Plain torch.

    frames (B, T, F) -> input projection -> encoder -> linear CTC head (B, T, V+1)

The LSTM encoder runs on packed sequences, so padding costs no compute and
never leaks into the backward direction. The attention encoder is a small
Transformer encoder with a key-padding mask and learned positions.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class SignModel(nn.Module):
    def __init__(
        self,
        input_size: int,
        num_classes: int,
        hidden_size: int = 128,
        num_layers: int = 2,
        dropout: float = 0.3,
        bidirectional: bool = True,
        encoder: Literal["lstm", "attention"] = "lstm",
        attention_heads: int = 4,
        max_frames: int = 512,
        packed: bool = True,
    ) -> None:
        super().__init__()
        self.encoder_kind = encoder
        self.packed = packed
        self.proj = nn.Sequential(
            nn.Linear(input_size, hidden_size), nn.LayerNorm(hidden_size), nn.GELU(), nn.Dropout(dropout)
        )
        if encoder == "lstm":
            self.lstm = nn.LSTM(
                hidden_size, hidden_size, num_layers=num_layers, batch_first=True,
                bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0,
            )
            out = hidden_size * (2 if bidirectional else 1)
        else:
            self.pos = nn.Parameter(torch.zeros(1, max_frames, hidden_size))
            layer = nn.TransformerEncoderLayer(
                hidden_size, attention_heads, dim_feedforward=2 * hidden_size, dropout=dropout,
                batch_first=True, norm_first=True,
            )
            self.attn = nn.TransformerEncoder(layer, num_layers=num_layers, enable_nested_tensor=False)
            out = hidden_size
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(out, num_classes))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (B, T, V+1); frames past a sequence's length are padding."""
        h = self.proj(x)
        if self.encoder_kind == "lstm" and self.packed:
            packed = pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, _ = self.lstm(packed)
            h, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        elif self.encoder_kind == "lstm":
            # Padded (benchmark comparison only): the backward direction reads
            # the padding of shorter sequences first.
            h, _ = self.lstm(h)
        else:
            t = h.shape[1]
            pad = torch.arange(t, device=h.device)[None, :] >= lengths.to(h.device)[:, None]
            h = self.attn(h + self.pos[:, :t], src_key_padding_mask=pad)
        return torch.log_softmax(self.head(h), dim=-1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
