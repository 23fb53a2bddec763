"""Real servers on 127.0.0.1 for the tests: an MLflow tracking server and an
S3-compatible object store (moto's standalone server), a two-node Ray cluster
on loopback, plus the fault helper that kills one Ray actor process."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, what: str, proc: subprocess.Popen | None = None, timeout: float = 300) -> None:
    # Generous: with two test files at once beside Ray clusters, the MLflow
    # server once took over 90 s to import and bind; a server that dies says so at once.
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it served {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{what} did not come up on {url}")


def _stop(proc: subprocess.Popen) -> None:
    """Stop a server's process group: SIGTERM, then SIGKILL if it is still up
    after 30 s. Beside training runs on a slow 2-core machine the MLflow
    server once took longer than 30 s to stop (2026-11-29), and a teardown
    that raised failed a test whose checks had all passed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@contextlib.contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    """``mlflow server`` on loopback with a sqlite store under ``root``; its URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--default-artifact-root", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/health", "the MLflow server", proc)
        yield url
    finally:
        _stop(proc)


def mlflow_api(url: str, path: str, body: dict | None = None) -> dict:
    """One call of the MLflow REST API."""
    req = urllib.request.Request(f"{url}/api/2.0/mlflow/{path}", method="POST" if body is not None else "GET",
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server on loopback in its own process, with a fresh bucket.

    Yields ``s3://<bucket>``; while it runs, the AWS_* variables of this
    process point at it (``AWS_ENDPOINT_URL`` is read by pyarrow, boto3 and so
    by Ray's storage too), and processes started meanwhile (a local Ray, `ray
    start`) inherit them."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    saved = {k: os.environ.get(k) for k in S3_ENV}
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=endpoint)
    try:
        _wait_http(endpoint, "the moto S3 server", proc)
        bucket = f"asl-ray-{uuid.uuid4().hex[:8]}"
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        yield f"s3://{bucket}"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _stop(proc)


def _pids_of(temp_dir: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if temp_dir in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(proc.name))
    return pids


@contextlib.contextmanager
def ray_cluster(prefix: str, head_cpus: int, node_start: Callable[[str, str], list[str]]) -> Iterator[dict[str, str]]:
    """`ray start --head` on loopback with ``head_cpus`` CPUs, a second node
    started by the command ``node_start(gcs, node_temp_dir)``, and this process
    connected to them as the driver.

    Each node has its own temp dir, as nodes with their own disks do. Two
    nodes sharing one would share the session's runtime_resources folder, and
    Ray unpacks a job's working_dir with overwrite=True on every node that
    first meets it: the second node's unpacking deleted the folder the job's
    driver on the head was running in ("FileNotFoundError" from os.getcwd at
    the end of a tune job, test_isolated_node, 2026-11-29).

    Everything runs with token auth off (conftest sets it for the whole run).
    Teardown stops only the processes of this cluster, found by its own
    --temp-dir, never another Ray on the machine."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    # Short: Ray's socket paths have a length limit.
    temp_dir, node_temp_dir = (tempfile.mkdtemp(prefix=p, dir="/tmp") for p in (prefix, f"{prefix}n"))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    port, dash = free_port(), free_port()
    gcs = f"127.0.0.1:{port}"
    try:
        head = subprocess.run(
            [RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dash}", f"--num-cpus={head_cpus}", f"--temp-dir={temp_dir}",
             # Free ports, not Ray's fixed defaults (10001, 52365): the suite runs
             # two test files at once (scripts/test.sh), and the other may hold a Ray too.
             f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
             "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=120, check=False)
        assert head.returncode == 0, head.stdout + head.stderr
        node = subprocess.run(node_start(gcs, node_temp_dir), env=env, capture_output=True, text=True, timeout=120,
                              check=False)
        assert node.returncode == 0, node.stdout + node.stderr
        ray.init(address=gcs)
        deadline = time.time() + 60
        while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.time() < deadline:
            time.sleep(0.5)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        yield {"gcs": gcs, "dashboard": f"http://127.0.0.1:{dash}", "temp_dir": temp_dir,
               "node_temp_dir": node_temp_dir}
    finally:
        ray.shutdown()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in _pids_of(temp_dir) + _pids_of(node_temp_dir):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            time.sleep(2)
        for folder in (temp_dir, node_temp_dir):
            shutil.rmtree(folder, ignore_errors=True)


def ray_address() -> str:
    """The GCS address of the Ray this process is connected to. The state API
    guesses it otherwise, and fails when this machine runs other Ray instances."""
    import ray

    return str(ray.get_runtime_context().gcs_address)


def kill_when(cond: Callable[[], bool], class_name: str, killed: list[int], timeout: float = 180) -> threading.Thread:
    """Background thread: once ``cond()`` holds, SIGKILL one live actor process
    of ``class_name``. If it never holds within ``timeout`` nothing is killed
    (so the test says "no worker was killed", not a confusing later failure)."""
    from ray.util.state import list_actors

    address = ray_address()

    def run() -> None:
        deadline = time.time() + timeout
        while not cond():
            if time.time() > deadline:
                return
            time.sleep(0.2)
        for actor in list_actors(address=address, filters=[("state", "=", "ALIVE")], detail=True):
            if class_name in actor["class_name"] and actor.get("pid"):
                os.kill(actor["pid"], signal.SIGKILL)
                killed.append(actor["pid"])
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def ray_job(dashboard: str, *args: str, cwd: Path, timeout: int = 500) -> subprocess.CompletedProcess:
    """`ray job submit --working-dir . -- python ARGS` against ``dashboard``
    (with this test run's interpreter as ``python``).

    A cluster that has just started may answer "No available agent to submit
    job" until its dashboard agent has registered: that answer is retried for
    up to two minutes; anything else is the job's own result."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    deadline = time.time() + 120
    while True:
        # This interpreter, not whatever `python` the cluster's PATH finds (the same machine here).
        proc = subprocess.run([str(Path(sys.executable).with_name("ray")), "job", "submit", "--address", dashboard,
                               "--working-dir", ".", "--", sys.executable, *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)
        if "No available agent to submit job" not in proc.stdout + proc.stderr or time.time() > deadline:
            return proc
        time.sleep(3)
