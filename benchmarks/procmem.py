"""Memory of a process tree, read from /proc while it runs (psutil-free).

``TreeMemory(pid)`` samples every process below ``pid`` every 2 s: each
one's own peak RSS (``VmHWM``, the kernel's high-water mark, so no peak is
missed between samples), its private part (``RssAnon``), and the tree's
summed PSS (shared pages split between their users, so a shared object
store counts once). Reading every process's smaps twice a second took most
of a core on a 2-core machine, slowing the run it measured; ``cpu_seconds``
says what the sampling cost."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path


def children(pid: int) -> set[int]:
    """``pid`` and every live descendant."""
    parent: dict[int, int] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                parent[int(p.name)] = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, grew = {pid}, True
    while grew:
        new = {c for c, pp in parent.items() if pp in tree and c not in tree}
        tree |= new
        grew = bool(new)
    return tree


def kib(pid: int, path: str, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeMemory(threading.Thread):
    """Per-process peaks (KiB) of a process tree, and its peak summed PSS."""

    def __init__(self, pid: int, interval: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.stop = pid, interval, False
        self.peak_rss: dict[int, int] = {}
        self.peak_anon: dict[int, int] = {}
        self.cmdline: dict[int, str] = {}
        self.tree_pss = 0
        self.cpu_seconds = 0.0  # this sampler's own CPU time
        self.start()

    def run(self) -> None:
        while not self.stop:
            total = 0
            for p in children(self.pid):
                total += kib(p, "smaps_rollup", "Pss:")
                hwm = kib(p, "status", "VmHWM:")
                if hwm:
                    self.peak_rss[p] = max(self.peak_rss.get(p, 0), hwm)
                    self.peak_anon[p] = max(self.peak_anon.get(p, 0), kib(p, "status", "RssAnon:"))
                # Every name a process has had: a Ray worker renames itself
                # (ray::IDLE -> ray::RayTrainWorker), and an exiting one reads empty.
                with contextlib.suppress(OSError):
                    name = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    if name and name not in self.cmdline.get(p, ""):
                        self.cmdline[p] = f"{self.cmdline.get(p, '')} | {name}"
            self.tree_pss = max(self.tree_pss, total)
            self.cpu_seconds = time.thread_time()
            time.sleep(self.interval)

    def finish(self) -> TreeMemory:
        self.stop = True
        self.join(timeout=5)
        return self

    def matching(self, text: str) -> dict[int, int]:
        """Peak RSS of the processes whose command line contains ``text``."""
        return {p: v for p, v in self.peak_rss.items() if text in self.cmdline.get(p, "")}
