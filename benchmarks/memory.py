"""Peak memory of a process tree (a helper for the benchmarks), sampled from /proc (Linux).

PSS (proportional set size) is summed over the process and its children, so pages that several
processes share (torch's libraries, a memory-mapped cache) are counted once, not once per process.
"""
from __future__ import annotations

import subprocess
import threading
from pathlib import Path


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return pids


class PeakMemory:
    """Samples the PSS of `pid`'s process tree every `interval` seconds; `.peak_gb` is the maximum."""

    def __init__(self, pid: int, interval: float = 0.25):
        self.pid, self.interval, self.peak_kb = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, sum(_pss_kb(p) for p in _tree(self.pid)))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_gb(self) -> float:
        return self.peak_kb / 1e6


def run_measured(cmd: list[str], **kwargs) -> tuple[int, float]:
    """Run `cmd`; return its exit code and the peak PSS of its process tree in GB."""
    proc = subprocess.Popen(cmd, **kwargs)
    with PeakMemory(proc.pid) as mem:
        code = proc.wait()
    return code, mem.peak_gb
