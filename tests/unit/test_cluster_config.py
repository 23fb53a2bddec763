"""cluster.yaml passes Ray's own cluster-config validation (no cloud calls)."""

from __future__ import annotations

import copy

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tests.conftest import ROOT


def _load() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_is_valid_for_ray_up() -> None:
    cfg = prepare_config(_load())
    validate_config(cfg)
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] == "head" and types["head"]["resources"]["CPU"] == 0
    # Extraction actors ask for "extract", which only CPU workers have; training
    # workers ask for GPUs, which only GPU workers have.
    assert types["cpu_worker"]["resources"].get("extract", 0) > 0
    assert "GPU" not in types["cpu_worker"]["resources"] and types["gpu_worker"]["resources"]["GPU"] >= 1
    assert "extract" not in types["gpu_worker"]["resources"]
    assert any("pip install" in c and "-e ~/asl-ray" in c for c in cfg["setup_commands"])
    assert "--dashboard-host=127.0.0.1" in " ".join(cfg["head_start_ray_commands"])


def test_validation_rejects_a_broken_cluster_yaml() -> None:
    bad = copy.deepcopy(_load())
    bad["available_node_types"]["cpu_worker"]["min_wrokers"] = 1
    with pytest.raises(Exception, match="min_wrokers"):
        validate_config(prepare_config(bad))
