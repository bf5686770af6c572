"""Every error of the `specialize` command, argparse's own included, is one line on stderr with exit code 2.

Run through the real console script in a subprocess, as a user meets it (argparse prints a usage block and exits
from inside the parser, so only a subprocess shows what reaches the terminal).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SPECIALIZE = Path(sys.executable).parent / "specialize"


def run_specialize(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(SPECIALIZE), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args, prefix, message",
    [
        ((), "specialize", "the following arguments are required: COMMAND"),
        (("bogus",), "specialize", "argument COMMAND: invalid choice: 'bogus'"),
        (("data",), "specialize data", "the following arguments are required: SUBCOMMAND"),
        (
            ("data", "build", "--task", "face=x", "--out", "o", "--seed", "x"),
            "specialize data build",
            "argument --seed: invalid int value: 'x'",
        ),
        (("data", "synth", "--out", "o", "--size"), "specialize data synth", "argument --size: expected one argument"),
        (("train", "--config", "c.yaml", "--bogus"), "specialize train", "unrecognized arguments: --bogus"),
        (("lesion", "--data", "d"), "specialize lesion", "the following arguments are required: --checkpoint, --out"),
        (
            ("lesion", "--checkpoint", "c", "--data", "d", "--out", "o", "--ranking", "best"),
            "specialize lesion",
            "--ranking is 'best'; valid values: oneshot, greedy",
        ),
        (("tune", "--out", "o"), "specialize tune", "the following arguments are required: --config"),
        (
            ("segregation", "--sweep", "s", "--out", "o", "--fractions", "a,b"),
            "specialize segregation",
            "argument --fractions: expected comma-separated numbers such as 0,0.1,0.2,0.3, not 'a,b'",
        ),
        (("figures", "--out", "f"), "specialize figures", "the following arguments are required: DIR[=LABEL]"),
        (("demo", "--epochs", "two"), "specialize demo", "argument --epochs: invalid int value: 'two'"),
    ],
)
def test_usage_errors_are_one_line_naming_the_command(tmp_path, args, prefix, message):
    result = run_specialize(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()  # no usage block above the error
    assert line.startswith(f"{prefix}: error: {message}")
    assert line.endswith(f"see {prefix} --help")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_user_errors_of_a_nested_command_name_it(tmp_path):
    result = run_specialize("data", "build", "--task", f"face={tmp_path / 'missing'}", "--out", "out", cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("specialize data build: error: data root ") and "does not exist" in line
    assert not (tmp_path / "out").exists()


def test_synth_refuses_zero_workers_before_writing(tmp_path):
    result = run_specialize("data", "synth", "--out", "out", "--workers", "0", cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line == "specialize data synth: error: --workers must be at least 1, not 0; leave it out to use every core"
    assert not (tmp_path / "out").exists()


def test_help_still_prints_usage_and_exits_0(tmp_path):
    result = run_specialize("lesion", "--help", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("usage: specialize lesion ")


def imported(statement: str, modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` a fresh interpreter has imported after running `statement`."""
    script = f"import json, sys; {statement}; print(json.dumps([m for m in {modules} if m in sys.modules]))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout)


def test_building_the_parser_imports_no_heavy_library():
    """`specialize --help`, a usage error and `launch.sh`'s `specialize cluster plan` only parse arguments: none of
    torch, pandas, scipy, Ray, W&B or FFCV is imported for that (each costs seconds at every command's start)."""
    heavy = ("torch", "pandas", "scipy", "ray", "wandb", "ffcv", "sklearn")
    assert imported("from specialize.cli import build_parser; build_parser()", heavy) == []


def test_the_report_imports_no_deep_learning_library():
    """`specialize report` reads tables and draws figures: it starts without torch, Ray, FFCV or Lightning."""
    heavy = ("torch", "ray", "ffcv", "pytorch_lightning")
    assert imported("import analysis.report.build", heavy) == []
