"""The command line: usage, Hydra's help/config printing, completion.

User errors of every kind (exit code 2, one line, nothing written) are catalogued in
tests/reliability/test_bad_input.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.config_store import ConfigStore

from gandiv import __version__
from gandiv.cli import COMMANDS

# Prints every help page in a fresh interpreter, then the heavy modules it imported.
HELP_IMPORTS = """
import sys
from gandiv.cli import COMMANDS, main
for args in (["--help"], *([c, "--help"] for c in COMMANDS), ["--version"]):
    try:
        main(args)
    except SystemExit as exit_:
        assert not exit_.code, (args, exit_.code)
print("imported:", sorted({m.split(".")[0] for m in sys.modules} & {"torch", "matplotlib"}))
"""


def test_help_lists_every_group_and_option(gandiv):
    result = gandiv("train", "--help")
    assert result.code == 0
    conf = Path(__file__).parents[1] / "src" / "gandiv" / "conf"
    for group in ("dataset", "model", "objective", "critic", "trainer"):
        options = sorted(p.stem for p in (conf / group).glob("*.yaml"))
        assert f"{group}: {', '.join(options)}" in result.out
    assert "__deepcopy__" not in vars(ConfigStore)  # the help shared the store only while printing


def test_help_imports_neither_torch_nor_matplotlib(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", HELP_IMPORTS],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: gandiv <command>" in result.stdout and "dataset: celeba" in result.stdout
    assert result.stdout.rstrip().endswith("imported: []")


def test_top_level_help_and_eval_help(gandiv):
    top = gandiv("--help")
    assert top.code == 0 and "gandiv train" in top.out and "gandiv eval run=DIR" in top.out
    ev = gandiv("eval", "--help")
    assert ev.code == 0 and "run: ???" in ev.out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(gandiv, command):
    result = gandiv(command, "--help")
    assert result.code == 0 and result.err == ""
    assert f"gandiv {command}" in result.out and "usage" in result.out.lower()


def test_version(gandiv):
    result = gandiv("--version")
    assert result.code == 0 and result.out == f"gandiv {__version__}\n"


def test_cfg_job_prints_the_composed_config_with_overrides(gandiv):
    result = gandiv("train", "objective=direct", "objective.divergence=js", "--cfg", "job")
    assert result.code == 0
    assert "divergence: js" in result.out and "name: direct" in result.out
    assert "steps: 1000" in result.out


def test_shell_completion_dispatches_to_the_subcommand(gandiv, monkeypatch):
    monkeypatch.setenv("COMP_LINE", "gandiv train objective=")
    result = gandiv("-sc", "query=bash")
    assert "objective=forward_kl" in result.out and "objective=direct" in result.out
    monkeypatch.setenv("COMP_LINE", "gandiv tr")
    assert gandiv("-sc", "query=bash").out.split() == ["train"]
    install = gandiv("train", "-sc", "install=bash")
    assert install.code == 0 and "complete" in install.out
