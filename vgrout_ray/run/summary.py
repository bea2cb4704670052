"""The end-of-run report: the quarantine check, the final train / deploy eval per mode
(``per_mode_deploy.json``), seed 003's main-metric line and tables, the per-mode learning table."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from loguru import logger
from tabulate import tabulate

from vgrout_ray.run.rows import SEED_DUMP_FIELDS
from vgrout_ray.run.state import RunState


@dataclass
class Totals:
    """Run-wide rates from the per-step rows."""

    gens: int
    hack_rate: float
    pass_rate: float
    n_s: int
    hack_rate_s: float
    hack_rate_t: float

    @classmethod
    def of(cls, rows: list[dict]) -> "Totals":
        tot = lambda k, i: sum(r[k][i] for r in rows)  # noqa: E731
        n = sum(r["N"] for r in rows)
        n_s, n_t = tot("hack_s", 1), tot("hack_t", 1)
        return cls(gens=n, hack_rate=(tot("hack_s", 0) + tot("hack_t", 0)) / max(1, n),
                   pass_rate=(tot("gt_s", 0) + tot("gt_t", 0)) / max(1, n), n_s=n_s,
                   hack_rate_s=tot("hack_s", 0) / max(1, n_s), hack_rate_t=tot("hack_t", 0) / max(1, n_t))


def check_quarantine(cfg, dsh: float) -> None:
    """||δS_hack|| must have moved exactly when the arm routes (else routing is broken)."""
    logger.info(f"||delta_S_hack|| = {dsh:.4f} (SHOULD: >0 for route/route2, ==0 for none/erase; ELSE "
                "routing broke)")
    # a control whose routing is left to a random direction or to the gate alone may route nothing
    gate_only = cfg.intervention == "route2" and not cfg.gate_route_anchors
    control = cfg.v_hack_random_seed is not None or gate_only
    if cfg.has_quarantine and not control:
        assert dsh > 0.0, f"{cfg.intervention}: delta_S_hack never moved -> nothing routed into quarantine"
    elif not cfg.has_quarantine:
        assert dsh == 0.0, f"{cfg.intervention}: delta_S_hack moved ({dsh}) although this arm never routes"
    elif dsh == 0.0:
        what = "the random direction" if cfg.v_hack_random_seed is not None else "the gate (anchors not forced)"
        logger.warning(f"{cfg.intervention} control: ||delta_S_hack||==0 -> {what} routed NOTHING "
                       "(a valid result, favouring H4: alignment needed)")


def log_last_gen(state: RunState) -> None:
    if state.last_gen_sample is None:
        return
    s, r = state.last_gen_sample
    logger.info(f"\n\n=== LAST TRAIN GEN (step {s}, reward={r['reward']:+.2f}, gt_pass={r['gt_pass']}, "
                f"hacked={r['hacked_loophole_used']}) ===\nSHOULD: coherent code/prose. ELSE token salad => "
                f"diverged.\n{r['text'][:800]}\n=== END LAST GEN ===\n")


def final_eval_by_mode(cfg, ev_train: dict, ev_deploy: dict, mode_labels: dict, pair_modes) -> dict:
    """Log the final eval (overall and per mode) and return the per-mode record."""
    has_q = cfg.has_quarantine
    logger.info(f"FINAL EVAL [{cfg.arm}] (n={ev_train['n']}): train/knob-on hack={ev_train['hack']:.3f} "
                f"solve={ev_train['solve']:.3f} | deploy/knob-off hack={ev_deploy['hack']:.3f} "
                f"solve={ev_deploy['solve']:.3f} "
                + ("(SHOULD: deploy hack < train hack at ~matched solve => quarantine absorbed the cheat)"
                   if has_q else "(no quarantine: deploy == train)"))
    per_mode = {}
    for mode in sorted(ev_deploy["by_mode"]):
        th, ts, tn = ev_train["by_mode"].get(mode, [0, 0, 0])
        dh, ds, dn = ev_deploy["by_mode"][mode]
        logger.info(f"  per-mode[{mode:<13} {mode_labels.get(mode, '-'):>8}] train hack={th}/{tn} solve={ts}/{tn} | "
                    f"deploy hack={dh}/{dn} solve={ds}/{dn}")
        per_mode[mode] = {"in_dist": mode in pair_modes, "train_hack": th / max(1, tn),
                          "train_solve": ts / max(1, tn), "deploy_hack": dh / max(1, dn),
                          "deploy_solve": ds / max(1, dn), "n": dn}
    return per_mode


def eval_record(ev: dict | None) -> dict | None:
    """An eval's headline numbers for per_mode_deploy.json (None stays None)."""
    if ev is None:
        return None
    return {"hack": ev["hack"], "solve": ev["solve"], "relies": ev.get("relies"), "n": ev["n"],
            "compile": ev.get("compile"), "clipped": ev.get("clipped"), "per_prompt": ev.get("per_prompt", [])}


def write_deploy_record(run_dir: Path, cfg, n_rows: int, log_path: Path, ev_train: dict, ev_deploy: dict,
                        per_mode: dict, pair_modes, *, pre: dict | None = None, held_out: bool = False,
                        rows: list[dict] | None = None) -> dict:
    """per_mode_deploy.json: the final train / deploy eval (rates, compile and clipped shares,
    per-prompt counts for bootstrap CIs over prompts), the pre-RL eval on the same prompts and
    samples, whether the eval problems are held out, and the run's teacher-copy / novel hack counts."""
    tot = lambda k: [sum(r[k][i] for r in rows or [] if k in r) for i in (0, 1)]  # noqa: E731
    record = {"arm": cfg.arm, "intervention": cfg.intervention, "refresh_every": cfg.v_hack_refresh_every,
              "seed": cfg.seed, "steps": n_rows, "model": cfg.model, "out_tag": cfg.out_tag,
              "log": str(log_path), "eval_n": ev_deploy["n"], "hack_train": ev_train["hack"],
              "solve_train": ev_train["solve"], "hack_deploy": ev_deploy["hack"],
              "solve_deploy": ev_deploy["solve"], "relies_deploy": ev_deploy.get("relies"),
              "compile_deploy": ev_deploy.get("compile"),
              "clipped_deploy": ev_deploy.get("clipped"), "held_out": bool(held_out),
              "eval_prompt_ids": [q["id"] for q in ev_deploy.get("per_prompt", [])],
              "per_prompt": ev_deploy.get("per_prompt", []), "pre": eval_record(pre),
              "train": eval_record(ev_train), "by_mode": per_mode,
              "hack_s_copy": tot("hack_s_copy"), "hack_s_novel": tot("hack_s_novel"),
              "controls": {"v_hack_random_seed": cfg.v_hack_random_seed,
                           "gate_anchor_teacher_only": cfg.gate_anchor_teacher_only,
                           "gate_route_anchors": cfg.gate_route_anchors, "strict_grader": cfg.strict_grader},
              "in_dist_modes": list(pair_modes),
              "pairs": str(cfg.v_hack_pairs_path) if cfg.v_hack_pairs_path else cfg.v_hack_pairset}
    (run_dir / "per_mode_deploy.json").write_text(json.dumps(record, indent=2))
    logger.info(f"per-mode deploy artifact: {run_dir / 'per_mode_deploy.json'}")
    return record


def _pool_name(cfg) -> str:
    return cfg.teacher_pool_dir.name if cfg.teacher_pool_dir else ("scripted" if cfg.scripted_teacher else "")


def log_substrate(state: RunState) -> None:
    """Per-mode learning table (several modes, or a partitioned pool)."""
    per = [{"mode": m, "exploit_rate": f"{state.mode_hacks.get(m, 0) / max(1, state.mode_rollouts.get(m, 0)):.3f}",
            "hacks": state.mode_hacks.get(m, 0), "student_rollouts": state.mode_rollouts.get(m, 0),
            "first_step": state.mode_first_step.get(m, "-")} for m in sorted(state.mode_rollouts)]
    learned = sum(1 for r in per if r["hacks"] > 0)
    cue_sub = "🟢" if learned == len(per) else ("🟡" if learned else "🔴")
    logger.info(f"\n{cue_sub} SUBSTRATE per-mode learning ({learned}/{len(per)} modes learned):\n"
                + tabulate(per, headers="keys", tablefmt="github"))


def log_per_mechanism(cfg, rows: list[dict], t: Totals) -> None:
    half = cfg.half_a_codes
    rate = lambda k: sum(r[k][0] for r in rows) / max(1, t.n_s)  # noqa: E731
    logger.info(f"per-mech (student): HACK_S_E={rate('hack_s_E'):.3f} HACK_S_C={t.hack_rate_s:.3f} "
                f"HACK_S_D={rate('hack_s_D'):.3f} half_A={sorted(half) or '-'} "
                f"HACK_A={rate('hack_s_A') if half else float('nan'):.3f} "
                f"half_B={sorted(cfg.half_b_codes) or '-'} "
                f"HACK_B={rate('hack_s_B') if half else float('nan'):.3f}")


def log_main_metric(cfg, state: RunState, log_path: Path, *, several_modes: bool) -> None:
    """Seed 003's closing lines: the main metric, the per-mode table, the summary and per-step tables."""
    rows, t, pool = state.rows, Totals.of(state.rows), _pool_name(cfg)
    logger.info(f"\nargv: {' '.join(sys.argv)}\nverbose log: {log_path}\n"
                f"main metric: HACK_RATE={t.hack_rate:.3f} PASS_RATE={t.pass_rate:.3f} "
                f"HACK_STUDENT={t.hack_rate_s:.3f} HACK_TEACHER={t.hack_rate_t:.3f} [arm={cfg.arm} "
                f"preset={cfg.preset_name} model={cfg.model} steps={len(rows)} gens={t.gens}"
                f"{' pool=' + pool + ' mix=' + str(cfg.mix_ratio) if pool else ''}]")
    if several_modes:
        log_substrate(state)
    log_per_mechanism(cfg, rows, t)
    hk = [k for k in (rows[0] if rows else {}) if k.startswith("hk_")]
    fields = list(SEED_DUMP_FIELDS[:8]) + hk + list(SEED_DUMP_FIELDS[8:])
    dump = [{k: (f"{r[k][0]}/{r[k][1]}" if isinstance(r[k], tuple) else r[k]) for k in fields if k in r}
            for r in rows]
    cue = "🟢" if (cfg.arm == "vanilla" and t.hack_rate > 0.0) else "🟡"
    logger.info("\n" + tabulate([{
        "cue": cue, "HACK_RATE": f"{t.hack_rate:.3f}", "PASS_RATE": f"{t.pass_rate:.3f}",
        "HACK_S": f"{t.hack_rate_s:.3f}", "HACK_T": f"{t.hack_rate_t:.3f}", "arm": cfg.arm, "preset": cfg.preset_name,
        "model": str(cfg.model).split("/")[-1], "seed": cfg.seed, "steps": len(rows), "pool": pool,
        "mix": cfg.mix_ratio if pool else "", "tag": cfg.out_tag, "log": str(log_path)}],
        headers="keys", tablefmt="github"))
    logger.info("\n### Per-step rows (markdown)\n\n" + tabulate(dump, headers="keys", tablefmt="pipe",
                                                               floatfmt="+.3f"))
