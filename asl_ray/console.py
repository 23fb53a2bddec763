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
"""

from __future__ import annotations

import logging
import os
import sys
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


def relay(data: dict[str, Any]) -> None:
    """Ray's forwarded worker output -> our lines only, without Ray's prefix."""
    for line in data.get("lines", []):
        _, marked, text = line.partition(MARK)
        if marked:
            print(text, file=sys.stdout, flush=True)


def ray_init_options() -> dict[str, Any]:
    """``ray.init`` keyword arguments: Ray's driver loggers at errors only unless verbose."""
    return {"logging_level": logging.INFO if verbose() else logging.ERROR}


def quiet_ray() -> None:
    """After ``ray.init``: print only our workers' marked lines (unless verbose)."""
    if verbose():
        return
    for name in ("ray", "ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from ray._private.worker import global_worker_stdstream_dispatcher as dispatcher

    # Ray's own printer is registered under this name when log_to_driver is on.
    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("ray_print_logs", relay)
