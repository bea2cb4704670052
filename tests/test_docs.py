"""The docs stay true: generated parts match their sources, links resolve, the README stays short
and opens with the two commands."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_generated_docs_are_up_to_date():
    p = subprocess.run([sys.executable, str(REPO / "tools" / "gen_docs.py"), "--check"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


def test_the_freshness_check_fails_on_a_stale_block(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "tools"))
    import gen_docs

    stale = "x\n<!-- generated: output-schemas -->\nold table\n<!-- end generated -->\n"
    assert gen_docs.render(stale) != stale
    assert gen_docs.render(gen_docs.render(stale)) == gen_docs.render(stale)


def _links(md: Path) -> list[str]:
    return [t for t in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", md.read_text()) if "://" not in t]


def test_relative_links_in_readme_and_docs_resolve():
    broken = [f"{md.relative_to(REPO)} -> {t}" for md in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
              for t in _links(md) if not (md.parent / t).exists()]
    assert not broken, broken


def test_readme_is_short_and_opens_with_the_two_commands():
    text = (REPO / "README.md").read_text()
    assert len(text.split()) < 1500, len(text.split())
    first = [ln.strip() for ln in text.splitlines()[1:8] if ln.strip()]
    assert first[0].startswith("bash scripts/") and first[1].startswith("bash scripts/test.sh"), first[:2]
