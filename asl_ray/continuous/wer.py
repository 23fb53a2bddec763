"""Word error rate over glosses: (substitutions + deletions + insertions) / reference length."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Edits:
    substitutions: int
    deletions: int
    insertions: int

    @property
    def total(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    def __add__(self, other: Edits) -> Edits:
        return Edits(self.substitutions + other.substitutions, self.deletions + other.deletions,
                     self.insertions + other.insertions)

    def describe(self, words: int) -> str:
        """'substitutions 30.1, deletions 12.0, insertions 6.3' in % of ``words`` reference glosses."""
        n = max(words, 1)
        return (f"substitutions {self.substitutions / n:.1%}, deletions {self.deletions / n:.1%}, "
                f"insertions {self.insertions / n:.1%}")


def edits(reference: Sequence[int | str], hypothesis: Sequence[int | str]) -> Edits:
    """The Levenshtein alignment with the fewest edits; among equally short
    ones, the most substitutions (the usual tie-break of ASR scoring tools)."""
    n, m = len(reference), len(hypothesis)
    # cost[i][j] = (edits, -substitutions, substitutions, deletions, insertions) of ref[:i] vs hyp[:j]
    prev = [(j, 0, 0, 0, j) for j in range(m + 1)]
    for i in range(1, n + 1):
        cur = [(i, 0, 0, i, 0)]
        for j in range(1, m + 1):
            same = reference[i - 1] == hypothesis[j - 1]
            d = prev[j - 1]
            diag = (d[0] + (not same), d[1] - (not same), d[2] + (not same), d[3], d[4])
            u = prev[j]
            up = (u[0] + 1, u[1], u[2], u[3] + 1, u[4])
            left_ = cur[j - 1]
            left = (left_[0] + 1, left_[1], left_[2], left_[3], left_[4] + 1)
            cur.append(min(diag, up, left))
        prev = cur
    best = prev[m]
    return Edits(best[2], best[3], best[4])


def word_error_rate(references: Sequence[Sequence[int | str]], hypotheses: Sequence[Sequence[int | str]]) -> float:
    """Corpus WER: all edits over all reference glosses."""
    words = sum(len(r) for r in references)
    errors = sum(edits(r, h).total for r, h in zip(references, hypotheses, strict=True))
    return errors / max(words, 1)
