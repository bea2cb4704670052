"""The one command line: every subcommand answers ``--help``, unknown commands fail naming
themselves, and ``python -m vgrout_ray`` is the same program as ``vgrout``."""
from __future__ import annotations

import subprocess
import sys

import pytest

from vgrout_ray.cli import COMMANDS, main


@pytest.mark.parametrize("name", sorted(set(COMMANDS) - {"schema"}))
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    assert "usage" in capsys.readouterr().out.lower()


def test_unknown_command_is_named_and_fails(capsys):
    assert main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "'trian'" in err and "train" in err


def test_python_dash_m_is_the_same_program():
    p = subprocess.run([sys.executable, "-m", "vgrout_ray", "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0
    assert all(name in p.stdout for name in COMMANDS)


def test_schema_prints_both_tables(capsys):
    assert main(["schema"]) == 0
    out = capsys.readouterr().out
    assert "rows.parquet" in out and "rollouts.parquet" in out
