"""Start or join Ray. The only place that calls ``ray.init``.

Local single-node mode is the default: a Ray instance on this machine with the
configured CPUs and its dashboard bound to 127.0.0.1 only. With
``ray.address`` set (or ``RAY_ADDRESS`` in the environment, as ``ray job
submit`` sets it) we join that cluster instead and start nothing.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from typing import Any

from asl_ray.config import RayConfig
from asl_ray.errors import UserError


def init_ray(cfg: RayConfig, **extra: Any) -> None:
    """Start or join Ray; then only our own progress lines reach the terminal
    (``console.py``; ``asl-ray -v`` shows Ray's too)."""
    import ray

    from asl_ray.console import quiet_ray, ray_init_options

    if ray.is_initialized():
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    options = {**ray_init_options(), **extra}
    if address:
        ray.init(address=address, **options)
    else:
        # A local worker group waits for nothing but process start-up, which on
        # a busy 2-core machine took more than Ray Train's 60 s (seen: a tune
        # trial failed that way and the tune then waited forever on its
        # placement groups). Workers inherit this from the local cluster.
        os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")
        try:
            with _own_address():
                ray.init(
                    address="local",  # start one, whatever RAY_ADDRESS says while it starts
                    num_cpus=cfg.num_cpus,
                    include_dashboard=cfg.include_dashboard,
                    dashboard_host=cfg.dashboard_host,
                    **options,
                )
        except Exception as exc:  # Ray raises a bare Exception when its processes do not start in time
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            raise UserError(f"Ray could not start a local instance: {lines[0] if lines else type(exc).__name__} "
                            "(seen on a machine busy with other work: try again when it is quieter; Ray's logs: "
                            "/tmp/ray/session_latest/logs)") from exc
    quiet_ray()


@contextlib.contextmanager
def _own_address() -> Iterator[None]:
    """While a local Ray starts: its GCS on a port chosen here, and that
    address in RAY_ADDRESS, which the Ray processes it starts inherit.

    Ray's state API, called without an address inside Ray's own actors, looks
    for the cluster on the machine and fails when it finds two ("Found multiple
    active Ray instances"). Ray Train's placement-group cleaner does that: with
    another Ray on the machine its thread died, the placement groups of trials
    that ASHA stopped were never freed, and the tune waited on them until Ray
    Train's start timeout. The variable is put back for this process at once,
    so a later ``init_ray`` here starts afresh."""
    ip = _node_ip()
    with socket.socket() as sock:
        sock.bind(("", 0))
        port = sock.getsockname()[1]
    saved = {k: os.environ.get(k) for k in ("RAY_GCS_SERVER_PORT", "RAY_ADDRESS")}
    os.environ.update(RAY_GCS_SERVER_PORT=str(port), RAY_ADDRESS=f"{ip}:{port}")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _node_ip() -> str:
    from ray.util import get_node_ip_address

    return str(get_node_ip_address())

