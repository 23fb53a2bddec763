"""Gloss <-> class id, with the CTC blank at id 0.

The vocabulary is the ``size`` most frequent glosses of the train split (ties
broken alphabetically, so it never changes between runs on the same data).
The report this project comes from trained a 2001-class head on 20 videos;
a vocabulary cut to what the data can support is the first fix.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

BLANK = "<blank>"


@dataclass(frozen=True)
class Vocabulary:
    glosses: tuple[str, ...]  # class id i + 1 -> glosses[i]; id 0 is blank

    @classmethod
    def from_train_glosses(cls, glosses: Iterable[str], size: int | None) -> Vocabulary:
        return cls.from_counts(Counter(glosses), size)

    @classmethod
    def from_counts(cls, counts: dict[str, int], size: int | None) -> Vocabulary:
        """The ``size`` most frequent glosses of ``gloss -> train samples``."""
        ranked = sorted(counts, key=lambda g: (-counts[g], g))
        return cls(tuple(ranked[:size] if size else ranked))

    def __len__(self) -> int:
        """Number of classes including blank (the CTC head's width)."""
        return len(self.glosses) + 1

    @property
    def num_glosses(self) -> int:
        return len(self.glosses)

    @cached_property
    def _ids(self) -> dict[str, int]:
        return {g: i + 1 for i, g in enumerate(self.glosses)}

    def id_of(self, gloss: str) -> int | None:
        return self._ids.get(gloss)

    def gloss_of(self, class_id: int) -> str:
        return BLANK if class_id == 0 else self.glosses[class_id - 1]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"blank": 0, "glosses": list(self.glosses)}, indent=1))

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        return cls(tuple(json.loads(path.read_text())["glosses"]))
