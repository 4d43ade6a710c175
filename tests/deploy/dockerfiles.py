"""Read the Dockerfiles in docker/ far enough to check them without a Docker engine."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import REPOSITORY_ROOT

DOCKER_DIR = REPOSITORY_ROOT / "docker"
MAKEFILE = REPOSITORY_ROOT / "Makefile"


@dataclass
class Stage:
    """One FROM section of a Dockerfile: its base image and instructions in order."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def arguments(self, instruction: str) -> list[str]:
        return [arguments for name, arguments in self.instructions if name == instruction]


@dataclass
class Dockerfile:
    path: Path
    build_arguments: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    @property
    def command(self) -> list[str]:
        """The final stage's CMD in exec form (a JSON array); [] when there is none."""
        commands = self.final.arguments("CMD")
        if not commands:
            return []
        command: list[str] = json.loads(commands[-1])
        return command

    def resolve(self, text: str) -> str:
        """Replace ${NAME} and $NAME of ARG defaults given before the first FROM."""
        for name, value in self.build_arguments.items():
            text = text.replace(f"${{{name}}}", value).replace(f"${name}", value)
        return text


def logical_lines(text: str) -> list[str]:
    """Join continuation lines (a trailing backslash) and drop comments and blank lines."""
    lines: list[str] = []
    pending = ""
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if line.startswith("#") and not pending:
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            lines.append(line)
    return lines


def parse_dockerfile(path: Path) -> Dockerfile:
    build_arguments: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(path.read_text()):
        instruction, _, arguments = line.partition(" ")
        instruction = instruction.upper()
        arguments = re.sub(r"\s+", " ", arguments.strip())
        if instruction == "FROM":
            words = arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages and instruction == "ARG":
            name, _, default = arguments.partition("=")
            build_arguments[name] = default
        elif stages:
            stages[-1].instructions.append((instruction, arguments))
    return Dockerfile(path=path, build_arguments=build_arguments, stages=stages)


def makefile_packages() -> list[str]:
    """Return the package folders of the Makefile's PACKAGES variable."""
    text = MAKEFILE.read_text().replace("\\\n", " ")
    match = re.search(r"^PACKAGES\s*:?=\s*(.+)$", text, re.MULTILINE)
    assert match is not None, "the Makefile has no PACKAGES variable"
    return match.group(1).split()


def project_metadata(package_folder: str) -> tuple[str, list[str]]:
    """Return the distribution name of a package folder and the names it depends on."""
    with open(REPOSITORY_ROOT / package_folder / "pyproject.toml", "rb") as handle:
        project = tomllib.load(handle)["project"]
    dependencies = [
        re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower()
        for requirement in project.get("dependencies", [])
    ]
    return str(project["name"]).lower(), dependencies


def pip_arguments(stage: Stage, subcommand: str) -> list[list[str]]:
    """Return the words after ``pip <subcommand>`` of every RUN in ``stage``."""
    found = []
    for run in stage.arguments("RUN"):
        for command in re.split(r"&&|;", run):
            words = shlex.split(command)
            if "pip" in words and subcommand in words:
                found.append(words[words.index(subcommand) + 1 :])
    return found
