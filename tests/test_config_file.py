"""`serve --config` refuses what could expand without bound: YAML anchors and aliases (a
"billion laughs" file of a few hundred bytes), and files far larger than settings need,
each with one line naming the file."""

from __future__ import annotations

import resource
from pathlib import Path

from tests.support.commands import run_command

# Settings that take any text: each level of the file below sits under one of them, so
# that a server which expanded the aliases would turn the last one into text.
TEXT_SETTINGS = [
    "host", "vault-namespace", "vault-ca-cert", "vault-role", "vault-token-file",
    "vault-auth-mount", "vault-approle-role-id", "aws-region", "vault-addr",
]  # fmt: skip


def billion_laughs(path: Path) -> Path:
    """Nine levels of nine aliases: a few hundred bytes that expand to 9**9 strings."""
    lines = [f'{TEXT_SETTINGS[0]}: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level, key in enumerate(TEXT_SETTINGS[1:], start=1):
        refs = ",".join([f"*a{level - 1}"] * 9)
        lines.append(f"{key}: &a{level} [{refs}]")
    path.write_text("\n".join(lines) + "\n")
    return path


def limited_memory() -> None:
    """Runs in the child: 2 GiB of address space, so an expansion fails instead of
    taking the machine down."""
    resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))


def test_a_config_file_with_yaml_aliases_is_refused_in_one_line(tmp_path: Path) -> None:
    config = billion_laughs(tmp_path / "laughs.yaml")
    assert config.stat().st_size < 1024
    result = run_command("serve", "--config", str(config), "--port", "0", preexec_fn=limited_memory)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines() == [
        f"error: --config: {config}: anchors and aliases (& and *) are not allowed (line 1); "
        "write each value out in full"
    ]


def test_an_oversized_config_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "huge.yaml"
    config.write_text("# padding\n" * 200_000)
    result = run_command("serve", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: --config: {config}: larger than 1024 KiB; a settings file is a few lines"
    ]
