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


def test_training_asks_for_gpus_the_autoscaler_can_start() -> None:
    """On the shipped cluster the GPU nodes scale from zero: at submit time the
    cluster shows no GPU, yet training must ask for one (it asked for CPUs,
    and landed on the extraction nodes, before)."""
    from asl_ray.config import load_config
    from asl_ray.trainer import autoscaler_offers_gpu, wants_gpu

    cfg = load_config(ROOT / "configs/wlasl100.yaml")
    shipped = prepare_config(_load())
    no_gpu_now = {"CPU": 16.0}
    assert wants_gpu(cfg, no_gpu_now, shipped)
    cpu_only = copy.deepcopy(shipped)
    del cpu_only["available_node_types"]["gpu_worker"]
    assert not autoscaler_offers_gpu(cpu_only) and not wants_gpu(cfg, no_gpu_now, cpu_only)
    capped = copy.deepcopy(shipped)
    capped["available_node_types"]["gpu_worker"]["max_workers"] = 0
    assert not wants_gpu(cfg, no_gpu_now, capped)
    assert wants_gpu(cfg, {"CPU": 8.0, "GPU": 1.0}, None)  # GPUs present now, no launcher config
    assert not wants_gpu(cfg, no_gpu_now, None)  # a local machine without GPUs
    forced = load_config(ROOT / "configs/wlasl100.yaml", ["train.use_gpu=false"])
    assert not wants_gpu(forced, {"GPU": 4.0}, shipped)
