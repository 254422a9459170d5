"""Lay out the ``ansible_collections`` trees that the tools need, under the git-ignored ``.cache/``.

``collections``  (default)
    ``.cache/collections/ansible_collections/`` with ``kubernetes/core`` (taken from the ``ansible`` wheel on PyPI,
    once) and ``netpol/cilium``, a symlink to the repository root. Point ``ANSIBLE_COLLECTIONS_PATH`` and
    ``PYTHONPATH`` at ``.cache/collections`` for ansible-playbook, ansible-doc, ansible-lint, molecule and pytest.
    Also installs the offline get-pip stand-in that ansible-test needs (scripts/offline_get_pip.py).

``sanity-tree``
    ``.cache/ansible-test/ansible_collections/`` with real copies of this collection (the files git tracks or
    would track) and of kubernetes.core: ansible-test refuses a collection reached through a symlink and only
    finds dependencies in the same ``ansible_collections`` tree. The copy is a git repository of its own with
    every file staged, so ansible-test lists the same files as in this repository. Prints the copy's path.

Run it with the development venv's Python (it calls ``python -m pip download``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
COLLECTIONS = CACHE / "collections"
SANITY_ROOT = CACHE / "ansible-test"

# kubernetes.core is not installed from Galaxy: the ``ansible`` community package on PyPI bundles it.
KUBERNETES_CORE_SOURCE = "ansible==12.3.0"
KUBERNETES_CORE_WHEEL = "ansible-12.3.0-py3-none-any.whl"
KUBERNETES_CORE_WHEEL_SHA256 = "cd156f82fa87f7a899212b0efa9f7ca3a24d609212de9f78428a572eb01e5414"
KUBERNETES_CORE_VERSION = "6.2.0"
KUBERNETES_CORE_PREFIX = "ansible_collections/kubernetes/core/"

GET_PIP_MARKER = "netpol.cilium offline get-pip stand-in"
GET_PIP_STANDIN = ROOT / "scripts" / "offline_get_pip.py"
DEFAULT_PIP_VERSIONS = ("24.2",)

# Never copied into the sanity tree, whether or not git knows about them.
SKIP_PARTS = {".git", ".venv", ".cache", "__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"}


def log(message: str) -> None:
    print(f"layout: {message}", flush=True)


# --- kubernetes.core --------------------------------------------------------------------------------------------


def kubernetes_core_stamp() -> Path:
    return COLLECTIONS / ".kubernetes-core.stamp"


def kubernetes_core_dir(root: Path = COLLECTIONS) -> Path:
    return root / "ansible_collections" / "kubernetes" / "core"


def installed_kubernetes_core_version(target: Path) -> str | None:
    manifest = target / "MANIFEST.json"
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text())["collection_info"]["version"]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_kubernetes_core() -> Path:
    target = kubernetes_core_dir()
    stamp = kubernetes_core_stamp()
    wanted = f"{KUBERNETES_CORE_SOURCE} sha256={KUBERNETES_CORE_WHEEL_SHA256}\n"
    if (stamp.is_file() and stamp.read_text() == wanted
            and installed_kubernetes_core_version(target) == KUBERNETES_CORE_VERSION):
        return target

    log(f"fetching kubernetes.core {KUBERNETES_CORE_VERSION} from the {KUBERNETES_CORE_SOURCE} wheel")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="download-") as tmp:
        tmp_path = Path(tmp)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--only-binary=:all:", "--dest", str(tmp_path), KUBERNETES_CORE_SOURCE],
                       check=True)
        wheel = tmp_path / KUBERNETES_CORE_WHEEL
        actual = sha256_of(wheel)
        if actual != KUBERNETES_CORE_WHEEL_SHA256:
            raise SystemExit(f"layout: {wheel.name} has sha256 {actual}, expected {KUBERNETES_CORE_WHEEL_SHA256}")
        staging = tmp_path / "core"
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.infolist():
                if not member.filename.startswith(KUBERNETES_CORE_PREFIX) or member.is_dir():
                    continue
                relative = member.filename[len(KUBERNETES_CORE_PREFIX):]
                destination = staging / relative
                if ".." in Path(relative).parts:
                    raise SystemExit(f"layout: refusing to extract {member.filename}")
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, destination.open("wb") as sink:
                    shutil.copyfileobj(source, sink)
        version = installed_kubernetes_core_version(staging)
        if version != KUBERNETES_CORE_VERSION:
            raise SystemExit(f"layout: {KUBERNETES_CORE_SOURCE} holds kubernetes.core {version}, "
                             f"expected {KUBERNETES_CORE_VERSION}")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    stamp.write_text(wanted)
    log(f"kubernetes.core {KUBERNETES_CORE_VERSION} is in {target.relative_to(ROOT)}")
    return target


# --- this collection --------------------------------------------------------------------------------------------


def ensure_self_link() -> Path:
    """``.cache/collections/ansible_collections/netpol/cilium`` -> the repository root (a relative link)."""
    link = COLLECTIONS / "ansible_collections" / "netpol" / "cilium"
    link.parent.mkdir(parents=True, exist_ok=True)
    relative = Path(os.path.relpath(ROOT, link.parent))
    if link.is_symlink() and Path(os.readlink(link)) == relative:
        return link
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.exists():
        shutil.rmtree(link)
    link.symlink_to(relative, target_is_directory=True)
    log(f"{link.relative_to(ROOT)} -> {relative}")
    return link


# --- ansible-test's pip bootstrap -------------------------------------------------------------------------------


def ansible_test_pip_versions() -> list[str]:
    """The pip versions that the installed ansible-test bootstraps into its venvs."""
    try:
        import ansible_test
    except ImportError:
        return list(DEFAULT_PIP_VERSIONS)
    source = Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py"
    versions = sorted(set(re.findall(r"\bpip\s*=\s*'([0-9][0-9.]*)'", source.read_text())))
    return versions or list(DEFAULT_PIP_VERSIONS)


def ensure_get_pip_standin() -> None:
    cache = Path.home() / ".ansible" / "test" / "cache"
    content = GET_PIP_STANDIN.read_text()
    for version in ansible_test_pip_versions():
        path = cache / f"get_pip_{version.replace('.', '_')}.py"
        if path.exists():
            current = path.read_text(errors="replace")
            if current == content:
                continue
            if GET_PIP_MARKER not in current:
                # A real get-pip script someone downloaded: it works too, keep it.
                continue
        cache.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        log(f"installed the offline get-pip stand-in for pip {version} in ~/{path.relative_to(Path.home())}")


# --- the tree ansible-test runs in ------------------------------------------------------------------------------


def collection_files() -> list[str]:
    """Files of the collection: what git tracks plus untracked files it does not ignore."""
    if (ROOT / ".git").exists():
        listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                 cwd=ROOT, check=True, capture_output=True).stdout.decode()
        candidates = sorted(set(filter(None, listing.split("\0"))))
    else:
        candidates = sorted(str(path.relative_to(ROOT)) for path in ROOT.rglob("*")
                            if not path.is_dir() or path.is_symlink())
    files = []
    for name in candidates:
        path = ROOT / name
        parts = Path(name).parts
        if SKIP_PARTS.intersection(parts) or parts[:2] == ("tests", "output") or name.endswith((".pyc", ".pyo")):
            continue
        if path.is_symlink() or path.is_file():  # tracked files deleted in the work tree are left out
            files.append(name)
    return files


def build_sanity_tree() -> Path:
    ensure_kubernetes_core()
    collection = SANITY_ROOT / "ansible_collections" / "netpol" / "cilium"
    dependency = kubernetes_core_dir(SANITY_ROOT)
    if SANITY_ROOT.exists():
        shutil.rmtree(SANITY_ROOT)
    shutil.copytree(kubernetes_core_dir(), dependency, symlinks=True)
    for name in collection_files():
        source = ROOT / name
        destination = collection / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            destination.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, destination)
    # The copy sits inside this repository's work tree (in an ignored folder), so ansible-test, which asks git for
    # the file list when a parent folder is a git work tree, would find no file at all. A repository of its own,
    # with every copied file staged, gives it the same listing as this one.
    git = ["git", "-c", "init.defaultBranch=main", "-c", "core.autocrlf=false"]
    subprocess.run([*git, "init", "--quiet"], cwd=collection, check=True)
    subprocess.run([*git, "add", "--all"], cwd=collection, check=True)
    return collection


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", choices=("collections", "sanity-tree"), default="collections")
    args = parser.parse_args()
    CACHE.mkdir(exist_ok=True)
    if args.what == "collections":
        ensure_kubernetes_core()
        ensure_self_link()
        ensure_get_pip_standin()
    else:
        ensure_get_pip_standin()
        print(build_sanity_tree())
    return 0


if __name__ == "__main__":
    sys.exit(main())
