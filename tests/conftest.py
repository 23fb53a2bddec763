"""Shared fixtures. Real data comes from ../shared/data; under CI=true its
absence fails the test instead of skipping it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# One Ray auth mode for the whole run, set before anything imports Ray. Ray
# caches its config in-process: a local `ray.init()` turns token auth on
# through os.environ, and a test that later flips the variable (the clusters
# started with `ray start` run with auth off) leaves this driver and the next
# GCS it spawns disagreeing ("InvalidAuthToken ... RAY_AUTH_MODE is currently
# 'disabled'"), so every later local Ray fails to start.
os.environ["RAY_AUTH_MODE"] = "disabled"

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ASL_RAY_SHARED_DATA", ROOT.parent / "shared" / "data"))


# The slowest test files (seconds in the suite, two files at once on 2 cores:
# a clean-clone run, 2026-11-29), handed out first when files run two at once
# (scripts/test.sh), so the quick ones fill the gaps at the end instead of one
# slow file running alone.
_SLOW_FILES = {"test_train_real": 802, "test_tune_real": 694, "test_isolated_node": 659, "test_scale_ingest": 634,
               "test_s3_storage": 499, "test_cluster": 411, "test_readme": 299, "test_extract_real": 237,
               "test_extract_crash": 83, "test_local_ray": 76}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: -_SLOW_FILES.get(item.path.stem, 0))  # stable: a file's tests keep their order


def require_shared(*parts: str) -> Path:
    """Path under ../shared/data; fail under CI, skip elsewhere, when absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        msg = f"real data missing: {path} (see ../shared/data/README.md)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture
def shared_data() -> Path:
    return require_shared()


@pytest.fixture(scope="module")
def local_ray():
    """One real local Ray per test module (Ray's own testing advice)."""
    import ray

    from asl_ray.config import RayConfig
    from asl_ray.raylocal import init_ray

    if ray.is_initialized():
        ray.shutdown()
    init_ray(RayConfig(num_cpus=2))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real `mlflow server` on 127.0.0.1 for one test module; its URL."""
    from tests.servers import mlflow_server as serve

    with serve(tmp_path_factory.mktemp("mlflow")) as url:
        yield url


@pytest.fixture(scope="module")
def s3_bucket():
    """A fresh bucket on a real S3-compatible server (moto) on 127.0.0.1, for
    one test module: ``s3://<bucket>``, with AWS_* pointing at it meanwhile."""
    from tests.servers import s3_server

    with s3_server() as uri:
        yield uri
