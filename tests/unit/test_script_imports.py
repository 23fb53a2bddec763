"""Benchmarks and scripts import asl-ray's names inside their functions (so
that `--help` is fast); nothing runs those imports in the suite, so check
statically that every name they import from asl_ray still exists."""

from __future__ import annotations

import ast
import importlib

import pytest

from tests.conftest import ROOT

FILES = sorted([*ROOT.glob("benchmarks/*.py"), *ROOT.glob("scripts/*.py"), *ROOT.glob("jobs/*.py")])


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_name_imported_from_asl_ray_exists(path) -> None:  # type: ignore[no-untyped-def]
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("asl_ray"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{path.name}: {node.module} has no {alias.name}"


def test_missing_hands_counts_frames_without_both_hands() -> None:
    import numpy as np

    from scripts.missing_hands import missing_share

    lm = np.zeros((10, 75, 3), np.float32)
    lm[:3, 33:54] = np.nan  # left hand lost in 3 frames
    lm[2:6, 60] = np.nan  # one right-hand point lost in 4 (one of them shared)
    assert missing_share(lm) == 0.6


def test_missing_hands_sides_follow_which_hand_is_found_more() -> None:
    import numpy as np

    from scripts.missing_hands import left_handed

    lm = np.zeros((10, 75, 3), np.float32)
    lm[:6, 54:75] = np.nan  # right hand found on 4 frames, left on 10
    assert left_handed(lm) == 1.0
    lm[:, 33:54] = np.nan
    assert left_handed(lm) == 0.0
