"""Dockerfiles read the way Docker reads them, and Docker's ``.dockerignore`` matching."""

from __future__ import annotations

import functools
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from tests.deploy.support import DOCKERFILES, ROOT


@dataclass
class Dockerfile:
    path: Path
    args: dict[str, str] = field(default_factory=dict)  # ARGs before the first FROM
    stages: list[list[tuple[str, str]]] = field(default_factory=list)

    @classmethod
    def parse(cls, path: Path) -> Dockerfile:
        parsed = cls(path)
        logical = ""
        for raw in path.read_text().splitlines():
            stripped = raw.strip()
            if stripped.startswith("#") or (not stripped and not logical):
                continue  # comments (also inside continuations) and blank lines
            if stripped.endswith("\\"):
                logical += stripped[:-1] + " "
                continue
            logical += stripped
            keyword, _, rest = logical.partition(" ")
            parsed.add(keyword.upper(), rest.strip())
            logical = ""
        assert not logical, f"{path}: dangling line continuation"
        return parsed

    def add(self, keyword: str, rest: str) -> None:
        if keyword == "FROM":
            self.stages.append([])
        elif not self.stages:
            assert keyword == "ARG", f"{self.path}: {keyword} before the first FROM"
            name, _, default = rest.partition("=")
            self.args[name] = default
            return
        self.stages[-1].append((keyword, rest))
        if keyword == "FROM":
            self.stages[-1][-1] = ("FROM", re.sub(r"\$\{?(\w+)\}?", self._arg, rest))

    def _arg(self, match: re.Match[str]) -> str:
        return self.args[match.group(1)]

    @property
    def runtime(self) -> list[tuple[str, str]]:
        return self.stages[-1]

    def all(self, keyword: str, stage: list[tuple[str, str]] | None = None) -> list[str]:
        stages = [stage] if stage is not None else self.stages
        return [rest for s in stages for kw, rest in s if kw == keyword]

    def env(self) -> dict[str, str]:
        """The runtime stage's ENV, as the container starts with it."""
        values: dict[str, str] = {}
        for rest in self.all("ENV", self.runtime):
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                values[key] = value
        return values

    def exec_form(self, keyword: str) -> list[str]:
        (rest,) = self.all(keyword, self.runtime)
        value = json.loads(rest)
        assert isinstance(value, list), f"{self.path}: {keyword} must use the exec (JSON) form"
        return value

    def healthcheck(self) -> list[str]:
        (rest,) = self.all("HEALTHCHECK", self.runtime)
        return json.loads(rest[rest.index("CMD") + 3 :])

    def copy_sources(self) -> list[str]:
        found = []
        for rest in self.all("COPY"):
            words = [w for w in shlex.split(rest) if not w.startswith("--")]
            if "--from=" not in rest:
                found += words[:-1]
        return found


@functools.cache
def dockerfile(name: str) -> Dockerfile:
    return Dockerfile.parse(DOCKERFILES[name])


@functools.cache
def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((negate, re.compile(regex)))
    return rules


def dockerignored(relative: str) -> bool:
    """Docker's rule: a path is excluded when it or one of its parents matches (last wins)."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negate, regex in dockerignore_rules():
        if any(regex.fullmatch(c) for c in candidates):
            excluded = not negate
    return excluded
