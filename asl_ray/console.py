"""What reaches the terminal: our progress lines, not Ray's internals.

Ray forwards every line its workers print to the driver's terminal, prefixed
with ``(RayTrainWorker pid=…)``, together with its own internals (raylet
notices, ``core_worker.cc`` messages, library warnings); and its driver-side
loggers add start-up notices. All of that also goes to Ray's log files
(``/tmp/ray/session_latest/logs``), which is where it belongs unless the user
asks for it with ``-v/--verbose``.

So: our workers mark their progress lines (:func:`worker_line`), and after
``ray.init`` the driver replaces Ray's log printer with one that prints the
marked lines without Ray's prefix and drops the rest; Ray's driver loggers
are set to errors only. With ``ASL_RAY_VERBOSE=1`` (``asl-ray -v``) Ray prints
as it always does.

On a terminal, long work shows a bar (:class:`Bar`, tqdm): extraction's
videos, training's epochs (drawn from the epoch lines, which then stay off
the screen); elsewhere (CI logs, files) the plain lines, one per step.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MARK = "[asl-ray] "
VERBOSE_ENV = "ASL_RAY_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def worker_line(text: str) -> None:
    """One progress line from a Ray worker, for the driver's terminal. (Ray
    Train patches ``print`` into its logger, which would echo it twice: the
    real stdout is forwarded once.)"""
    print(f"{MARK}{text}", file=sys.__stdout__, flush=True)


def on_terminal() -> bool:
    return sys.stdout.isatty()


class Bar:
    """A tqdm bar on a terminal; nothing elsewhere (the caller prints lines)."""

    def __init__(self, total: int, desc: str, unit: str) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=True, file=sys.stdout)

    def update(self, done: int, postfix: str = "") -> None:
        self.bar.n = done
        self.bar.set_postfix_str(postfix, refresh=False)
        self.bar.refresh()

    def write(self, line: str) -> None:
        """A line above the bar (warnings, failures)."""
        self.bar.write(line, file=sys.stdout)

    def close(self) -> None:
        self.bar.close()


EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+) .*?train loss ([\d.]+) top1 ([\d.]+%).*?blank ([\d.]+)"
                        r"(?:.*?val loss [\d.]+ top1 ([\d.]+%))?")
_epochs: list[Bar] = []


def relay(data: dict[str, Any]) -> None:
    """Ray's forwarded worker output -> our lines only, without Ray's prefix;
    on a terminal, epoch lines move the epoch bar instead."""
    for line in data.get("lines", []):
        _, marked, text = line.partition(MARK)
        if not marked:
            continue
        epoch = EPOCH_LINE.match(text) if on_terminal() else None
        if epoch is None:
            (_epochs[0].write if _epochs else print)(text)
            continue
        done, total = int(epoch.group(1)), int(epoch.group(2))
        if not _epochs:
            _epochs.append(Bar(total, "train", "epoch"))
        val = f", val top1 {epoch.group(6)}" if epoch.group(6) else ""
        _epochs[0].update(done, f"loss {epoch.group(3)}, top1 {epoch.group(4)}{val}, blank {epoch.group(5)}")
        if done >= total:
            close_bars()


# Notices Ray pushes to every driver that are about its own scheduling, not
# the user's work (all of them stay in Ray's log files).
ROUTINE_NOTICES = ("worker processes have been started on node",)


def ray_notice(data: dict[str, Any], ignore_prefix: bool = False) -> None:
    """Messages of Ray's error channel (a worker killed, out of memory, ...):
    on stderr as one ``ray: ...`` line each, without Ray's colours; routine
    scheduling notices dropped."""
    for line in data.get("lines", []):
        if not any(n in line for n in ROUTINE_NOTICES):
            print(f"ray: {line}", file=sys.stderr, flush=True)


def close_bars() -> None:
    """End the epoch bar (a run that stopped early never reaches its total)."""
    while _epochs:
        _epochs.pop().close()


def ray_init_options() -> dict[str, Any]:
    """``ray.init`` keyword arguments: Ray's driver loggers at errors only unless verbose."""
    return {"logging_level": logging.INFO if verbose() else logging.ERROR}


def quiet_ray() -> None:
    """After ``ray.init``: print only our workers' marked lines (unless verbose)."""
    if verbose():
        return
    import warnings

    import ray._private.worker as ray_worker
    import ray.data  # configures the "ray.data" logger, which we then adjust
    from ray._private.worker import global_worker_stdstream_dispatcher as dispatcher

    for name in ("ray", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Ray Data logs every execution at INFO to its file and to the console:
    # keep the file, quiet the console.
    for handler in logging.getLogger("ray.data").handlers:
        if not isinstance(handler, logging.FileHandler) and "File" not in type(handler).__name__:
            handler.setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # our own lines say what happens (sampling, executions)
    ctx.print_on_execution_start = False
    # Ray's deprecation notices about its own internals are not the user's to act on.
    warnings.filterwarnings("ignore", module=r"ray(\.|$)")
    # Ray's own printer is registered under this name when log_to_driver is on.
    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("ray_print_logs", relay)
    # Ray's error-channel listener thread prints through this module function
    # (looked up at each call): its messages become our one-line notices.
    ray_worker.print_to_stdstream = ray_notice
    # Ray Tune's output engine prints its experiment header (a table, the
    # results folder, a TensorBoard hint) even at verbose=0; the legacy engine
    # at verbose=0 prints nothing, and our tune callback says what happens.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    absorb_actor_restart_notice()


class _Probe:
    def __init__(self, blob: Any) -> None:
        pass


def absorb_actor_restart_notice() -> None:
    """Spend, into Ray's log folder, the one notice Ray's C++ driver writes to
    fd 2 past every Python filter.

    Creating an actor that may restart (``max_restarts != 0``) with a
    constructor argument held in the object store makes Ray's core worker log
    "has constructor arguments in the object store and max_restarts > 0" at
    ERROR (ray-project/ray#53727). Ray Data's actor pools (extraction) create
    such actors, some runs and not others, and the line is a caution about
    restarts after the driver is gone, not a failure. Ray logs it once per
    process (``RAY_LOG_ONCE_PER_PROCESS``), so we trigger it here with fd 2
    pointed at ``<ray logs>/asl-ray-driver.err``, and the line is there
    instead of on the user's terminal. The probe actor needs no CPU and is
    killed at once.
    """
    import tempfile
    from pathlib import Path

    import numpy as np
    import ray

    try:
        node: Any = ray._private.worker._global_node
        logs = Path(node.get_logs_dir_path())
    except Exception:  # noqa: BLE001 - any Ray without a local node: a temp folder will do
        logs = Path(tempfile.gettempdir())
    logs.mkdir(parents=True, exist_ok=True)
    blob = ray.put(np.zeros(256 * 1024, np.uint8))  # past the 100 KiB inline limit: passed by reference
    probe_cls = ray.remote(num_cpus=0, max_restarts=1)(_Probe)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(logs / "asl-ray-driver.err", "ab") as sink:
            os.dup2(sink.fileno(), 2)
            probe = probe_cls.remote(blob)  # the notice is logged here, in this call
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    ray.kill(probe)  # type: ignore[arg-type]


@contextmanager
def native_logs_to_file(name: str = "mediapipe") -> Iterator[Path]:
    """Within the block, this process's fd 2 goes to a log file in the system
    temp folder (yielded), so the native lines MediaPipe and TFLite print when
    a graph is made, reset or closed (glog ``W0000 …``, ``INFO: Created
    TensorFlow Lite XNNPACK delegate``) stay off the terminal of commands that
    run MediaPipe in their own process (``predict``, ``show``); extraction's
    workers do the same in their own way (extract.py). With ``-v`` nothing is
    redirected. Python's own errors are raised out of the block and printed
    after it, on the terminal."""
    import tempfile

    log = Path(tempfile.gettempdir()) / f"asl-ray-{name}-{os.getpid()}.log"
    if verbose():
        yield log
        return
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 2)
        os.close(fd)
        yield log
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
