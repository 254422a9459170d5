"""Create the development venv (.venv) and install the pinned tools into it.

Runs with the machine's plain ``python3`` (standard library only). The install is skipped while the stamp file
written after the last successful install is newer than requirements-dev.txt and constraints-dev.txt, and the
venv's Python still starts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = [ROOT / "requirements-dev.txt", ROOT / "constraints-dev.txt"]
STAMP_NAME = ".requirements-dev.stamp"


def venv_python(venv_dir: Path) -> Path:
    return venv_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def venv_works(venv_dir: Path) -> bool:
    python = venv_python(venv_dir)
    if not python.exists():
        return False
    return subprocess.run([str(python), "-c", "import pip"], capture_output=True, check=False).returncode == 0


def up_to_date(venv_dir: Path) -> bool:
    stamp = venv_dir / STAMP_NAME
    if not stamp.exists() or not venv_works(venv_dir):
        return False
    stamp_time = stamp.stat().st_mtime
    return all(req.stat().st_mtime < stamp_time for req in REQUIREMENTS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", default=str(ROOT / ".venv"), help="venv directory (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="reinstall even when the stamp is up to date")
    args = parser.parse_args()
    venv_dir = Path(args.venv)

    if not args.force and up_to_date(venv_dir):
        print(f"bootstrap: {venv_dir.name} is up to date")
        return 0

    if venv_dir.exists() and not venv_works(venv_dir):
        print(f"bootstrap: {venv_dir} is broken, recreating it")
        shutil.rmtree(venv_dir)
    if not venv_dir.exists():
        print(f"bootstrap: creating {venv_dir} with {sys.executable}")
        venv.EnvBuilder(with_pip=True).create(venv_dir)

    (venv_dir / STAMP_NAME).unlink(missing_ok=True)
    command = [str(venv_python(venv_dir)), "-m", "pip", "install", "--disable-pip-version-check",
               "-r", str(ROOT / "requirements-dev.txt")]
    print("bootstrap: " + " ".join(command[2:]), flush=True)
    result = subprocess.run(command, cwd=ROOT, check=False)
    if result.returncode != 0:
        print(f"bootstrap: pip failed with exit code {result.returncode}", file=sys.stderr)
        return result.returncode
    (venv_dir / STAMP_NAME).write_text("installed from requirements-dev.txt and constraints-dev.txt\n")
    print("bootstrap: done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
