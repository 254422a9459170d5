"""The execution environment for AWX/AAP: execution-environment.yml (ansible-builder schema 3) and the collection's
own metadata for ansible-builder (meta/execution-environment.yml, requirements.txt, bindep.txt).

No image is built here. The tests run the real ansible-builder (pinned in requirements-dev.txt) and replay, offline,
the two steps of an image build that decide what ends up in it: the galaxy stage's `ansible-galaxy collection install`
of the generated requirements.yml (kubernetes.core already present, netpol.cilium from the tarball built from this
checkout) and the builder stage's `introspect.py` over the collections it installed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from simcluster.fixtures import REPO_ROOT

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
EE_FILE = REPO_ROOT / "execution-environment.yml"
COLLECTIONS = REPO_ROOT / ".cache" / "collections"
GALAXY = yaml.safe_load((REPO_ROOT / "galaxy.yml").read_text())
TARBALL = f"{GALAXY['namespace']}-{GALAXY['name']}-{GALAXY['version']}.tar.gz"
# What the modules import at run time (requirements.txt); PyYAML comes with ansible-core and ansible-builder drops it.
MODULE_REQUIREMENTS = {"kubernetes", "jsonpatch", "grpcio", "protobuf"}


def run(
    *command: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def tool_env(collections_path: Path) -> dict[str, str]:
    """The tools see only ``collections_path``: not the laid-out collections that ``make`` puts on PYTHONPATH for the
    test process (ansible-galaxy scans sys.path too, and would find this collection "already installed" there)."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env["ANSIBLE_COLLECTIONS_PATH"] = str(collections_path)
    env["ANSIBLE_COLLECTIONS_SCAN_SYS_PATH"] = "False"
    env["ANSIBLE_NOCOLOR"] = "1"
    return env


def build_collection(output: Path) -> Path:
    """`ansible-galaxy collection build` of this checkout (offline, about a second)."""
    result = run(
        BIN / "ansible-galaxy",
        "collection",
        "build",
        "--force",
        "--output-path",
        output,
        REPO_ROOT,
        cwd=REPO_ROOT,
        env=tool_env(COLLECTIONS),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return output / TARBALL


def create_context(definition: dict, workdir: Path) -> Path:
    """`ansible-builder create` of a definition placed where execution-environment.yml is used: next to the tarball."""
    (workdir / "execution-environment.yml").write_text(yaml.safe_dump(definition, sort_keys=False))
    build_collection(workdir)
    context = workdir / "context"
    result = run(
        BIN / "ansible-builder", "create", "--file", "execution-environment.yml", "--context", context, cwd=workdir
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No matches for" not in result.stdout + result.stderr, result.stdout + result.stderr
    return context


def containerfile(context: Path) -> str:
    """The build instructions: Containerfile with podman, Dockerfile when ansible-builder finds docker instead."""
    [path] = [context / name for name in ("Containerfile", "Dockerfile") if (context / name).is_file()]
    return path.read_text()


def definition() -> dict:
    return yaml.safe_load(EE_FILE.read_text())


def requirement_lines(text: str) -> list[Requirement]:
    return [Requirement(line.split("#", 1)[0].strip()) for line in text.splitlines() if line.split("#", 1)[0].strip()]


def dev_pins() -> dict[str, str]:
    pins = {}
    for requirement in requirement_lines((REPO_ROOT / "requirements-dev.txt").read_text().replace("-c ", "# -c ")):
        [spec] = list(requirement.specifier) or [None]
        if spec is not None and spec.operator == "==":
            pins[requirement.name.lower()] = spec.version
    return pins


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_context(definition(), tmp_path_factory.mktemp("ee"))


# --- the definition ---------------------------------------------------------------------------------------------


def test_the_definition_uses_schema_3_with_a_python_3_10_or_newer_interpreter() -> None:
    ee = definition()
    assert ee["version"] == 3
    assert ee["images"]["base_image"]["name"]
    python_path = ee["dependencies"]["python_interpreter"]["python_path"]
    match = re.search(r"python3\.(\d+)$", python_path)
    assert match and int(match.group(1)) >= 10, f"grpcio/protobuf as pinned need Python >= 3.10, got {python_path}"
    assert python_path.rsplit("/", 1)[1] in ee["dependencies"]["python_interpreter"]["package_system"]


def test_ansible_core_and_the_module_requirements_are_pinned_to_the_tested_versions() -> None:
    ee, pins = definition(), dev_pins()
    core = Requirement(ee["dependencies"]["ansible_core"]["package_pip"])
    assert core.name == "ansible-core" and str(core.specifier) == f"=={pins['ansible-core']}"
    assert Requirement(ee["dependencies"]["ansible_runner"]["package_pip"]).name == "ansible-runner"
    pinned = {r.name.lower(): r for r in map(Requirement, ee["dependencies"]["python"])}
    assert set(pinned) >= MODULE_REQUIREMENTS
    for name in MODULE_REQUIREMENTS:
        assert str(pinned[name].specifier) == f"=={pins[name]}", f"{name}: the EE and requirements-dev.txt differ"
    # every pin satisfies the collection's own lower bounds (requirements.txt)
    for requirement in requirement_lines((REPO_ROOT / "requirements.txt").read_text()):
        if requirement.name.lower() in pinned:
            version = next(iter(pinned[requirement.name.lower()].specifier)).version
            assert requirement.specifier.contains(version), f"{requirement} is not met by {version}"


def test_galaxy_requirements_are_kubernetes_core_in_the_range_of_galaxy_yml_and_this_checkouts_tarball() -> None:
    collections = {c["name"]: c for c in definition()["dependencies"]["galaxy"]["collections"]}
    assert collections["kubernetes.core"]["version"] == GALAXY["dependencies"]["kubernetes.core"]
    local = collections[f"collections/{TARBALL}"]
    assert local["type"] == "file"
    assert {"src": TARBALL, "dest": "collections"} in definition()["additional_build_files"]
    assert f"netpol-cilium-ee:{GALAXY['version']}" in definition()["options"]["tags"]


# --- the context ansible-builder generates ----------------------------------------------------------------------


def helm_step(text: str) -> str:
    """The RUN instruction that installs helm (continuation lines joined)."""
    joined = text.replace("\\\n", " ")
    steps = [line for line in joined.splitlines() if line.startswith("RUN ") and "get.helm.sh" in line]
    assert len(steps) == 1, "no (or more than one) helm install step in the Containerfile"
    return steps[0]


def test_the_containerfile_installs_a_pinned_helm_3_after_checking_its_sha256(context: Path) -> None:
    text = containerfile(context)
    final_stage = text.split("FROM base AS final", 1)[1]
    args = dict(re.findall(r"^ARG (HELM_\w+)=(\S+)$", final_stage, re.MULTILINE))
    assert re.fullmatch(r"3\.\d+\.\d+", args["HELM_VERSION"]), args
    assert all(re.fullmatch(r"[0-9a-f]{64}", args[name]) for name in ("HELM_SHA256_AMD64", "HELM_SHA256_ARM64"))
    step = helm_step(final_stage)
    download, check, unpack = (step.index("curl "), step.index("sha256sum --check"), step.index("tar -xzf"))
    assert download < check < unpack, "the archive must be verified before it is unpacked"
    assert "set -eu" in step and "curl -fsSL" in step  # a failed download or check fails the build
    assert "install -m 0755" in step and "/usr/local/bin/helm" in step
    assert 'helm version --short | grep -q "^v${HELM_VERSION}+"' in step
    # the step runs after the bindep packages (tar, gzip) were installed
    assert final_stage.index("install-from-bindep") < final_stage.index("get.helm.sh")


def test_the_final_image_is_checked_for_the_python_modules_and_the_collections(context: Path) -> None:
    text = containerfile(context).replace("\\\n", " ")
    [check] = [line for line in text.splitlines() if line.startswith("RUN $PYCMD -c 'import")]
    for module in ("grpc", "google.protobuf", "jsonpatch", "kubernetes", "yaml"):
        assert module in check
    assert "ansible-doc netpol.cilium.cilium_audit_mode" in check and "ansible-doc kubernetes.core.helm" in check


def test_the_context_carries_the_galaxy_python_and_system_requirements(context: Path) -> None:
    build = context / "_build"
    galaxy = yaml.safe_load((build / "requirements.yml").read_text())
    names = [c["name"] for c in galaxy["collections"]]
    assert names == ["kubernetes.core", f"collections/{TARBALL}"]
    assert (build / "collections" / TARBALL).is_file()
    python = {r.name.lower() for r in requirement_lines((build / "requirements.txt").read_text())}
    assert python >= MODULE_REQUIREMENTS
    assert {line.split()[0] for line in (build / "bindep.txt").read_text().splitlines()} >= {"tar", "gzip"}
    assert set((build / "exclude-bindep.txt").read_text().split()) == {"kubernetes-client", "openshift-clients"}
    text = containerfile(context)
    assert "ansible-galaxy collection install $ANSIBLE_GALAXY_CLI_COLLECTION_OPTS -r requirements.yml" in text
    assert "--exclude-bindep-reqs=exclude-bindep.txt" in text


def test_the_galaxy_and_builder_stages_resolve_our_collection_and_its_requirements(
    context: Path, tmp_path: Path
) -> None:
    """Replay the two stages offline: install the generated requirements.yml from the build directory (kubernetes.core
    is already there, as Galaxy would provide it), then run ansible-builder's own introspect.py as the builder stage
    does, with the exclusions of the context."""
    build = context / "_build"
    installed = tmp_path / "collections"
    (installed / "ansible_collections" / "kubernetes").mkdir(parents=True)
    (installed / "ansible_collections" / "kubernetes" / "core").symlink_to(
        COLLECTIONS / "ansible_collections" / "kubernetes" / "core"
    )
    result = run(
        BIN / "ansible-galaxy",
        "collection",
        "install",
        "--offline",
        "-r",
        "requirements.yml",
        "--collections-path",
        installed,
        cwd=build,
        env=tool_env(installed),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"netpol.cilium:{GALAXY['version']} was installed successfully" in result.stdout
    pip_out, bindep_out = tmp_path / "requirements.txt", tmp_path / "bindep.txt"
    result = run(
        sys.executable,
        build / "scripts" / "introspect.py",
        "introspect",
        installed,
        "--user-pip=requirements.txt",
        "--user-bindep=bindep.txt",
        "--exclude-bindep-reqs=exclude-bindep.txt",
        f"--write-pip={pip_out}",
        f"--write-bindep={bindep_out}",
        cwd=build,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    pip_lines = pip_out.read_text().splitlines()
    ours = {
        Requirement(line.split("#")[0]).name.lower() for line in pip_lines if "from collection netpol.cilium" in line
    }
    assert ours == MODULE_REQUIREMENTS  # read from the installed tarball's meta/execution-environment.yml
    assert any("from collection kubernetes.core" in line for line in pip_lines)
    system = bindep_out.read_text()
    assert "kubernetes-client" not in system and "openshift-clients" not in system
    assert "tar [platform:rpm]" in system


def test_a_definition_without_the_helm_step_is_caught(tmp_path: Path) -> None:
    """The helm assertions can fail: the same checks on a context made without the step."""
    broken = definition()
    steps = broken["additional_build_steps"]["append_final"]
    broken["additional_build_steps"]["append_final"] = steps[steps.index("RUN $PYCMD") :]
    context = create_context(broken, tmp_path)
    with pytest.raises(AssertionError, match="no \\(or more than one\\) helm install step"):
        helm_step(containerfile(context))


# --- the collection's metadata for ansible-builder --------------------------------------------------------------


def test_meta_execution_environment_points_at_files_the_collection_ships(tmp_path: Path) -> None:
    meta = yaml.safe_load((REPO_ROOT / "meta" / "execution-environment.yml").read_text())
    assert meta["version"] == 1
    referenced = {meta["dependencies"]["python"], meta["dependencies"]["system"]}
    assert referenced == {"requirements.txt", "bindep.txt"}
    ignored = GALAXY.get("build_ignore", [])
    for name in referenced | {"meta/execution-environment.yml"}:
        assert (REPO_ROOT / name).is_file()
        assert not any(Path(name).match(pattern) or name.startswith(pattern.rstrip("/") + "/") for pattern in ignored)
    with tarfile.open(build_collection(tmp_path)) as archive:
        members = set(archive.getnames())
    assert referenced | {"meta/execution-environment.yml"} <= members


def test_introspection_finds_our_requirements_in_the_laid_out_collections() -> None:
    result = run(BIN / "ansible-builder", "introspect", "--sanitize", COLLECTIONS)
    assert result.returncode == 0, result.stdout + result.stderr
    data = yaml.safe_load(result.stdout.split("\n", 1)[1])
    ours = {
        Requirement(line.split("#")[0]).name.lower()
        for line in data["python"]
        if line.endswith("# from collection netpol.cilium")
    }
    assert ours == MODULE_REQUIREMENTS
