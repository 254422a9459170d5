"""Every playbook the collection ships passes ``ansible-playbook --syntax-check`` with the collection installed as
users install it (kubernetes.core and netpol.cilium from the collections path), including the molecule scenarios'
playbooks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from simcluster.fixtures import REPO_ROOT
from simcluster.playbook import ansible_env

pytestmark = pytest.mark.integration

PLAYBOOKS = sorted((REPO_ROOT / "playbooks").glob("*.yml"))
SCENARIO_PLAYBOOKS = sorted(
    path for path in (REPO_ROOT / "extensions" / "molecule").glob("*/*.yml")
    if path.name in {"converge.yml", "verify.yml", "create.yml", "destroy.yml"})


def test_every_playbook_is_covered() -> None:
    names = {path.name for path in PLAYBOOKS}
    assert {"audit_status.yml", "audit_enable.yml", "audit_report.yml", "audit_disable.yml", "audit_guard.yml",
            "policy_rollout.yml", "fleet_rollout.yml"} <= names


@pytest.mark.parametrize("playbook", PLAYBOOKS + SCENARIO_PLAYBOOKS,
                         ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_playbook_passes_syntax_check(playbook: Path, tmp_path: Path) -> None:
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "--syntax-check", str(playbook)]
    result = subprocess.run(command, env=ansible_env(), capture_output=True, text=True, timeout=120, check=False,
                            cwd=str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stderr, result.stderr
