"""BiLSTM-CTC sign model (and an attention encoder option). Plain torch.

    frames (B, T, F) -> input projection -> encoder -> linear CTC head (B, T, V+1)

A bidirectional LSTM over a padded batch must not let the backward direction
read the padding of shorter sequences first. ``lstm_mode`` chooses how:

* ``masked`` (default): each direction is its own LSTM over the padded batch;
  the backward one runs on every sequence reversed *within its length*
  (padding stays at the end), so results are exact and the fast padded
  kernels are used. On this project's CPU benchmark it is the fastest exact
  mode (see benchmarks/train_speed.py).
* ``packed``: PyTorch ``PackedSequence``: exact, the usual choice with cuDNN.
* ``padded``: plain padded batch, inexact; kept only as a benchmark baseline.

The attention encoder is a small Transformer encoder with a key-padding mask
and learned positions. With ``conv_kernel`` = k > 0 each attention layer is
preceded by a temporal convolution block (Conformer's: gated pointwise, a
depthwise convolution over k frames, pointwise, residual), as in the Kaggle
ISLR winners' 1D-conv + transformer models. Why: a sign's handshape changes
and movements are local in time; attention over a whole clip, learned from
600 videos, does not find local filters easily, while a depthwise
convolution has them built in at a small cost (3H^2 + kH weights a layer).

Per-part input embedding (``parts``: the input columns of each body part,
``inputs.part_columns``): instead of one linear map of all inputs, each part
(left hand, right hand, body) is embedded by its own layer, then the parts'
embeddings are fused by a linear map. Why: with one map, every hidden unit
mixes both hands and the body from the first layer, so a hand MediaPipe did
not find (zeros and a mask) disturbs every unit; per part, a missing hand
only changes its own embedding, which is computed from that hand's columns
and mask alone (Siformer's separate per-part encoders; their robustness to
missing parts is what they credit it for). With ``part_layers`` = n > 0 each
part's embedded sequence also passes through n attention layers of its own
before the fusion, as Siformer's per-part encoders do: a hand's trajectory is
modelled over time from that hand alone, and only then mixed with the rest.
On WLASL100 one such layer cost 5.5 val top-1 points over 3 seeds (README,
row 25): with 632 training videos the extra layers fit train, not val.

Stochastic depth (``drop_path`` = p, attention encoder, training only): each
sample skips encoder layer i of n (with its convolution block) with chance
p (i + 1) / n, and a kept layer's residual branches are scaled by 1/(1 - p_i).
Why: a regulariser of depth rather than of units, used by the Kaggle ISLR
winners (0.2): no layer can rely on the one before it always being there, so
the encoder cannot build long brittle chains fitted to 632 videos. On
WLASL100 at 100 epochs, 0.2 stayed within seed noise of none (-1.5 val top-1
over 3 seeds; README, row 26).

Output rate (``subsample`` = k): the CTC head reads the encoder states
averaged over non-overlapping windows of k frames, so a sequence of T frames
gives ceil(T / k) CTC steps (``output_lengths``). Why: when a sequence has
far more frames than labels (an isolated clip: up to 160 frames for one
gloss), CTC is content to spread a label's probability thinly over many
frames, each still won by blank; summed over alignments such a model ranks
glosses well, but greedy decoding reads nothing. With a handful of wider
steps there is little room to spread, and a step says the gloss (measured:
README, "CTC that decodes"; speech recognisers also cut the frame rate
before CTC, typically 4x). Averaging, not striding, so no frame's evidence
is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
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
        lstm_mode: Literal["masked", "packed", "padded"] = "masked",
        aux_head: bool = False,
        subsample: int = 1,
        conv_kernel: int = 0,
        parts: Sequence[Sequence[int]] | None = None,
        part_layers: int = 0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.subsample = subsample
        self.encoder_kind = encoder
        self.lstm_mode = lstm_mode
        self.bidirectional = bidirectional
        self.proj: nn.Sequential
        if part_layers and (not parts or encoder != "attention"):
            raise ValueError("part_layers needs parts and the attention encoder")
        if drop_path and encoder != "attention":
            raise ValueError("drop_path needs the attention encoder")
        # Stochastic depth: layer i of n is skipped with chance drop_path * (i + 1) / n
        # (Huang et al.'s linear rule: the first layers, which every later one reads, are kept most).
        self.drop_rates = [drop_path * (i + 1) / num_layers for i in range(num_layers)]
        if parts:
            temporal = (attention_heads, max_frames, part_layers, dropout) if part_layers else None
            self.proj = nn.Sequential(PartEmbedding(input_size, parts, hidden_size, temporal), nn.Dropout(dropout))
        else:
            self.proj = nn.Sequential(
                nn.Linear(input_size, hidden_size), nn.LayerNorm(hidden_size), nn.GELU(), nn.Dropout(dropout)
            )
        if encoder == "lstm" and lstm_mode == "masked":
            directions = 2 if bidirectional else 1
            self.layers = nn.ModuleList(
                nn.ModuleList(nn.LSTM(hidden_size * (directions if i else 1), hidden_size, batch_first=True)
                              for _ in range(directions))
                for i in range(num_layers)
            )
            self.between = nn.Dropout(dropout)
            out = hidden_size * directions
        elif encoder == "lstm":
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
            self.convs = nn.ModuleList(
                ConvBlock(hidden_size, conv_kernel, dropout) for _ in range(num_layers)) if conv_kernel else None
            out = hidden_size
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(out, num_classes))
        self.max_positions = max_frames if encoder == "attention" else None  # the LSTM takes any length
        # Multi-task (the report's fix 11): a gloss classifier on the encoder
        # averaged over the clip's frames, trained beside CTC (losses.py).
        self.aux = nn.Sequential(nn.Dropout(dropout), nn.Linear(out, num_classes - 1)) if aux_head else None

    def _masked_lstm(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            assert isinstance(layer, nn.ModuleList)
            if i:
                h = self.between(h)
            outs = [layer[0](h)[0]]
            if self.bidirectional:
                back = layer[1](reverse_within_lengths(h, lengths))[0]
                outs.append(reverse_within_lengths(back, lengths))
            h = torch.cat(outs, dim=-1)
        return h

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, with_aux: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities (B, T, V+1); frames past a sequence's length are padding.
        With ``with_aux`` (a model built with ``aux_head``) also the gloss
        classifier's logits (B, V)."""
        h = self.encode(x, lengths)
        lp = torch.log_softmax(self.head(self.pool(h, lengths)), dim=-1)
        if not with_aux:
            return lp
        assert self.aux is not None, "with_aux needs a model built with aux_head=True"
        valid = (torch.arange(h.shape[1], device=h.device)[None, :] < lengths.to(h.device)[:, None]).to(h.dtype)
        pooled = (h * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp(min=1)
        return lp, self.aux(pooled)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """CTC steps of sequences of ``lengths`` frames: ceil(length / subsample)."""
        return output_lengths(lengths, self.subsample)

    def pool(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, H) -> (B, ceil(T / k), H): mean over each window's valid frames."""
        k = self.subsample
        if k == 1:
            return h
        b, t, width = h.shape
        valid = (torch.arange(t, device=h.device)[None, :] < lengths.to(h.device)[:, None]).to(h.dtype)[..., None]
        pad = (-t) % k
        h = nn.functional.pad(h * valid, (0, 0, 0, pad)).view(b, -1, k, width).sum(2)
        count = nn.functional.pad(valid, (0, 0, 0, pad)).view(b, -1, k, 1).sum(2)
        return h / count.clamp(min=1)

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Encoder states (B, T, H)."""
        t = x.shape[1]
        if self.max_positions is not None and t > self.max_positions:
            raise ValueError(f"{t} frames: the attention encoder has positions for {self.max_positions} "
                             "(resample the sequence first)")
        first = self.proj[0]
        if isinstance(first, PartEmbedding) and first.temporal is not None:
            h = self.proj[1](first(x, padding_mask(lengths, t, x.device)))
        else:
            h = self.proj(x)
        if self.encoder_kind == "lstm" and self.lstm_mode == "masked":
            h = self._masked_lstm(h, lengths)
        elif self.encoder_kind == "lstm" and self.lstm_mode == "packed":
            packed = pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, _ = self.lstm(packed)
            h, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        elif self.encoder_kind == "lstm":
            # Padded (benchmark comparison only): the backward direction reads
            # the padding of shorter sequences first.
            h, _ = self.lstm(h)
        else:
            pad = padding_mask(lengths, t, h.device)
            h = h + self.pos[:, :t]
            if self.convs is None and not (self.training and any(self.drop_rates)):
                return self.attn(h, src_key_padding_mask=pad)
            convs = self.convs if self.convs is not None else [None] * len(self.attn.layers)
            for conv, layer, rate in zip(convs, self.attn.layers, self.drop_rates, strict=True):
                out = layer(conv(h, pad) if conv is not None else h, src_key_padding_mask=pad)
                h = drop_path(h, out, rate) if self.training and rate else out
        return h


class PartEmbedding(nn.Module):
    """GELU(LN(W [GELU(LN(W_p x_p)) for each part p])): each body part's
    columns embedded alone, then fused (module docstring: why). With
    ``temporal`` = (heads, max_frames, layers, dropout), each part's embedded
    sequence first passes through ``layers`` attention layers of its own
    (with learned positions shared by the parts); ``forward`` then needs the
    padding mask."""

    def __init__(self, input_size: int, parts: Sequence[Sequence[int]], hidden: int,
                 temporal: tuple[int, int, int, float] | None = None) -> None:
        super().__init__()
        flat = sorted(i for p in parts for i in p)
        if flat != list(range(input_size)):
            raise ValueError(f"the parts' columns must cover the {input_size} inputs exactly once")
        for i, cols in enumerate(parts):
            self.register_buffer(f"cols{i}", torch.tensor(list(cols), dtype=torch.long), persistent=False)
        self.embed = nn.ModuleList(
            nn.Sequential(nn.Linear(len(cols), hidden), nn.LayerNorm(hidden), nn.GELU()) for cols in parts)
        self.fuse = nn.Sequential(nn.Linear(hidden * len(parts), hidden), nn.LayerNorm(hidden), nn.GELU())
        self.temporal: nn.ModuleList | None = None
        if temporal:
            heads, max_frames, layers, dropout = temporal
            self.part_pos = nn.Parameter(torch.zeros(1, max_frames, hidden))
            self.temporal = nn.ModuleList(nn.TransformerEncoder(
                nn.TransformerEncoderLayer(hidden, heads, dim_feedforward=2 * hidden, dropout=dropout,
                                           batch_first=True, norm_first=True),
                num_layers=layers, enable_nested_tensor=False) for _ in parts)

    def part(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Part ``i``'s embedding (..., H), from its own columns only."""
        cols = getattr(self, f"cols{i}")
        return self.embed[i](x.index_select(-1, cols))

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        if self.temporal is None:
            return self.fuse(torch.cat([self.part(x, i) for i in range(len(self.embed))], dim=-1))
        assert pad is not None, "per-part attention layers need the padding mask"
        pos = self.part_pos[:, :x.shape[1]]
        return self.fuse(torch.cat([enc(self.part(x, i) + pos, src_key_padding_mask=pad)
                                    for i, enc in enumerate(self.temporal)], dim=-1))


class ConvBlock(nn.Module):
    """x + pointwise(SiLU(LN(depthwise_k(GLU(pointwise(LN(x))))))): Conformer's
    convolution module over time. Padding frames are zeroed before the
    depthwise convolution, so a sequence reads the same whatever it is
    batched with."""

    def __init__(self, hidden: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.expand = nn.Linear(hidden, 2 * hidden)
        self.depthwise = nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2, groups=hidden)
        self.mid = nn.LayerNorm(hidden)
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        h = nn.functional.glu(self.expand(self.norm(x)), dim=-1).masked_fill(pad[..., None], 0.0)
        h = self.depthwise(h.transpose(1, 2)).transpose(1, 2)[:, :x.shape[1]]  # even kernels give T+1
        return x + self.out(self.mid(h))


def drop_path(x: torch.Tensor, out: torch.Tensor, rate: float) -> torch.Tensor:
    """Stochastic depth for a residual block ``out = x + f(x)``: per sample,
    f(x) is dropped with chance ``rate`` and scaled by 1 / (1 - rate) when
    kept, so its expected value is what inference (every block on) sees.
    Pre-norm layers (norm_first) and the convolution block are x + branches,
    so out - x is exactly their branches."""
    keep = (torch.rand(x.shape[0], 1, 1, device=x.device) >= rate).to(x.dtype) / (1 - rate)
    return x + (out - x) * keep


def padding_mask(lengths: torch.Tensor, t: int, device: torch.device) -> torch.Tensor:
    """(B, t) bool on ``device``, True on the frames past each sequence's length."""
    return torch.arange(t, device=device)[None, :] >= lengths.to(device)[:, None]


def output_lengths(lengths: torch.Tensor, subsample: int) -> torch.Tensor:
    """ceil(lengths / subsample): the CTC steps of each sequence."""
    return (lengths + subsample - 1) // subsample


def reverse_within_lengths(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence's first ``length`` frames; padding stays in place."""
    t = x.shape[1]
    idx = torch.arange(t, device=x.device)[None, :].expand(x.shape[0], t)
    n = lengths.to(x.device)[:, None]
    rev = torch.where(idx < n, n - 1 - idx, idx)
    return x.gather(1, rev[..., None].expand_as(x))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
