"""Weight sync: shipping δS / δS_hack (the design) against shipping merged weights (baseline).

Measured on the tiny model through real Ray actors (bytes on the wire, latency from send to
loaded, per sync), and computed for Qwen3-4B from its config shapes alone (no weights): the
δS payload is two fp32 vectors of length r = min(d_in, d_out) per target Linear; the merged
payload is every target Linear's bf16 weight. Target: >= 1000x fewer bytes at 4B.

    python benchmarks/weight_sync.py [--syncs 10]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _results import save_results

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Qwen3-4B (config.json of the released model): dims of the target Linears per layer.
QWEN3_4B = dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                num_key_value_heads=8, head_dim=128)


def linear_shapes(c: dict) -> list[tuple[str, int, int]]:
    """(name, d_out, d_in) of every adapted Linear of a Qwen3 decoder."""
    h, i, hd = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    per = [("q_proj", q, h), ("k_proj", kv, h), ("v_proj", kv, h), ("o_proj", h, q),
           ("gate_proj", i, h), ("up_proj", i, h), ("down_proj", h, i)]
    return [(f"layers.{n}.{m}", o, d) for n in range(c["num_hidden_layers"]) for m, o, d in per]


def payload_bytes(shapes, delta_dtype_bytes: int = 4, weight_dtype_bytes: int = 2) -> tuple[int, int]:
    delta = sum(2 * min(o, d) * delta_dtype_bytes for _, o, d in shapes)  # δS + δS_hack
    full = sum(o * d * weight_dtype_bytes for _, o, d in shapes)
    return delta, full


def measure_tiny(n_syncs: int) -> dict:
    import ray
    import torch

    from vgrout_ray.rollout.actor import RolloutActor
    from vgrout_ray.cluster.ray_cluster import start_local_ray
    from vgrout_ray.model.resolve import resolve_model

    cache = tempfile.mkdtemp(prefix="vgws-")
    path = resolve_model("tiny", cache)
    started = not ray.is_initialized()
    if started:
        start_local_ray(2, log_to_driver=False)
    actor = RolloutActor.options(num_cpus=1).remote("hf", path, cache, {"threads": 1})
    ray.get(actor.ready.remote())
    merged0 = ray.get(actor.merged_state.remote(False))
    names = [k[: -len(".weight")] for k in merged0]
    ranks = {n: min(merged0[f"{n}.weight"].shape) for n in names}
    out = {}
    for mode in ("delta", "full"):
        lat, nbytes = [], 0
        for v in range(1, n_syncs + 1):
            g = torch.Generator().manual_seed(v)
            deltas = {}
            for n in names:
                deltas[f"{n}.delta_S"] = torch.randn(ranks[n], generator=g) * 0.1
                deltas[f"{n}.delta_S_hack"] = torch.randn(ranks[n], generator=g) * 0.1
            if mode == "delta":
                payload = deltas
                t0 = time.perf_counter()
                info = ray.get(actor.sync.remote(v, ray.put(payload), time.time()))
            else:
                # merged W' for both views, as rollout.sync=full ships them (values are irrelevant to
                # bytes and latency; the learner-side merge time is not counted against this mode)
                views = {ab: {k: w.clone() for k, w in merged0.items()} for ab in (False, True)}
                t0 = time.perf_counter()
                info = ray.get(actor.sync_full.remote(v, ray.put(views), time.time()))
            lat.append(time.perf_counter() - t0)
            nbytes = info["bytes"]
        out[mode] = {"bytes": nbytes, "latency_ms_median": 1000 * statistics.median(lat),
                     "latency_ms_max": 1000 * max(lat)}
    ray.kill(actor)
    if started:
        ray.shutdown()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--syncs", type=int, default=10)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()
    d4b, f4b = payload_bytes(linear_shapes(QWEN3_4B))
    tiny = measure_tiny(args.syncs)
    res = {
        "qwen3_4b": {"delta_bytes": d4b, "full_target_bytes_bf16": f4b, "ratio": f4b / d4b,
                     "target": ">= 1000x fewer bytes", "met": f4b / d4b >= 1000},
        "tiny_measured": {**tiny, "bytes_ratio": tiny["full"]["bytes"] / tiny["delta"]["bytes"],
                          "latency_ratio": tiny["full"]["latency_ms_median"] / tiny["delta"]["latency_ms_median"]},
    }
    t = res["tiny_measured"]
    md = (f"# Weight sync\n\n`python benchmarks/weight_sync.py --syncs {args.syncs}`\n\n"
          f"| | δS sync | full merged sync | ratio |\n|---|---|---|---|\n"
          f"| Qwen3-4B bytes (computed from shapes) | {d4b / 1e6:.2f} MB | {f4b / 1e9:.2f} GB | "
          f"**{f4b / d4b:,.0f}x** |\n"
          f"| tiny model bytes (measured) | {t['delta']['bytes'] / 1e3:.1f} kB | {t['full']['bytes'] / 1e3:.1f} kB | "
          f"{t['bytes_ratio']:.0f}x |\n"
          f"| tiny model latency, median (measured) | {t['delta']['latency_ms_median']:.1f} ms | "
          f"{t['full']['latency_ms_median']:.1f} ms | {t['latency_ratio']:.1f}x |\n\n"
          f"δS = δS + δS_hack in fp32 (2·r floats per target Linear). Full = the target weights: bf16 for 4B; "
          f"measured on the CPU tiny model in fp32 and in both views (train and deploy), as rollout.sync=full "
          f"ships them. Latency = send to loaded on the actor (δS includes the actor's merge). "
          f"Target >= 1000x fewer bytes at 4B: "
          f"{'met' if res['qwen3_4b']['met'] else 'NOT met'}.\n")
    save_results(args.out, "weight_sync", res, md)


if __name__ == "__main__":
    main()
