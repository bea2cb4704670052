"""Regenerate the generated parts of ``docs/``: the benchmark results page and the output schemas.

    python tools/gen_docs.py          # rewrite them
    python tools/gen_docs.py --check  # exit 1 naming the stale page (what the test runs)

A generated part sits between ``<!-- generated: NAME -->`` and ``<!-- end generated -->``; the
prose around it is written by hand. Results come from ``benchmarks/results/*.md`` (each
benchmark's own write-up) and the schemas from ``vgrout_ray.reporting.parquet``, so neither is
copied by hand and neither goes stale.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
RESULTS = REPO / "benchmarks" / "results"


def _demote(md: str) -> str:
    """A results page's headings, two levels down, so they nest under the docs page's sections."""
    return re.sub(r"^(#+) ", lambda m: "#" * min(len(m.group(1)) + 2, 6) + " ", md, flags=re.M)


def _relink(md: str) -> str:
    """Relative links in a results page point beside it; from docs/ they need its folder in front."""
    return re.sub(r"\]\((?!https?://|/|#)([^)]+)\)", r"](../benchmarks/results/\1)", md)


def benchmark_results() -> str:
    parts = []
    for p in sorted(RESULTS.glob("*.md")):
        body = _relink(_demote(p.read_text().strip()))
        parts.append(f"### `{p.stem}` (from `benchmarks/results/{p.name}`)\n\n{body}\n")
    return "\n".join(parts)


def output_schemas() -> str:
    sys.path.insert(0, str(REPO))
    from vgrout_ray.reporting.parquet import schema_markdown

    return schema_markdown().strip() + "\n"


GENERATORS = {"benchmark-results": benchmark_results, "output-schemas": output_schemas}
BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)


def render(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + GENERATORS[m.group("name")]() + m.group(4), text)


def main(argv: list[str]) -> int:
    stale = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text()
        new = render(text)
        if new != text:
            stale.append(page.relative_to(REPO))
            if "--check" not in argv:
                page.write_text(new)
    if "--check" in argv and stale:
        print(f"stale generated docs: {', '.join(map(str, stale))}; run python tools/gen_docs.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
