"""``deploy/k8s`` security: hardened, bounded pods, only the gateway exposed, and
NetworkPolicies that allow exactly the documented traffic."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.k8s import app_name, container_port, named, of_kind, selected, workloads
from tests.deploy.kustomize import containers, image_name, pod_specs
from tests.deploy.support import IMAGES, OVERLAYS, SIM, SPECS

# ---------------------------------------------------------------------------------------
# Hardening and exposure
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_hardened_and_bounded(overlay: str) -> None:
    for workload in workloads(overlay):
        name = workload["metadata"]["name"]
        for spec in pod_specs(workload):
            assert spec["securityContext"]["runAsNonRoot"] is True, name
            assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
            # Service links would set e.g. AUTH_PORT=tcp://… and break the AUTH_ settings.
            assert spec.get("enableServiceLinks") is False, name
            assert spec.get("automountServiceAccountToken") is False, name
        for container in containers(workload):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), name
            if image_name(container["image"]) in IMAGES.values():
                tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
                assert tmp, f"{name}: read-only root needs a writable /tmp"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gateway_is_exposed(overlay: str) -> None:
    for service in of_kind(overlay, "Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", service["metadata"]
    for ingress in of_kind(overlay, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] == "gateway"
                ports = named(overlay, "Service", "gateway")["spec"]["ports"]
                assert backend["port"].get("name") in {p["name"] for p in ports}
    assert bool(of_kind(overlay, "Ingress")) == (overlay == "prod")


# ---------------------------------------------------------------------------------------
# NetworkPolicy
# ---------------------------------------------------------------------------------------


# Who may open connections to whom (ARCHITECTURE.md): "*" is anyone, in or outside.
EXPECTED_SOURCES = {
    "gateway": {"*"},
    "auth": {"gateway"},
    "inference": {"gateway", "knowledge", "memory"},
    "knowledge": {"gateway", "memory"},
    "memory": {"gateway"},
    "redis": {"gateway", "auth", "inference", "knowledge", "memory"},
    SIM: {"inference"},
}
PROMETHEUS = "namespace monitoring / prometheus"


def allowed_sources(overlay: str, policy: dict[str, Any]) -> set[str]:
    sources: set[str] = set()
    for rule in policy["spec"].get("ingress", []):
        if not rule.get("from"):
            sources.add("*")
        for peer in rule.get("from", []):
            if "namespaceSelector" in peer or "ipBlock" in peer:
                namespaces = peer.get("namespaceSelector", {}).get("matchLabels", {})
                assert namespaces == {"kubernetes.io/metadata.name": "monitoring"}, peer
                assert peer["podSelector"] == {
                    "matchLabels": {"app.kubernetes.io/name": "prometheus"}
                }, peer
                sources.add(PROMETHEUS)
                continue
            pods = selected(overlay, peer["podSelector"])
            assert pods, f"{policy['metadata']['name']}: a `from` selects no pod"
            sources |= {app_name(p) for p in pods}
    return sources


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_exactly_the_documented_traffic(overlay: str) -> None:
    policies = of_kind(overlay, "NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")]
    assert deny and deny[0]["spec"]["policyTypes"] == ["Ingress"], "no default-deny ingress"
    reachable: dict[str, set[str]] = {app_name(w): set() for w in workloads(overlay)}
    for policy in policies:
        if policy in deny:
            continue
        assert "Ingress" in policy["spec"]["policyTypes"]
        pods = selected(overlay, policy["spec"]["podSelector"])
        assert pods, f"{policy['metadata']['name']} selects no pod"
        sources = allowed_sources(overlay, policy)
        for pod in pods:
            reachable[app_name(pod)] |= sources
            for rule in policy["spec"]["ingress"]:
                for port in rule.get("ports", []):
                    assert any(container_port(c, port["port"]) for c in containers(pod)), (
                        f"{policy['metadata']['name']}: port {port['port']} not on {app_name(pod)}"
                    )
    expected = {name: set(EXPECTED_SOURCES[name]) for name in reachable}
    for name in SPECS:
        expected[name].add(PROMETHEUS)  # each replica is scraped directly
    assert reachable == expected
