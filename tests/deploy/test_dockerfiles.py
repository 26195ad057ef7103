"""The images' Dockerfiles: base image and uv, locked sync of their own workspace member,
COPY sources vs ``.dockerignore``, CMD/USER, and EXPOSE/HEALTHCHECK vs the Settings."""

from __future__ import annotations

import re
import shlex

import pytest

from tests.deploy.docker import dockerfile, dockerignored
from tests.deploy.support import (
    DOCKERFILES,
    ROOT,
    SIM,
    SIM_PORT,
    SPECS,
    load_toml,
    settings_class,
    workspace_members,
)


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
class TestDockerfile:
    def test_multi_stage_on_python_311_slim_with_the_makefiles_uv(self, name: str) -> None:
        image = dockerfile(name)
        assert len(image.stages) >= 2, "build and runtime stages"
        for stage in image.stages:
            base = stage[0][1].split()[0]
            assert base == "python:3.11-slim", f"{image.path}: FROM {base}"
        uv_version = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
        assert uv_version
        uv_copies = [c for c in image.all("COPY") if "astral-sh/uv" in c]
        assert uv_copies == [f"--from=ghcr.io/astral-sh/uv:{uv_version.group(1)} /uv /bin/uv"]

    def test_syncs_its_own_workspace_member_from_the_lock(self, name: str) -> None:
        image = dockerfile(name)
        members = workspace_members()
        own = load_toml(image.path.parent / "pyproject.toml")["project"]["name"]
        syncs = [r for r in image.all("RUN") if "uv sync" in r]
        assert syncs, f"{image.path}: no uv sync"
        for command in syncs:
            words = shlex.split(command[command.index("uv sync") :])
            assert {"--locked", "--no-dev"} <= set(words), command
            package = words[words.index("--package") + 1]
            assert package in members, f"{package} is not a workspace member"
            assert package == own, f"{image.path} installs {package}, its folder holds {own}"
        assert "--no-editable" in syncs[-1], "the runtime stage copies only the virtualenv"

    def test_copies_every_workspace_manifest_for_the_locked_sync(self, name: str) -> None:
        # `uv sync --locked` fails unless every member's pyproject.toml is in the image.
        copied = set(dockerfile(name).copy_sources())
        needed = {"pyproject.toml", "uv.lock"} | {
            str((d / "pyproject.toml").relative_to(ROOT)) for d in workspace_members().values()
        }
        assert needed <= copied, f"not copied: {sorted(needed - copied)}"

    def test_copy_sources_exist_and_are_not_dockerignored(self, name: str) -> None:
        for source in dockerfile(name).copy_sources():
            path = ROOT / source
            assert path.exists(), f"{DOCKERFILES[name]}: COPY {source}: no such path"
            if path.is_file():
                needed = [path]
            else:  # a package folder: its manifest, readme and sources must reach the build
                needed = [
                    f
                    for f in path.rglob("*")
                    if f.is_file()
                    and "__pycache__" not in f.parts
                    and (f.name in ("pyproject.toml", "README.md") or "src" in f.parts)
                ]
            assert needed, f"COPY {source} brings nothing the build needs"
            ignored = [
                str(f.relative_to(ROOT)) for f in needed if dockerignored(str(f.relative_to(ROOT)))
            ]
            assert not ignored, f".dockerignore excludes what COPY {source} needs: {ignored}"

    def test_runs_a_package_of_the_repo_as_a_non_root_user(self, name: str) -> None:
        image = dockerfile(name)
        member = image.path.parent
        command = image.exec_form("CMD")
        if command[:2] == ["python", "-m"]:
            module = command[2]
            assert (member / "src" / module / "__main__.py").is_file(), f"no package {module}"
            assert module == SPECS[name].module
        else:
            scripts = load_toml(member / "pyproject.toml")["project"]["scripts"]
            assert command[0] in scripts, f"{command[0]} is not a console script of {member}"
        (user,) = image.all("USER", image.runtime)
        uid = user.split(":")[0]
        assert uid.isdigit(), "numeric USER, so Kubernetes can verify runAsNonRoot"
        assert int(uid) != 0

    def test_listens_on_all_interfaces_on_the_exposed_port_with_a_healthcheck(
        self, name: str
    ) -> None:
        image = dockerfile(name)
        env = image.env()
        (exposed,) = image.all("EXPOSE", image.runtime)
        if name == SIM:
            prefix, port, path = "OLLAMA_SIM_", SIM_PORT, "/api/version"
        else:
            spec = SPECS[name]
            prefix, path = spec.env_prefix, "/health"
            port = settings_class(spec).model_fields["port"].default
            assert port == spec.default_port
        assert int(exposed) == port
        assert env[f"{prefix}HOST"] == "0.0.0.0"
        assert env.get(f"{prefix}PORT", str(port)) == str(port)
        check = " ".join(image.healthcheck())
        assert "urllib.request" in check and f"{path}'" in check, check
        assert f"'{prefix}PORT', '{port}'" in check, "healthcheck probes another port"
