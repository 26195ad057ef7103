"""``deploy/k8s`` rendering: the resolver against ``kubectl kustomize``, every resource
against the Kubernetes JSON schemas (strict), and the base kustomization on its own."""

from __future__ import annotations

import base64
import copy
import re
import shutil
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.k8s import rendered
from tests.deploy.kustomize import render
from tests.deploy.support import K8S_DIR, K8S_VERSION, OVERLAYS


def normalized(docs: list[dict[str, Any]]) -> dict[tuple[str, str], Any]:
    """Comparable form: generated-name hashes stripped, named lists sorted, keyed by kind/name."""
    renames: dict[str, str] = {}
    docs = copy.deepcopy(docs)
    for doc in docs:
        if doc["kind"] == "Secret":  # kustomize wraps long base64 lines: compare decoded
            doc["data"] = {k: base64.b64decode(v).decode() for k, v in doc["data"].items()}
        if doc["kind"] in ("ConfigMap", "Secret"):
            plain = re.sub(r"-[a-z0-9]{10}$", "", doc["metadata"]["name"])
            renames[doc["metadata"]["name"]] = plain

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            items = [walk(v) for v in value]
            if items and all(isinstance(i, dict) and "name" in i for i in items):
                items.sort(key=lambda i: str(i["name"]))
            return items
        return renames.get(value, value) if isinstance(value, str) else value

    return {
        (d["kind"], renames.get(d["metadata"]["name"], d["metadata"]["name"])): walk(d)
        for d in docs
    }


@pytest.fixture(scope="module")
def kubectl_renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the resolver is not cross-checked")
    tree = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S_DIR, tree, ignore=shutil.ignore_patterns("secrets.env"))
    out = {}
    for overlay in OVERLAYS:
        directory = tree / "overlays" / overlay
        shutil.copy(directory / "secrets.env.example", directory / "secrets.env")
        result = subprocess.run(
            [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr[-2000:]
        out[overlay] = [d for d in yaml.safe_load_all(result.stdout) if d]
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_resolver_renders_what_kubectl_kustomize_renders(
    overlay: str, kubectl_renders: dict[str, list[dict[str, Any]]]
) -> None:
    ours, theirs = normalized(rendered(overlay)), normalized(kubectl_renders[overlay])
    assert sorted(ours) == sorted(theirs)
    for key, resource in ours.items():
        assert resource == theirs[key], f"{overlay}: {key} differs from kubectl kustomize"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_resources_are_valid_kubernetes_objects(overlay: str) -> None:
    seen = set()
    for resource in rendered(overlay):
        assert {"apiVersion", "kind", "metadata"} <= set(resource)
        key = (resource["kind"], resource["metadata"].get("name"))
        assert key[1], f"{resource['kind']} without metadata.name"
        assert key not in seen, f"{key} defined twice"
        seen.add(key)
        try:
            kubernetes_validate.validate(resource, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(map(str, exc.absolute_path))
            pytest.fail(f"{overlay}: {key[0]}/{key[1]} at {where}: {exc.message}")


def test_base_kustomization_renders_alone_except_for_the_overlay_secret() -> None:
    base = render(K8S_DIR / "base")
    assert not [r for r in base if r["kind"] == "Secret"], "secrets belong to the overlays"
    assert [r["metadata"]["name"] for r in base if r["kind"] == "ConfigMap"] == [
        "switchboard-config"
    ]
