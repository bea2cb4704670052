"""``python tests/sweep_fault.py RUN STEP [sweep args]``: the sweep CLI with one real failure:
run RUN raises after it has committed step STEP (its resume state is on disk, as after a crash
between steps). test_sweep uses it to check that the other runs go on and that ``--resume``
continues the failed run from its run dir."""
from __future__ import annotations

import sys
import threading

from vgrout_ray.sweep.runner import Sweep, main

_here = threading.local()


class FaultySweep(Sweep):
    fail_run = ""
    fail_step = -1

    def run_one(self, entry) -> None:
        _here.name = entry.name
        super().run_one(entry)

    def _on_step(self, step: int, row: dict) -> None:
        super()._on_step(step, row)
        if getattr(_here, "name", None) == self.fail_run and step == self.fail_step:
            raise RuntimeError(f"injected fault after step {step}")


if __name__ == "__main__":
    FaultySweep.fail_run, FaultySweep.fail_step = sys.argv[1], int(sys.argv[2])
    sys.exit(main(sys.argv[3:], sweep_cls=FaultySweep))
