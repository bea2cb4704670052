"""The four arms under one vocabulary: the code name a flag takes, the display name tables and
plots show (the reference's), and whether the arm has a quarantine deleted at deploy.

Every other module asks this table; nobody writes the mapping again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Intervention = Literal["none", "erase", "route", "route2"]


@dataclass(frozen=True)
class Arm:
    code: str        # --intervention
    display: str     # the per-step table's and the plots' name
    quarantine: bool  # trains δS_hack, which deploy deletes
    summary: str
    direction: str = "v_hack"  # what cos_pre measures against: route2's gate has its own v_grad


ARMS: tuple[Arm, ...] = (
    Arm("none", "vanilla", False, "plain GRPO; measures only"),
    Arm("erase", "projected", False, "projects the hack direction out of the δS gradient"),
    Arm("route", "routing", True, "parks the hack-ward part in δS_hack, deleted at deploy"),
    Arm("route2", "routing2", True, "per-rollout routing by a calibrated cosine gate", direction="v_grad"),
)
ARM_NAMES: dict[str, str] = {a.code: a.display for a in ARMS}
BY_DISPLAY: dict[str, Arm] = {a.display: a for a in ARMS}
QUARANTINE_ARMS: tuple[str, ...] = tuple(a.display for a in ARMS if a.quarantine)

# The dynamics figure (reference plot script) splits `projected` by whether v_hack is refreshed
# during the run; these facet names exist only there.
STATIC_ERASURE, ONLINE_ERASURE = "static erasure", "online erasure"
PLOT_FACETS: tuple[str, ...] = ("vanilla", STATIC_ERASURE, ONLINE_ERASURE, "routing", "routing2")


def cos_direction(facet: str) -> str:
    """The direction a dynamics-figure column's cos_pre is measured against (``plot_facet`` names)."""
    return BY_DISPLAY[facet].direction if facet in BY_DISPLAY else "v_hack"


def display_name(code: str | None, default: str = "vanilla") -> str:
    """Display name of an ``--intervention`` code (``default`` for None or an unknown code)."""
    return ARM_NAMES.get(code or "", default)


def plot_facet(display: str, refreshes: int) -> str:
    """Which column of the dynamics figure a run goes in."""
    if display == "projected":
        return ONLINE_ERASURE if refreshes > 0 else STATIC_ERASURE
    return display if display in PLOT_FACETS else "vanilla"


# ── benchmark arms: an arm above, or a control = an arm + config fields ───────────────────────────
@dataclass(frozen=True)
class BenchArm:
    """A row of the arm benchmarks (benchmarks/micro_arms.py): which --intervention it runs and
    which config fields it sets on top (``seed`` in a value is replaced by the run's seed)."""

    name: str
    intervention: str | None  # None: no run of its own (``base`` reads the vanilla run's pre eval)
    overrides: tuple[tuple[str, object], ...] = ()
    summary: str = ""

    @property
    def out_tag(self) -> str:
        """The run-dir suffix that keeps a control's runs apart from its arm's."""
        return f"_{self.name}" if self.overrides else ""

    def fields(self, seed: int) -> dict:
        return {k: (seed if v == "seed" else v) for k, v in self.overrides}


BENCH_ARMS: dict[str, BenchArm] = {a.name: a for a in (
    BenchArm("base", None, summary="no RL: the pre eval (same prompts and samples) of the vanilla run"),
    BenchArm("no-loophole", "none", (("strict_grader", True),),
             "vanilla under a strict grader: the hint stays, only genuine correctness is paid"),
    *(BenchArm(a.code, a.code, summary=a.summary) for a in ARMS),
    BenchArm("erase-random", "erase", (("v_hack_random_seed", "seed"),),
             "erase with a Haar-random direction of v_hack's shape per module (seeded by the run seed)"),
    BenchArm("route-random", "route", (("v_hack_random_seed", "seed"),),
             "route with a Haar-random direction of v_hack's shape per module (seeded by the run seed)"),
    BenchArm("route2-teacher-anchor", "route2", (("gate_anchor_teacher_only", True), ("gate_route_anchors", False)),
             "route2 whose gate, calibrated on teacher anchors only, decides every row (nothing routed by label)"),
)}
