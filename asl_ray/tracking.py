"""MLflow: params, per-epoch metrics, artifacts, nested runs.

Uses ``MlflowClient`` with an explicit tracking URI rather than MLflow's
global "active run", so a Ray worker, a Tune trial and the driver can each log
to the same store without stepping on one another. The default store is a
sqlite file under the run folder (MLflow 3 refuses plain ``./mlruns``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from asl_ray.config import Config
from asl_ray.errors import UserError


def on_cluster(cfg: Config) -> bool:
    """Connecting to a running Ray cluster (``ray.address``, or ``RAY_ADDRESS``
    as ``ray job submit`` sets it), rather than starting a local Ray."""
    return bool(cfg.ray.address or os.environ.get("RAY_ADDRESS"))


def check_tracking(cfg: Config) -> None:
    """Refuse, before any work, a file-based MLflow store on a cluster: rank 0
    and Tune trials log from whatever node they run on, where a sqlite file of
    the driver's disk does not exist (each node would grow its own store)."""
    if not cfg.tracking.enabled or not on_cluster(cfg):
        return
    uri = cfg.tracking.uri
    if uri is None or uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        shown = uri or "(default: sqlite under train.run_dir)"
        raise UserError(f"tracking.uri={shown} is a file on one machine and this runs on a Ray cluster, whose "
                        "workers log from other nodes: set tracking.uri to an MLflow server (http://HOST:5000) "
                        "or tracking.enabled=false")


def tracking_uri(cfg: Config) -> str:
    check_tracking(cfg)
    if cfg.tracking.uri:
        return cfg.tracking.uri
    if "://" in cfg.train.run_dir:
        raise UserError(f"train.run_dir={cfg.train.run_dir!r} is remote: set tracking.uri to an MLflow server "
                        "(the default sqlite store lives on one machine), or tracking.enabled=false")
    root = Path(cfg.train.run_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def artifact_location(cfg: Config, uri: str) -> str | None:
    """Artifacts of the default sqlite store go under train.run_dir too (MLflow
    would otherwise write them to ./mlruns of whatever folder the command ran in);
    a tracking server keeps its own artifact root."""
    if cfg.tracking.uri or not uri.startswith("sqlite:///"):
        return None
    return (Path(cfg.train.run_dir).resolve() / "mlartifacts").as_uri()


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """One process at a time through the first touches of a sqlite store.

    Runs started together on a new store (three seeds at once) each run
    MLflow's schema migration on the same file, and all but one exit
    ("Online migration expected to match one row"); two may also both find no
    experiment and both create it. A lock file beside the store serialises
    them on this machine. A tracking server needs none."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    with open(Path(uri.removeprefix("sqlite:///")).with_suffix(".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes
        yield


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)
    return out


class RunTracker:
    """One MLflow run; a no-op when tracking is disabled."""

    def __init__(
        self, cfg: Config, run_name: str, parent_run_id: str | None = None, tags: dict[str, str] | None = None,
        uri: str | None = None,
    ) -> None:
        self.enabled = cfg.tracking.enabled
        self.run_id = ""
        self.uri = ""
        if not self.enabled:
            return
        # Quiet MLflow's sqlite migration logging in workers.
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        from mlflow.tracking import MlflowClient

        self.uri = uri or tracking_uri(cfg)
        with store_lock(self.uri):
            self.client = MlflowClient(self.uri)
            exp = self.client.get_experiment_by_name(cfg.tracking.experiment)
            # Tagged as model training, so the MLflow UI opens on the runs table
            # rather than its GenAI trace overview.
            exp_id = exp.experiment_id if exp else self.client.create_experiment(
                cfg.tracking.experiment, artifact_location=artifact_location(cfg, self.uri),
                tags={"mlflow.experimentKind": "custom_model_development"})
        all_tags = {"mlflow.runName": run_name, **(tags or {})}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        self.run_id = self.client.create_run(exp_id, tags=all_tags, run_name=run_name).info.run_id

    @classmethod
    def attach(cls, uri: str, run_id: str) -> RunTracker:
        """Log into a run created elsewhere (the driver's run, from a Ray worker)."""
        from mlflow.tracking import MlflowClient

        tracker = cls.__new__(cls)
        tracker.enabled, tracker.uri, tracker.run_id = True, uri, run_id
        tracker.client = MlflowClient(uri)
        return tracker

    def log_params(self, params: dict[str, Any]) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 90):
            self.client.log_batch(self.run_id, params=items[i:i + 90])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if isinstance(v, int | float)]
        self.client.log_batch(self.run_id, metrics=items)

    def set_tag(self, key: str, value: str) -> None:
        if self.enabled:
            self.client.set_tag(self.run_id, key, value)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if not self.enabled:
            return
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        if self.enabled:
            self.client.set_terminated(self.run_id, status)
