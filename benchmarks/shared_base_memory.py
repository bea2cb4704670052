"""Memory per run with the base in the object store vs a private copy per learner, in one run.

    python benchmarks/shared_base_memory.py [--preset micro] [--learners 4] [--svd-cache svd_cache]

For two checkpoints of the preset's model (the float32 one it is built as, and a bfloat16 copy,
the dtype hub checkpoints ship in, which a CPU learner widens to float32), starts K learner
actors (the sweep's one-learner-per-run layout) twice on one local cluster:
``private`` (each reads the checkpoint and the SVD cache, as a lone driver run does) and ``store``
(the sweep's default: ``publish_base`` once, every learner maps it read-only). For each learner
process it reads ``/proc/<pid>/smaps_rollup``: USS (its private pages: what one more run costs)
and PSS (shared pages split among their users; summed over the learners it is their true total,
the object store's pages counted once). Also the bundle's size and each learner's start-up time.
Writes ``benchmarks/results/shared_base_memory.{json,md}``.

The torch + transformers runtime of a process (~hundreds of MB) is the same in both modes. When
the checkpoint's dtype is the learner's, transformers and safetensors map the files, so the page
cache already shares them between processes and the store has little left to save; when the
learner converts (bf16 checkpoint, fp32 learner), every private learner holds its own converted
copy, and the store holds one per node.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._results import save_results  # noqa: E402

MiB = 2 ** 20


def smaps(pid: int) -> dict[str, int]:
    """Pss / Rss / Private_* / Shared_* of a process, in bytes (Linux smaps_rollup)."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, val = line.split(":", 1)
        out[key.strip()] = int(val.split()[0]) * 1024
    return out


def measure(cfg, model_path: str, k: int, base) -> dict:
    import ray

    from vgrout_ray.learner.actor import LearnerActor

    t0 = time.perf_counter()
    actors = [LearnerActor.options(num_cpus=0).remote(cfg, model_path, 1, base) for _ in range(k)]
    infos = ray.get([a.info.remote() for a in actors])
    ready_s = time.perf_counter() - t0
    time.sleep(1.0)
    per = []
    for info in infos:
        m = smaps(info["pid"])
        per.append({"pid": info["pid"], "base": info["base"], "uss_mib": (m["Private_Clean"] + m["Private_Dirty"]) / MiB,
                    "pss_mib": m["Pss"] / MiB, "rss_mib": m["Rss"] / MiB})
    for a in actors:
        ray.kill(a)
    return {"learners": per, "ready_s": round(ready_s, 1),
            "uss_mean_mib": round(sum(p["uss_mib"] for p in per) / k, 1),
            "pss_total_mib": round(sum(p["pss_mib"] for p in per), 1)}


def markdown(res: dict) -> str:
    lines = [f"# Base weights in the object store vs a private copy per learner ({res['preset']}, "
             f"{res['learners']} learners)", "",
             f"Model {res['model']}: base weights + SVD factors {res['bundle_mib']:.1f} MiB as the learner holds "
             f"them (float32). USS: a process's private memory (what one more run costs); PSS: shared pages "
             f"split among their users, summed over the learners.", "",
             "| checkpoint | mode | USS per learner (MiB) | PSS of all learners (MiB) | start-up of all (s) |",
             "|---|---|---|---|---|"]
    for ck, modes in res["checkpoints"].items():
        for name in ("private", "store"):
            m = modes[name]
            lines.append(f"| {ck} | {name} | {m['uss_mean_mib']:.1f} | {m['pss_total_mib']:.1f} | {m['ready_s']} |")
    lines.append("")
    for ck, modes in res["checkpoints"].items():
        p, s = modes["private"], modes["store"]
        saved = p["uss_mean_mib"] - s["uss_mean_mib"]
        lines.append(f"- {ck} checkpoint: the store saves {saved:.1f} MiB of private memory per learner "
                     f"({saved / res['bundle_mib']:.2f}× the bundle), {p['pss_total_mib'] - s['pss_total_mib']:.1f} "
                     f"MiB of PSS over all {res['learners']}.")
    return "\n".join(lines) + "\n"


def bf16_copy(model_path: str, dst: Path) -> str:
    """The checkpoint saved in bfloat16 with its tokenizer files (as hub checkpoints come)."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    if dst.exists():
        shutil.rmtree(dst)
    AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16).save_pretrained(dst)
    for f in Path(model_path).iterdir():
        if f.is_file() and not (dst / f.name).exists():
            shutil.copy(f, dst / f.name)
    return str(dst)


def main(argv: list[str] | None = None) -> int:
    import ray
    import torch

    from vgrout_ray.cluster.ray_cluster import start_local_ray
    from vgrout_ray.model.base_store import bundle_base
    from vgrout_ray.model.resolve import resolve_model
    from vgrout_ray.sweep.runner import run_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="micro")
    ap.add_argument("--learners", type=int, default=4)
    ap.add_argument("--svd-cache", default="svd_cache")
    ap.add_argument("--work", default="/tmp/shared_base_memory")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    import dataclasses

    cfg = run_config(args.preset, "none", 1, ["--svd-cache", args.svd_cache])
    built = resolve_model(cfg.model, cfg.svd_cache)
    work = Path(args.work)
    start_local_ray(num_cpus=2)
    res = {"preset": args.preset, "model": Path(built).name, "learners": args.learners, "checkpoints": {}}
    for ck in ("float32", "bfloat16"):
        model_path = built if ck == "float32" else bf16_copy(built, work / "ckpt_bf16")
        run_cfg = dataclasses.replace(cfg, svd_cache=cfg.svd_cache if ck == "float32" else work / "svd")
        bundle = bundle_base(model_path, run_cfg.svd_cache, torch.float32)  # fills the SVD cache first
        res["bundle_mib"] = round(bundle.nbytes / MiB, 1)
        modes = res["checkpoints"][ck] = {"private": measure(run_cfg, model_path, args.learners, None)}
        ref = ray.put(bundle)
        del bundle
        modes["store"] = measure(run_cfg, model_path, args.learners, ref)
        assert all(p["base"].startswith("object store") for p in modes["store"]["learners"])
        del ref
    save_results(Path(args.out), "shared_base_memory", res, markdown(res))
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
