"""A small kustomize resolver: ``render(directory)`` builds a kustomization the way
``kustomize build`` does, for the features ``deploy/k8s`` uses. ``test_k8s_rendering``
cross-checks it against ``kubectl kustomize`` when kubectl is installed."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.support import read_env_file

KUSTOMIZATION_KEYS = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "labels",
    "configMapGenerator",
    "secretGenerator",
    "patches",
    "replicas",
    "images",
}
# Strategic-merge keys of the list fields used in these manifests.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}
WORKLOADS = {"Deployment", "StatefulSet"}


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def strategic_merge(target: Any, patch: Any) -> Any:
    """Kubernetes strategic merge patch, for maps, nulls and lists with merge keys."""
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return copy.deepcopy(patch)
    assert "$patch" not in patch, "only top-level `$patch: delete` is supported"
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, list) and key in MERGE_KEYS and key in merged:
            merge_key = MERGE_KEYS[key]
            items = [copy.deepcopy(item) for item in merged[key]]
            for item in value:
                index = next(
                    (i for i, old in enumerate(items) if old[merge_key] == item[merge_key]), None
                )
                if index is None:
                    items.append(copy.deepcopy(item))
                else:
                    items[index] = strategic_merge(items[index], item)
            merged[key] = items
        else:
            merged[key] = strategic_merge(merged.get(key), value)
    return merged


def pod_specs(resource: dict[str, Any]) -> list[dict[str, Any]]:
    if resource["kind"] in WORKLOADS:
        return [resource["spec"]["template"]["spec"]]
    return []


def containers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for spec in pod_specs(resource) for c in spec.get("containers", [])]


def image_name(image: str) -> str:
    name = image.split("@")[0]
    return name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name


def generate(
    entry: dict[str, Any], directory: Path, kind: str, existing: dict[str, Any] | None
) -> dict[str, Any]:
    assert set(entry) <= {"name", "behavior", "envs", "literals", "type"}, entry
    data: dict[str, str] = {}
    for env_file in entry.get("envs", []):
        path = directory / env_file
        if kind == "Secret" and path.name == "secrets.env":
            path = path.with_name("secrets.env.example")  # never read real secrets in tests
        data.update(read_env_file(path))
    for literal in entry.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    behavior = entry.get("behavior", "create")
    if behavior == "create":
        assert existing is None, f"{kind} {entry['name']} generated twice"
        resource: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": {"name": entry["name"]},
        }
        if kind == "Secret":
            resource["type"] = entry.get("type", "Opaque")
    else:
        assert existing is not None, f"{behavior}: no {kind} {entry['name']} to {behavior}"
        resource = copy.deepcopy(existing)
        if behavior == "replace":
            resource.pop("data", None)
    if kind == "Secret":
        data = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    resource["data"] = {**resource.get("data", {}), **data}
    return resource


def render(directory: Path) -> list[dict[str, Any]]:
    """Build a kustomization the way ``kustomize build`` does, for the features used here.

    Unknown kustomization fields, unmatched patches/replicas/images entries fail loudly.
    Generated ConfigMaps/Secrets keep their plain names (kustomize adds a content hash).
    """
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZATION_KEYS
    assert not unknown, f"{directory}: unsupported kustomization fields {unknown}"
    found: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        found += render(path) if path.is_dir() else load_docs(path)

    def find(kind: str, name: str) -> int | None:
        matches = [
            i for i, r in enumerate(found) if r["kind"] == kind and r["metadata"]["name"] == name
        ]
        assert len(matches) <= 1, f"{kind}/{name} defined twice"
        return matches[0] if matches else None

    for key, kind in (("configMapGenerator", "ConfigMap"), ("secretGenerator", "Secret")):
        for entry in kustomization.get(key, []):
            index = find(kind, entry["name"])
            resource = generate(entry, directory, kind, None if index is None else found[index])
            if index is None:
                found.append(resource)
            else:
                found[index] = resource

    for entry in kustomization.get("patches", []):
        assert set(entry) <= {"path", "patch"}, f"unsupported patch options {entry}"
        docs = (
            load_docs(directory / entry["path"])
            if "path" in entry
            else list(yaml.safe_load_all(entry["patch"]))
        )
        for patch in docs:
            index = find(patch["kind"], patch["metadata"]["name"])
            assert index is not None, f"patch targets missing {patch['kind']}/{patch['metadata']}"
            if patch.get("$patch") == "delete":
                del found[index]
            else:
                found[index] = strategic_merge(found[index], patch)

    if "namespace" in kustomization:
        for resource in found:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = kustomization["namespace"]

    for entry in kustomization.get("labels", []):
        assert not entry.get("includeSelectors") and not entry.get("includeTemplates"), entry
        for resource in found:
            labels = resource["metadata"].setdefault("labels", {})
            labels.update(entry["pairs"])

    for entry in kustomization.get("replicas", []):
        targets = [
            r for r in found if r["kind"] in WORKLOADS and r["metadata"]["name"] == entry["name"]
        ]
        assert targets, f"replicas: no workload named {entry['name']!r}"
        for resource in targets:
            resource["spec"]["replicas"] = entry["count"]

    for entry in kustomization.get("images", []):
        assert set(entry) <= {"name", "newName", "newTag", "digest"}, entry
        matched = [
            c for r in found for c in containers(r) if image_name(c["image"]) == entry["name"]
        ]
        assert matched, f"images: no container runs {entry['name']!r}"
        for container in matched:
            image = entry.get("newName", entry["name"])
            if "digest" in entry:
                image += "@" + entry["digest"]
            elif "newTag" in entry:
                image += ":" + entry["newTag"]
            container["image"] = image
    return found
