"""Local single-node mode starts a real Ray with the configured CPUs and a
dashboard bound to loopback only."""

from __future__ import annotations

import os
import subprocess
import sys

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


PROBE = """
import numpy as np, ray
from asl_ray.config import RayConfig
from asl_ray.raylocal import init_ray

init_ray(RayConfig(num_cpus=1, include_dashboard=False))

@ray.remote(num_cpus=0, max_restarts=2)
class Holder:
    def __init__(self, blob):
        self.n = len(blob)

    def size(self):
        return self.n

# What a Ray Data actor pool does: a restartable actor whose constructor
# argument lives in the object store.
h = Holder.remote(ray.put(np.zeros(300_000, np.uint8)))
print("size", ray.get(h.size.remote()))
ray.shutdown()
"""


def _run_probe(verbose: bool) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ASL_RAY_VERBOSE": "1" if verbose else "0"}
    return subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=180,
                          check=True)


def test_rays_once_per_process_actor_notice_stays_off_the_terminal() -> None:
    """Ray's C++ driver writes "constructor arguments in the object store" to
    fd 2 directly; quiet mode spends it into Ray's log folder beforehand. The
    verbose run shows the notice is real (and that this test can fail)."""
    loud = _run_probe(verbose=True)
    assert "size 300000" in loud.stdout
    assert "constructor arguments in the object store" in loud.stderr
    quiet = _run_probe(verbose=False)
    assert "size 300000" in quiet.stdout
    assert "constructor arguments in the object store" not in quiet.stdout + quiet.stderr
    assert quiet.stderr.strip() == "", quiet.stderr


OTHER_RAY = """
import sys, ray
ray.init(num_cpus=1, include_dashboard=False)
print("up", flush=True)
sys.stdin.read()  # until the test closes it
"""


def test_our_actors_find_their_own_ray_beside_another() -> None:
    """Ray's state API, called inside Ray's own actors without an address
    (Ray Train's placement-group cleaner does), failed with "Found multiple
    active Ray instances" when another Ray ran on the machine: a tune's
    stopped trials then kept their CPUs and the tune hung. A local Ray that
    init_ray starts tells its processes its own address."""
    if ray.is_initialized():
        ray.shutdown()
    other = subprocess.Popen([sys.executable, "-c", OTHER_RAY], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "up"
        init_ray(RayConfig(num_cpus=1))
        assert "RAY_ADDRESS" not in os.environ  # this process can start a fresh Ray later

        @ray.remote(num_cpus=0)
        class Probe:
            def state_of(self, actor_id: str) -> str:
                from ray.util.state import get_actor

                return str(get_actor(actor_id).state)

        probe = Probe.remote()
        assert ray.get(probe.state_of.remote(probe._actor_id.hex()), timeout=120) == "ALIVE"
    finally:
        ray.shutdown()
        if other.stdin is not None:
            other.stdin.close()
        other.wait(timeout=60)
