"""CTC decoding of gloss sequences, with each gloss's frame span.

Greedy: the best token per frame, repeats merged, blanks dropped. Beam:
flashlight-text's lexicon-free CTC beam search (the decoder torchaudio wraps;
torchaudio itself cannot be used here: its 2.11 wheel fails to load against
torch 2.13), which sums the probability of every alignment of a prefix
(``log_add``), so a gloss whose mass is spread over several frames can win
over a single sharper frame. An optional gloss bigram prior
(:class:`GlossBigram`) adds ``weight · log p(g | previous g)`` per gloss; it
is off unless a gloss corpus is given.

Spans come from the decoded path: a gloss spans the frames of its run of
the same token (CTC emits a gloss on one or a few frames, so a span marks
where the model "saw" it, not the sign's whole duration).

Repeats (``train.sentences.merge_repeats``): CTC writes a gloss signed twice
as gloss, blank, gloss. Signs whose movement is repeated (WORK's taps, PINK's
brushes) are read that way too: on WLASL100 val, half of the isolated clips
that greedy decoding reads as two glosses are the right gloss twice. The
PHOENIX-2014 benchmark's official scoring merges consecutive repetitions in
both the reading and the reference before it counts errors (and drops the
``-PLUSPLUS`` repetition mark), so a repeated movement is one sign;
:meth:`Decoded.merged` and :func:`merge_repeats` do the same here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Decoded:
    glosses: list[int]  # vocabulary ids 1..V
    spans: list[tuple[int, int]]  # [first, last] frame of each gloss
    score: float

    def merged(self) -> Decoded:
        """Consecutive readings of one gloss as one, spanning the frames of both."""
        glosses: list[int] = []
        spans: list[tuple[int, int]] = []
        for g, span in zip(self.glosses, self.spans, strict=True):
            if glosses and glosses[-1] == g:
                spans[-1] = (spans[-1][0], span[1])
            else:
                glosses.append(g)
                spans.append(span)
        return Decoded(glosses, spans, self.score)


def merge_repeats(glosses: Sequence[int]) -> list[int]:
    """A gloss sequence with consecutive repetitions merged (a reference, or a reading)."""
    return [g for i, g in enumerate(glosses) if i == 0 or g != glosses[i - 1]]


def path_glosses(path: Sequence[int] | np.ndarray) -> Decoded:
    """Glosses and spans of a per-frame token path (blank = 0)."""
    glosses: list[int] = []
    spans: list[tuple[int, int]] = []
    prev = 0
    for t, tok in enumerate(int(x) for x in path):
        if tok != 0 and tok == prev:
            spans[-1] = (spans[-1][0], t)
        elif tok != 0:
            glosses.append(tok)
            spans.append((t, t))
        prev = tok
    return Decoded(glosses, spans, 0.0)


def greedy(log_probs: np.ndarray) -> Decoded:
    """Best path of (T, V+1) log-probabilities."""
    path = np.asarray(log_probs).argmax(-1)
    d = path_glosses(path)
    return Decoded(d.glosses, d.spans, float(np.asarray(log_probs).max(-1).sum()))


class GlossBigram:
    """Add-one bigram prior over glosses from example sentences (vocabulary ids)."""

    def __init__(self, sentences: Iterable[Sequence[int]], num_glosses: int) -> None:
        self.num_glosses = num_glosses
        self.pairs: Counter[tuple[int, int]] = Counter()
        self.firsts: Counter[int] = Counter()
        for s in sentences:
            prev = 0  # sentence start
            for g in s:
                self.pairs[(prev, g)] += 1
                self.firsts[prev] += 1
                prev = g

    def log_prob(self, prev: int, gloss: int) -> float:
        return float(np.log((self.pairs[(prev, gloss)] + 1) / (self.firsts[prev] + self.num_glosses)))


class BeamDecoder:
    """Prefix beam search over (T, V+1) log-probabilities, blank = 0."""

    def __init__(self, num_glosses: int, beam_size: int = 16, prior: GlossBigram | None = None,
                 prior_weight: float = 0.0) -> None:
        from flashlight.lib.text.decoder import (
            CriterionType,
            LexiconFreeDecoder,
            LexiconFreeDecoderOptions,
            ZeroLM,
        )

        self.tokens = num_glosses + 1
        opts = LexiconFreeDecoderOptions(
            beam_size=beam_size, beam_size_token=min(self.tokens, beam_size), beam_threshold=50.0,
            lm_weight=prior_weight if prior is not None else 0.0, sil_score=0.0, log_add=True,
            criterion_type=CriterionType.CTC)
        lm = _bigram_lm(prior) if prior is not None else ZeroLM()
        # Blank doubles as the silence token: a gloss vocabulary has no word separator.
        self._decoder = LexiconFreeDecoder(opts, lm, 0, 0, [])
        self._lm = lm  # the decoder keeps a reference the binding does not own

    def __call__(self, log_probs: np.ndarray) -> Decoded:
        lp = np.ascontiguousarray(log_probs, dtype=np.float32)
        t, v = lp.shape
        if v != self.tokens:
            raise ValueError(f"log-probabilities have {v} tokens, the decoder {self.tokens}")
        best = self._decoder.decode(lp.ctypes.data, t, v)[0]
        path = list(best.tokens)[1:-1]  # the decoder pads the path with a start and end token
        d = path_glosses(path)
        return Decoded(d.glosses, d.spans, float(best.score))


def _bigram_lm(prior: GlossBigram):  # type: ignore[no-untyped-def]
    from flashlight.lib.text.decoder import LM, LMState

    class BigramLM(LM):
        def __init__(self) -> None:
            LM.__init__(self)
            self.states: dict[LMState, int] = {}

        def start(self, start_with_nothing: bool) -> LMState:
            state = LMState()
            self.states[state] = 0
            return state

        def score(self, state: LMState, token: int) -> tuple[LMState, float]:
            prev = self.states[state]
            child = state.child(token)
            self.states.setdefault(child, token)
            return child, prior.log_prob(prev, token)

        def finish(self, state: LMState) -> tuple[LMState, float]:
            return state, 0.0

    return BigramLM()


def beam_decoder(sentences: Any, glosses: Sequence[str]) -> BeamDecoder:
    """The beam decoder ``train.sentences`` asks for: its beam width, and the
    gloss bigram prior of ``prior_corpus`` when one is given."""
    prior = None
    if sentences.prior_corpus is not None:
        prior = GlossBigram(read_corpus(Path(sentences.prior_corpus), glosses), len(glosses))
    return BeamDecoder(len(glosses), sentences.beam_size, prior, sentences.prior_weight)


def read_corpus(path: Path, glosses: Sequence[str]) -> list[list[int]]:
    """Gloss sentences (one per line, space-separated; a gloss with a space in it
    written with ``_``) as vocabulary ids; a gloss outside the vocabulary is a
    one-line error naming the line."""
    from asl_ray.errors import UserError

    ids = {g: i + 1 for i, g in enumerate(glosses)}
    ids |= {g.replace(" ", "_"): i for g, i in list(ids.items()) if " " in g}  # "thank_you" for "thank you"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise UserError(f"train.sentences.prior_corpus: cannot read {path}: {e.strerror or e}") from None
    out = []
    for n, line in enumerate(lines, 1):
        words = line.split()
        unknown = [w for w in words if w not in ids]
        if unknown:
            raise UserError(f"{path}:{n}: gloss {unknown[0]!r} is not in the model's vocabulary")
        if words:
            out.append([ids[w] for w in words])
    return out
