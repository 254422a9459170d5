"""Where the shared, real fixtures live: beside the repository (override with SIMCLUSTER_FIXTURES)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_fixtures_dir() -> Path:
    override = os.environ.get("SIMCLUSTER_FIXTURES")
    path = Path(override) if override else REPO_ROOT.parent / "shared" / "fixtures"
    if not (path / "crds").is_dir():
        raise FileNotFoundError(f"shared fixtures not found at {path}: set SIMCLUSTER_FIXTURES to the folder that "
                                "holds crds/, hubble/ and cilium-dbg/")
    return path
