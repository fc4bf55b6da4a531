"""The container image, checked without a Docker engine (the development machines have none).

The Dockerfile is parsed with `dockerfile-parse` and held to what the issue asks: a base
image pinned by tag, a non-root user, nothing of the build (or any secret) in the final
stage, the pinned dependencies of requirements.lock, and an entrypoint that is the CLI.
The lock itself is resolved by pip against pyproject.toml (a dry run), so a stale lock fails.
The build stage's commands that shape the virtual environment are run here, under a temporary
directory, to prove the environment the final stage copies holds no pip, setuptools or wheel.
"""

from __future__ import annotations

import io
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

from server.cli import main

ROOT = Path(__file__).resolve().parent.parent
VENV = "/opt/extension-server"
# What `python -m venv` (ensurepip) or an installer leaves behind, by site-packages entry.
INSTALLERS = ("pip", "setuptools", "wheel", "pkg_resources", "_distutils_hack", "distutils")


@pytest.fixture(scope="module")
def stages() -> list[list[dict[str, Any]]]:
    """The Dockerfile's instructions, split into its stages."""
    return split_stages(DockerfileParser(path=str(ROOT / "Dockerfile")))


def stages_of(text: str) -> list[list[dict[str, Any]]]:
    return split_stages(DockerfileParser(fileobj=io.BytesIO(text.encode())))


def split_stages(parser: DockerfileParser) -> list[list[dict[str, Any]]]:
    split: list[list[dict[str, Any]]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            split.append([])
        if split:
            split[-1].append(instruction)
    return split


def values(stage: list[dict[str, Any]], name: str) -> list[str]:
    return [str(i["value"]) for i in stage if i["instruction"] == name]


def test_the_image_is_built_in_two_stages_from_a_base_pinned_by_tag(
    stages: list[list[dict[str, Any]]],
) -> None:
    assert len(stages) == 2
    for stage in stages:
        base = values(stage, "FROM")[0].split()[0]
        name, _, tag = base.partition(":")
        assert name == "python" and tag and tag != "latest", base
        assert re.fullmatch(r"3\.11(\.\d+)?-slim-[a-z]+(@sha256:[0-9a-f]{64})?", tag), base


def test_the_final_stage_runs_as_an_unprivileged_user(stages: list[list[dict[str, Any]]]) -> None:
    (user,) = values(stages[-1], "USER")
    uid = user.split(":")[0]
    assert uid not in ("0", "root") and int(uid) >= 1000


def test_the_final_stage_holds_only_the_built_environment_and_no_secret(
    stages: list[list[dict[str, Any]]],
) -> None:
    final = stages[-1]
    assert values(final, "COPY") == ["--from=build /opt/extension-server /opt/extension-server"]
    assert values(final, "ADD") == []
    commands = " ".join(values(final, "RUN"))
    assert not re.search(r"\b(apt-get|apk|gcc|make|build-essential|curl|wget)\b", commands)
    for text in values(final, "ENV") + values(final, "ARG") + values(final, "LABEL"):
        assert not re.search(r"(?i)(password|secret|token|credential|aws_|vault_)", text), text


def test_dependencies_are_installed_from_the_lock(stages: list[list[dict[str, Any]]]) -> None:
    commands = " ".join(values(stages[0], "RUN"))
    assert "--constraint requirements.lock" in commands
    copied = " ".join(values(stages[0], "COPY"))
    for source in ("requirements.lock", "pyproject.toml", "compiler", "backends", "server"):
        assert source in copied
        assert (ROOT / source).exists()


def test_the_entrypoint_is_the_cli_and_the_command_serves_on_5005(
    stages: list[list[dict[str, Any]]],
) -> None:
    final = stages[-1]
    (entrypoint,) = values(final, "ENTRYPOINT")
    (command,) = values(final, "CMD")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == '["extension-server"]' and "extension-server" in scripts
    assert command == '["serve"]' and "serve" in main.commands
    assert "5005" in " ".join(values(final, "EXPOSE")).split()


def test_the_lock_pins_every_runtime_dependency_and_resolves_with_pyproject() -> None:
    lock = (ROOT / "requirements.lock").read_text()
    pinned = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", lock, re.MULTILINE))
    required = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in required:
        name = re.split(r"[<>=!~\[ ]", requirement, maxsplit=1)[0]
        assert any(p.lower().replace("_", "-") == name.lower().replace("_", "-") for p in pinned), (
            name
        )
    resolved = subprocess.run(
        # what the image's build stage does, without installing: the lock must satisfy pyproject
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
         "--constraint", "requirements.lock", "."],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert resolved.returncode == 0, resolved.stderr[-2000:]


def test_the_build_context_leaves_the_developer_machine_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ignored[ignored.index("*")] == "*"  # everything is excluded first, then only:
    allowed = {line[1:].rstrip("/") for line in ignored if line.startswith("!")}
    assert allowed == {
        "requirements.lock",
        "pyproject.toml",
        "README.md",
        "compiler",
        "backends",
        "server",
    }


# --- no installer in the shipped virtual environment ---------------------------------------


def shape_environment(build: list[dict[str, Any]], root: Path) -> tuple[list[str], list[str]]:
    """Run the build stage's RUN commands with VENV moved under `root`, all but the install of
    the project (it needs the package index and adds only the locked dependencies), with this
    machine's Python 3.11 for the base image's. Returns what the environment then holds of
    INSTALLERS (site-packages entries and bin/ scripts) and the commands that failed."""
    venv = root / "venv"
    failed: list[str] = []
    for run in values(build, "RUN"):
        for command in re.split(r"\s*&&\s*", run.strip()):
            argv = [arg.replace(VENV, str(venv)) for arg in shlex.split(command)]
            if "install" in argv:
                continue
            if argv[0] == "python":
                argv[0] = sys.executable
            done = subprocess.run(
                argv, cwd=root, capture_output=True, text=True, timeout=300, check=False
            )
            if done.returncode != 0:
                failed.append(f"{command}: {done.stderr.strip()[-500:]}")
    found = [
        entry.name
        for site in venv.glob("lib/python3*/site-packages")
        for entry in site.iterdir()
        if re.split(r"[-.]", entry.name)[0].lower() in INSTALLERS
    ]
    found += [s.name for s in (venv / "bin").glob("*") if s.name.startswith(("pip", "wheel"))]
    return sorted(found), failed


def test_the_shipped_environment_holds_no_pip_setuptools_or_wheel(
    stages: list[list[dict[str, Any]]], tmp_path: Path
) -> None:
    build, final = stages
    assert any(f"-m venv --without-pip {VENV}" in run for run in values(build, "RUN"))
    found, failed = shape_environment(build, tmp_path)
    assert (found, failed) == ([], [])
    assert values(final, "COPY") == [f"--from=build {VENV} {VENV}"]


def test_the_environment_check_fails_a_build_that_leaves_an_installer(tmp_path: Path) -> None:
    """Without --without-pip, 3.11's venv installs pip and setuptools: the build stage's own
    check then fails the build, and so does the test above."""
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("-m venv --without-pip ") == 1
    build = stages_of(text.replace("-m venv --without-pip ", "-m venv "))[0]
    found, failed = shape_environment(build, tmp_path)
    assert {"pip", "setuptools"} <= {re.split(r"[-.]", name)[0] for name in found}
    assert len(failed) == 1 and "left in" in failed[0], failed


def test_removing_only_pip_leaves_setuptools(tmp_path: Path) -> None:
    """The Dockerfile as it was (pip uninstalled from the venv, setuptools forgotten) fails."""
    build = stages_of(
        "FROM python:3.11-slim-bookworm AS build\n"
        f"RUN python -m venv {VENV} \\\n"
        f" && {VENV}/bin/pip install --constraint requirements.lock . \\\n"
        f" && {VENV}/bin/pip uninstall --yes pip\n"
    )[0]
    found, _ = shape_environment(build, tmp_path)
    assert "setuptools" in {re.split(r"[-.]", name)[0] for name in found}
    assert not any(name.startswith("pip") for name in found)


def test_the_final_stage_removes_the_base_images_installer(
    stages: list[list[dict[str, Any]]],
) -> None:
    final = stages[-1]
    runs = values(final, "RUN")
    assert any(
        re.fullmatch(r"python -m pip uninstall --yes( --quiet)? pip setuptools wheel", run)
        for run in runs
    ), runs
    names = [i["instruction"] for i in final]
    assert names.index("RUN") < names.index("USER")  # removed as root, before the switch
