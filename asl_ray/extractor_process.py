"""The extractor in a child process, so that a native crash costs one video, not the run.

A video that makes the decoder or MediaPipe crash natively (a segfault, an
abort) kills the process it runs in. In the Ray actor itself that death makes
Ray Data restart the actor and retry the whole batch, with no bound: the same
video crashes it again, forever. So each extraction actor runs its
:class:`~asl_ray.extract.SampleProcessor` (one MediaPipe graph, reused across
videos) in one child process and talks to it over a pipe. When the child dies
on a video, the actor starts a new one and tries that video again, at most
``extract.max_retries`` times; then the video becomes a failed row, "extractor
crashed", and the batch goes on.

Protocol: pickled frames, 8-byte length first, over the child's stdin and a
private copy of its stdout (fd 1 itself is pointed at stderr, so that native
libraries printing to stdout cannot corrupt the stream).

Fault injection for tests: when ``ASL_RAY_CRASH_LIST`` names a file, the child
kills itself with SIGSEGV on every video id listed in it (read at each video).
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import subprocess
import sys
from typing import IO, Any

CRASH_LIST_ENV = "ASL_RAY_CRASH_LIST"


def _send(stream: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError("extractor process closed its pipe")
    (size,) = struct.unpack("<Q", head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("extractor process closed its pipe mid-message")
    return pickle.loads(data)


def _crash_listed(video_id: str) -> None:
    path = os.environ.get(CRASH_LIST_ENV)
    if path and os.path.exists(path):
        with open(path) as f:
            if video_id in f.read().split():
                os.kill(os.getpid(), signal.SIGSEGV)


def _serve() -> None:
    """Child side: settings first, then one row in, one feature row out, until EOF."""
    from asl_ray.config import ExtractConfig
    from asl_ray.extract import SampleProcessor

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    stdin = sys.stdin.buffer
    processor = SampleProcessor(ExtractConfig.model_validate(_receive(stdin)))
    while True:
        try:
            row = _receive(stdin)
        except EOFError:
            return
        _crash_listed(str(row.get("video_id")))
        _send(out, processor(row))


def _death(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class ExtractorProcess:
    """Actor side: a child process running the extractor, restarted when it dies."""

    def __init__(self, settings: dict[str, Any], max_retries: int) -> None:
        self.settings = settings
        self.max_retries = max_retries
        self.proc: subprocess.Popen[bytes] | None = None
        self.crashes = 0  # over this actor's life, for its summary

    def _start(self) -> subprocess.Popen[bytes]:
        # The child imports asl_ray the way this process does (a `ray job`
        # working dir is on sys.path here, not necessarily in PYTHONPATH).
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        proc = subprocess.Popen([sys.executable, "-c", "from asl_ray.extractor_process import _serve; _serve()"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert proc.stdin is not None
        _send(proc.stdin, self.settings)
        return proc

    def _stop(self) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def __call__(self, row: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """The feature row, or None and why the child died on every try."""
        why = ""
        for _ in range(self.max_retries + 1):
            if self.proc is None:
                self.proc = self._start()
            assert self.proc.stdin is not None and self.proc.stdout is not None
            try:
                _send(self.proc.stdin, row)
                return _receive(self.proc.stdout), ""
            except (EOFError, BrokenPipeError, ConnectionResetError):
                code = self._stop()
                self.crashes += 1
                why = _death(code)
        return None, (f"extractor crashed on it {self.max_retries + 1} times ({why}); "
                      f"re-run with `asl-ray extract --retry-failed` to try again")

    def peak_kib(self) -> int:
        """The running child's peak memory (VmHWM, KiB; 0 where unknown). The
        actor's own getrusage does not count a child that has not exited."""
        if self.proc is None:
            return 0
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def close(self) -> None:
        self._stop()
