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


ARMS: tuple[Arm, ...] = (
    Arm("none", "vanilla", False, "plain GRPO; measures only"),
    Arm("erase", "projected", False, "projects the hack direction out of the δS gradient"),
    Arm("route", "routing", True, "parks the hack-ward part in δS_hack, deleted at deploy"),
    Arm("route2", "routing2", True, "per-rollout routing by a calibrated cosine gate"),
)
ARM_NAMES: dict[str, str] = {a.code: a.display for a in ARMS}
BY_DISPLAY: dict[str, Arm] = {a.display: a for a in ARMS}
QUARANTINE_ARMS: tuple[str, ...] = tuple(a.display for a in ARMS if a.quarantine)

# The dynamics figure (reference plot script) splits `projected` by whether v_hack is refreshed
# during the run; these facet names exist only there.
STATIC_ERASURE, ONLINE_ERASURE = "static erasure", "online erasure"
PLOT_FACETS: tuple[str, ...] = ("vanilla", STATIC_ERASURE, ONLINE_ERASURE, "routing", "routing2")


def display_name(code: str | None, default: str = "vanilla") -> str:
    """Display name of an ``--intervention`` code (``default`` for None or an unknown code)."""
    return ARM_NAMES.get(code or "", default)


def plot_facet(display: str, refreshes: int) -> str:
    """Which column of the dynamics figure a run goes in."""
    if display == "projected":
        return ONLINE_ERASURE if refreshes > 0 else STATIC_ERASURE
    return display if display in PLOT_FACETS else "vanilla"
