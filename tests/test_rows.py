"""Per-step row arithmetic (pure): seed 003's fields from a step's rollouts."""
from __future__ import annotations

import math

from vgrout_ray.driver import _union_seconds
from vgrout_ray.run.rows import REF_GENS_PER_STEP, RowIn, StepAgg, auroc, half_ab, step_row


def test_auroc_exact():
    assert auroc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert auroc([0.1, 0.2, 0.9], [True, True, False]) == 0.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5  # ties count half
    assert math.isnan(auroc([0.3, 0.4], [True, True]))  # one class only
    assert auroc([0.9, float("nan"), 0.1], [True, True, False]) == 1.0  # NaNs (no gate) are ignored


def test_half_ab_split():
    rows = [RowIn(0, True, hack=True, gt=False, fmt=True, hack_E=True),    # A (C and E fire)
            RowIn(0, True, hack=False, gt=False, fmt=True, hack_D=True),   # B only via D
            RowIn(0, True, hack=False, gt=False, fmt=True),                # neither
            RowIn(0, False, hack=True, gt=False, fmt=True, hack_E=True)]   # teacher: never counted
    assert half_ab(rows, "E,C") == (1, 1)
    assert half_ab(rows, "D") == (1, 1)  # row 2 fires D (A); row 1 fires only C/E, the held-out half (B)
    assert half_ab(rows, "") == (0, 0)


def test_step_row_matches_the_seed_fields():
    rows = [RowIn(3.5, True, hack=True, gt=False, fmt=True, logp=-1.0, mode="run_tests", adv=1.0, gate_cos=0.4),
            RowIn(0.5, True, hack=False, gt=False, fmt=True, logp=-3.0, mode="run_tests", adv=0.5, gate_cos=-0.1,
                  ablated=True),
            RowIn(3.5, False, hack=True, gt=True, fmt=True, logp=-2.0, adv=1.0, gate_cos=0.2)]
    learner = {"loss": -0.5, "gn": 1.2, "q_egy": 0.25, "lr": 1e-4, "flagged": 0.4, "tau": 0.1, "stale": 2,
               "cos_pre": 0.3, "refr": "-"}
    row = step_row(StepAgg(step=7, rows=rows), run_modes=["run_tests", "sentinel"], learner=learner,
                   cum_gens_before=29, half_a="", hack_deploy=float("nan"), solve_deploy=float("nan"),
                   mode_hacks={"run_tests": 1}, timing={"gen": 1.0, "grade": 2.0, "fb": 3.0, "sec": 4.0})
    assert row["step"] == 7 and row["N"] == 3 and row["ref_eq"] == (29 + 3) / REF_GENS_PER_STEP
    assert row["rew"] == (3.5 + 0.5 + 3.5) / 3 and row["rew_s"] == 2.0 and row["sprd"] == "T"
    assert row["hack_s"] == (1, 2) and row["hack_t"] == (1, 1) and row["gt_s"] == (0, 2) and row["gt_t"] == (1, 1)
    assert row["hk_rt"] == 1 and row["hk_se"] == 0
    assert row["hack_abl"] == (0, 1) and row["solve_abl"] == (0, 1)
    assert row["lp_s"] == -2.0 and row["lp_t"] == -2.0
    # gate AUROC on positively reinforced rollouts: hacks at 0.4 and 0.2 both above the clean -0.1
    assert row["auroc"] == 1.0 and math.isclose(row["cos"], (0.4 - 0.1 + 0.2) / 3)
    assert row["rout"] == 0.4 and math.isclose(row["keep"], 0.6) and row["q_egy"] == 0.25 and row["tau"] == 0.1
    assert row["stale"] == 2
    # one name per value: the table's display names (qmass, thi, tlo) are not row keys
    assert not {"qmass", "thi", "tlo", "grad_norm", "t_grade"} & set(row)
    assert (row["gen"], row["t_rew"], row["fb"], row["sec"]) == (1.0, 2.0, 3.0, 4.0)


def test_student_hacks_split_into_teacher_copies_and_novel():
    rows = [RowIn(3.5, True, hack=True, gt=False, fmt=True, copy=True),
            RowIn(3.5, True, hack=True, gt=False, fmt=True),
            RowIn(3.5, True, hack=True, gt=False, fmt=True),
            RowIn(0.5, True, hack=False, gt=False, fmt=True, copy=True),  # not a hack: neither
            RowIn(3.5, False, hack=True, gt=False, fmt=True, copy=True)]  # teacher: never counted
    row = step_row(StepAgg(step=0, rows=rows), run_modes=["run_tests"], learner={}, cum_gens_before=0, half_a="",
                   hack_deploy=float("nan"), solve_deploy=float("nan"), mode_hacks={}, timing={})
    assert row["hack_s"] == (3, 4) and row["hack_s_copy"] == (1, 4) and row["hack_s_novel"] == (2, 4)


def test_union_of_phase_intervals():
    assert _union_seconds([(0, 2), (1, 3), (5, 6)]) == 4
    assert _union_seconds([(0, 1), (0.2, 0.5)]) == 1
    assert _union_seconds([]) == 0
