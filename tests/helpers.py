"""Small helpers shared by test modules (fixtures live in conftest.py)."""
from __future__ import annotations

import os
import signal
import threading
import time

POISON_NAME = "vgroutpoison"  # comm of a job whose sandbox the SandboxKiller kills


def wait_until(cond, timeout: float, step: float = 0.05) -> bool:
    """Poll ``cond()`` until it is true or ``timeout`` seconds pass; the final answer of ``cond``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


class SandboxKiller:
    """Kills the sandbox runner of any job that names itself ``POISON_NAME`` (host-side, by /proc).

    Our sandboxes are built so that no program can kill its own runner; this stands in for a
    completion that found a way, so that the pool's handling of a sandbox that dies under one
    completion every time is tested against real runner deaths.
    """

    def __init__(self) -> None:
        self.kills: list[int] = []
        self._seen: set[int] = set()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                if int(entry) in self._seen:
                    continue
                try:
                    with open(f"/proc/{entry}/comm") as f:
                        if f.read().strip() != POISON_NAME:
                            continue
                    self._seen.add(int(entry))
                    with open(f"/proc/{entry}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                    os.kill(ppid, signal.SIGKILL)  # the job's parent is its sandbox's runner
                    self.kills.append(ppid)
                except (OSError, ValueError, IndexError):
                    continue
            time.sleep(0.01)

    def __enter__(self) -> "SandboxKiller":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


def table_steps_in_log(text: str) -> list[int]:
    """Step numbers of the per-step table the driver streams into its log (INFO lines after a header
    line that names ``ref_eq`` and ``hack_s``): the table is for people, and this only checks that
    it was written, one line per step; the numbers are checked from rows.parquet."""
    steps, seen_header = [], False
    for line in text.splitlines():
        if "| INFO |" not in line:
            continue
        cells = line.split("| INFO |", 1)[1].split()
        if "ref_eq" in cells and "hack_s" in " ".join(cells):
            seen_header = True
        elif seen_header and cells and cells[0].isdigit():
            steps.append(int(cells[0]))
    return steps
