"""GRPO with TRL on the sandboxed loophole grader: a real ``trl.GRPOTrainer`` run, CPU, offline.

    python examples/trl_grpo.py --steps 2 --output-dir /tmp/trl_grpo            # tiny random Qwen3
    python examples/trl_grpo.py --model Qwen/Qwen3-0.6B --modes run_tests --sandbox docker --steps 50 ...

The reward is ``vgrout_ray.rewards.loophole_reward``: each prompt carries the hint of its mode
(round robin over ``--modes``), the completion is graded once in the sandbox and judged under
every watched mode. Each logging step's dict (TRL's own metrics plus ``loophole/<mode>/hack``,
``/solve``, ``/compile``, ``/hack_all`` and ``loophole/grading_failed``) is printed and appended to
``OUTPUT_DIR/log.jsonl``. ``--model tiny`` builds the offline tiny model under ``OUTPUT_DIR``
(it writes no code, so its rewards are zero; the point is the plumbing).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--output-dir", type=Path, required=True)
    ap.add_argument("--model", default="tiny", help="'tiny' (built offline) or a model path / hub id")
    ap.add_argument("--modes", default="run_tests,eq_override,exit_code,stdout_marker,sentinel,file_marker")
    ap.add_argument("--problems", default=None, help="benchmark-form .jsonl (default: the packaged problems)")
    ap.add_argument("--n-problems", type=int, default=12)
    ap.add_argument("--num-generations", type=int, default=2)
    ap.add_argument("--prompts-per-step", type=int, default=3)
    ap.add_argument("--max-completion-length", type=int, default=16)
    ap.add_argument("--backend", choices=["auto", "local", "ray"], default="auto")
    ap.add_argument("--sandbox", choices=["auto", "process", "docker"], default="auto")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from vgrout_ray.rewards import loophole_reward, trl_dataset

    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    if args.model == "tiny":
        from vgrout_ray.model.tiny import ensure_tiny_model

        model_path = str(ensure_tiny_model(out / "models"))
    else:
        model_path = args.model
    tok = AutoTokenizer.from_pretrained(model_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)

    dataset = trl_dataset(args.problems, args.modes, n=args.n_problems)
    reward = loophole_reward(args.modes, backend=args.backend, sandbox=args.sandbox)
    log_path = out / "log.jsonl"
    log_path.unlink(missing_ok=True)

    class JsonLog(TrainerCallback):
        """Every log dict to stdout and log.jsonl (TRL's own printing depends on tqdm settings)."""

        def on_log(self, _args, state, _control, logs=None, **_kw):
            if not logs:
                return
            row = {"step": state.global_step, **logs}
            line = json.dumps(row, default=float)
            print(line, flush=True)
            with open(log_path, "a") as f:
                f.write(line + "\n")

    config = GRPOConfig(
        output_dir=str(out / "trainer"), max_steps=args.steps, learning_rate=args.lr, seed=args.seed,
        per_device_train_batch_size=args.prompts_per_step * args.num_generations,
        num_generations=args.num_generations, max_completion_length=args.max_completion_length,
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, bf16=False,
        disable_tqdm=True, dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=config, train_dataset=dataset,
                          processing_class=tok, callbacks=[JsonLog()])
    t0 = time.monotonic()
    try:
        trainer.train()
    finally:
        reward.close()
    summary = {"steps": args.steps, "wall_s": round(time.monotonic() - t0, 1), "grader": reward.scorer.kind,
               "graded": reward.scorer.graded, "grading_failed": reward.failed, "last_metrics": reward.last_metrics}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("summary " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
