"""The demo keeps to itself: its extension server sees none of the user's kubeconfig,
Vault, AWS or EXTENSION_SERVER_* settings, and its files are created new and owner-only
(`--workdir` may be a directory others can write to: a link planted there under a name
the demo uses is refused with one line, never followed)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.support.commands import run_command
from tests.support.kube import KubeStandIn
from tests.support.secrets import remember


@pytest.mark.parametrize("planted", ["extension-server.log", "envoy"])
def test_a_link_planted_in_the_demo_workdir_is_refused_not_followed(
    tmp_path: Path, planted: str
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: anyone may create names in it
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "bashrc").write_text("# the victim's file\n")
    target = victim / "bashrc" if planted.endswith(".log") else victim
    (shared / planted).symlink_to(target)
    result = run_command("demo", "--workdir", str(shared))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"error: --workdir: {shared / planted} exists already (a file, a directory or a "
        "link); the demo creates its files itself: remove it, or choose an empty --workdir"
    ]
    assert (victim / "bashrc").read_text() == "# the victim's file\n"
    assert sorted(p.name for p in victim.iterdir()) == ["bashrc"]


@pytest.mark.skipif(not Path("/proc").exists(), reason="needs Linux")
def test_the_demo_uses_none_of_the_users_settings_and_writes_owner_only_files(
    tmp_path: Path,
) -> None:
    remember("vault-token-of-the-user")
    workdir = tmp_path / "demo"
    with KubeStandIn() as kube:
        users_shell = {
            **{k: v for k, v in os.environ.items() if not k.startswith("EXTENSION_SERVER_")},
            "KUBECONFIG": str(kube.kubeconfig(tmp_path / "kubeconfig")),
            "VAULT_ADDR": "http://127.0.0.1:1",
            "VAULT_TOKEN": "vault-token-of-the-user",
            "AWS_REGION": "eu-west-1",
            "EXTENSION_SERVER_ROTATION_POLL_INTERVAL": "0.1s",
            "EXTENSION_SERVER_ROTATION_WATCHER": "on",
            "EXTENSION_SERVER_LOG_LEVEL": "error",
            "EXTENSION_SERVER_UNPROTECTED_LISTENERS": "passthrough",
        }
        result = run_command("demo", "--workdir", str(workdir), env=users_shell, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert kube.requests == []
    log = (workdir / "extension-server.log").read_text()
    started = next(line for line in log.splitlines() if "event=server.started" in line)
    assert "vault=off" in started and "rotation_watcher=off" in started
    assert "unprotected_listeners=deny" in started  # not the user's passthrough
    for path in [workdir, *workdir.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_dir():
            assert mode == 0o700, f"{path}: {oct(mode)}"
        else:
            assert mode == 0o600, f"{path}: {oct(mode)}"
