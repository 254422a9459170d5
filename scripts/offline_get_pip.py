"""Offline stand-in for the ``get-pip.py`` bootstrap script that ansible-test downloads.

ansible-test bootstraps pip into each virtual environment it creates (``--venv``, and the per-test venvs of
``sanity``) with ``get-pip-<version>.py``, fetched from a host that only the open internet reaches, and cached as
``~/.ansible/test/cache/get_pip_<version>.py``. scripts/layout_collections.py installs this file at that path
instead. It is run as ``python get_pip.py [pip options] pip==<version> [--no-setuptools] [--no-wheel]`` with the
venv's Python, and:

1. installs the pip that this Python ships (``ensurepip``, no network), then
2. runs ``pip install`` with the requested packages in the caller's environment, so that pip's configuration
   (configuration files and ``PIP_*`` variables: index, mirrors, certificates) applies as for any other pip run.

ensurepip is run in a child process because it deletes every ``PIP_*`` variable from the environment of the
process it runs in and points ``PIP_CONFIG_FILE`` at the null device.
"""

# netpol.cilium offline get-pip stand-in (scripts/layout_collections.py replaces only files with this marker)

from __future__ import annotations

import os
import subprocess
import sys

GET_PIP_ONLY_OPTIONS = ("--no-setuptools", "--no-wheel")


def has_distribution(name: str) -> bool:
    import importlib
    from importlib import metadata

    importlib.invalidate_caches()
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def main() -> int:
    args = sys.argv[1:]
    pip_args = [arg for arg in args if arg not in GET_PIP_ONLY_OPTIONS]
    had_setuptools = has_distribution("setuptools")

    subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"],
                          stdout=subprocess.DEVNULL)

    env = dict(os.environ)
    if "--no-setuptools" in args and not had_setuptools and has_distribution("setuptools"):
        # Python < 3.12 ensurepip also installs setuptools, which the caller asked not to get.
        subprocess.check_call([sys.executable, "-m", "pip", "uninstall", "--yes", "--quiet", "setuptools"], env=env)
    if any(not arg.startswith("-") for arg in pip_args):
        subprocess.check_call([sys.executable, "-m", "pip", "install"] + pip_args, env=env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
