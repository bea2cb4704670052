"""CLI: build the tiny offline Qwen3 model (``python -m vgrout_ray.tiny_model --out DIR``)."""
from __future__ import annotations

import argparse

from .model.tiny import build_tiny_model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True, help="directory to write the model + tokenizer to")
    p.add_argument("--seed", type=int, default=0, help="weight-init seed (tokenizer is data-determined)")
    p.add_argument("--problems", default=None, help="problem JSONL whose text trains the tokenizer "
                   "(default: the packaged set)")
    a = p.parse_args(argv)
    build_tiny_model(a.out, seed=a.seed, source=a.problems)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
