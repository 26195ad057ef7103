"""Queries over the rendered overlays: resources by kind and name, label selectors,
container ports and each container's environment."""

from __future__ import annotations

import base64
import functools
from typing import Any

from tests.deploy.docker import dockerfile
from tests.deploy.kustomize import WORKLOADS, containers, image_name, render
from tests.deploy.support import IMAGES, K8S_DIR


@functools.cache
def rendered(overlay: str) -> list[dict[str, Any]]:
    return render(K8S_DIR / "overlays" / overlay)


def of_kind(overlay: str, *kinds: str) -> list[dict[str, Any]]:
    return [r for r in rendered(overlay) if r["kind"] in kinds]


def named(overlay: str, kind: str, name: str) -> dict[str, Any]:
    (resource,) = [r for r in of_kind(overlay, kind) if r["metadata"]["name"] == name]
    return resource


def workloads(overlay: str) -> list[dict[str, Any]]:
    return of_kind(overlay, *WORKLOADS)


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels/matchExpressions, or a plain map)."""
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value, operator = labels.get(expression["key"]), expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if operator == "Exists" and value is None:
            return False
        if operator == "DoesNotExist" and value is not None:
            return False
    return True


def selected(overlay: str, selector: dict[str, Any]) -> list[dict[str, Any]]:
    return [w for w in workloads(overlay) if selects(selector, pod_labels(w))]


def app_name(workload: dict[str, Any]) -> str:
    return pod_labels(workload)["app.kubernetes.io/name"]


def container_port(container: dict[str, Any], port: int | str) -> int | None:
    for declared in container.get("ports", []):
        if port in (declared.get("name"), declared["containerPort"]):
            return int(declared["containerPort"])
    return None


def secret_values(overlay: str, name: str) -> dict[str, str]:
    data = named(overlay, "Secret", name)["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def container_env(overlay: str, container: dict[str, Any]) -> tuple[dict[str, str], set[str]]:
    """The container's environment (image ENV, envFrom, env) and the names set from Secrets."""
    owners = [n for n, image in IMAGES.items() if image_name(container["image"]) == image]
    env = dockerfile(owners[0]).env() if owners else {}
    from_secrets: set[str] = set()
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(named(overlay, "ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            values = secret_values(overlay, source["secretRef"]["name"])
            env.update(values)
            from_secrets |= set(values)
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif "secretKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secret_values(overlay, ref["name"])[ref["key"]]
            from_secrets.add(item["name"])
        else:
            ref = item["valueFrom"]["configMapKeyRef"]
            env[item["name"]] = named(overlay, "ConfigMap", ref["name"])["data"][ref["key"]]
    return env, from_secrets


def service_container(overlay: str, name: str) -> dict[str, Any]:
    (container,) = containers(named(overlay, "Deployment", name))
    return container
