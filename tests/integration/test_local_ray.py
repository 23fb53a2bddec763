"""Local single-node mode starts a real Ray with the configured CPUs and a
dashboard bound to loopback only."""

from __future__ import annotations

import ray

from asl_ray.config import RayConfig
from asl_ray.raylocal import init_ray


def test_local_ray_uses_configured_cpus_and_loopback_dashboard() -> None:
    if ray.is_initialized():
        ray.shutdown()
    try:
        init_ray(RayConfig(num_cpus=2))
        ctx = ray.get_runtime_context()
        assert ctx is not None
        assert ray.cluster_resources()["CPU"] == 2
        url = ray.worker.get_dashboard_url()
        assert url.startswith("127.0.0.1:"), url
    finally:
        ray.shutdown()
