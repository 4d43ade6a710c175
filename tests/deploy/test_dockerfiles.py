"""The images in docker/: no Docker engine runs here, so the tests read the Dockerfiles
and check them against the packages, the Makefile and the modules they start."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.deploy.dockerfiles import (
    DOCKER_DIR,
    Dockerfile,
    makefile_packages,
    parse_dockerfile,
    pip_arguments,
    project_metadata,
)
from tests.support import REPOSITORY_ROOT

DOCKERFILES = sorted(DOCKER_DIR.glob("*.Dockerfile"))
# Images whose process serves no health endpoint: the tools image runs jobs.
WITHOUT_HEALTHCHECK = {"tools"}
BUILD_TOOLS = ("build-essential", "gcc", "g++", "make", "libpq-dev", "python3-dev")


def component(path: Path) -> str:
    return path.name.removesuffix(".Dockerfile")


@pytest.fixture(params=DOCKERFILES, ids=component)
def dockerfile(request: pytest.FixtureRequest) -> Dockerfile:
    path: Path = request.param
    return parse_dockerfile(path)


def copied_package_folders(dockerfile: Dockerfile) -> list[str]:
    """Return the package folders the build stage copies (COPY <folder> <folder>)."""
    folders = []
    for arguments in dockerfile.stages[0].arguments("COPY"):
        source = arguments.split()[0]
        if (REPOSITORY_ROOT / source / "pyproject.toml").is_file():
            folders.append(source)
    return folders


def local_dependency_closure(distribution: str) -> set[str]:
    """Return ``distribution`` and every Noctis distribution it needs, by package folder."""
    folders = {project_metadata(folder)[0]: folder for folder in makefile_packages()}
    needed: set[str] = set()
    pending = [distribution]
    while pending:
        name = pending.pop()
        if name in needed:
            continue
        needed.add(name)
        pending.extend(
            dependency for dependency in project_metadata(folders[name])[1] if dependency in folders
        )
    return {folders[name] for name in needed}


def test_every_service_package_has_image() -> None:
    service_folders = [folder for folder in makefile_packages() if folder.startswith("services/")]
    for folder in service_folders:
        name = folder.removeprefix("services/")
        assert (DOCKER_DIR / f"{name}.Dockerfile").is_file(), folder


def test_image_is_multi_stage(dockerfile: Dockerfile) -> None:
    assert len(dockerfile.stages) >= 2
    for stage in dockerfile.stages:
        base = dockerfile.resolve(stage.base)
        assert base.startswith("python:3.11-slim"), f"{dockerfile.path.name}: {base}"


def test_build_stage_copies_makefile_packages(dockerfile: Dockerfile) -> None:
    folders = copied_package_folders(dockerfile)
    (wheel_arguments,) = pip_arguments(dockerfile.stages[0], "wheel")
    built = [
        argument.removeprefix("./") for argument in wheel_arguments if argument.startswith("./")
    ]
    assert folders, dockerfile.path.name
    assert set(folders) <= set(makefile_packages())
    assert sorted(built) == sorted(folders)
    assert "constraints.txt" in wheel_arguments
    assert "constraints.txt" in " ".join(dockerfile.stages[0].arguments("COPY"))


def test_final_stage_installs_one_package(dockerfile: Dockerfile) -> None:
    (install_arguments,) = pip_arguments(dockerfile.final, "install")
    options_with_value = {"--find-links", "--constraint", "-c", "-f"}
    names = []
    skip_next = False
    for argument in install_arguments:
        if skip_next:
            skip_next = False
        elif argument in options_with_value:
            skip_next = True
        elif not argument.startswith("-"):
            names.append(argument.lower())
    assert "--no-index" in install_arguments, "the final stage installs only the built wheels"
    assert len(names) == 1, names
    # The wheels built hold the installed package and every Noctis package it needs.
    assert local_dependency_closure(names[0]) == set(copied_package_folders(dockerfile))


def test_command_runs_existing_module(dockerfile: Dockerfile) -> None:
    command = dockerfile.command
    assert command[:2] == ["python", "-m"], command
    module = command[2]
    assert importlib.util.find_spec(module) is not None, f"no module {module}"
    assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module} has no __main__"


@pytest.mark.parametrize(
    "path",
    [path for path in DOCKERFILES if (REPOSITORY_ROOT / "services" / component(path)).is_dir()],
    ids=component,
)
def test_service_image_runs_its_package(path: Path) -> None:
    dockerfile = parse_dockerfile(path)
    name = component(path)
    module = dockerfile.command[2]
    assert module == "noctis_" + name.replace("-", "_")
    assert (REPOSITORY_ROOT / "services" / name / module / "__main__.py").is_file()


def test_final_stage_runs_as_non_root(dockerfile: Dockerfile) -> None:
    users = dockerfile.final.arguments("USER")
    assert users, "the final stage sets no USER, so it runs as root"
    user, _, group = users[-1].partition(":")
    assert user not in ("root", "0")
    assert group not in ("root", "0")


def test_final_stage_has_no_build_tools(dockerfile: Dockerfile) -> None:
    runs = " ".join(dockerfile.final.arguments("RUN")).split()
    for tool in BUILD_TOOLS:
        assert tool not in runs, f"{dockerfile.path.name} installs {tool} in the final stage"


def test_health_check_probes_service(dockerfile: Dockerfile) -> None:
    (healthcheck,) = dockerfile.final.arguments("HEALTHCHECK")
    if component(dockerfile.path) in WITHOUT_HEALTHCHECK:
        assert healthcheck == "NONE"
        return
    assert '"python", "-m", "noctis_common.healthcheck"' in healthcheck
    assert importlib.util.find_spec("noctis_common.healthcheck") is not None


def test_ingest_scp_health_check_uses_metrics_port() -> None:
    dockerfile = parse_dockerfile(DOCKER_DIR / "ingest-scp.Dockerfile")
    (healthcheck,) = dockerfile.final.arguments("HEALTHCHECK")
    environment = " ".join(dockerfile.final.arguments("ENV"))
    assert '"--port-setting", "metrics_port"' in healthcheck
    assert "NOCTIS_METRICS_PORT=9090" in environment


def test_build_context_keeps_packages() -> None:
    # .dockerignore leaves out everything but what the images copy.
    patterns = [
        line
        for line in (REPOSITORY_ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert patterns[0] == "**"
    assert {"!constraints.txt", "!libs", "!services"} <= set(patterns)
