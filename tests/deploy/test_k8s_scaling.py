"""``deploy/k8s`` overlays and scaling: replicas, environments and pinned images per
overlay, autoscalers and disruption budgets, no shared ReadWriteOnce state."""

from __future__ import annotations

import pytest

from tests.deploy.k8s import (
    app_name,
    container_env,
    named,
    of_kind,
    selected,
    service_container,
    workloads,
)
from tests.deploy.kustomize import containers, image_name, pod_specs
from tests.deploy.support import IMAGES, OVERLAYS, SPECS


@pytest.mark.parametrize(
    ("overlay", "replicas", "environment", "tag"),
    [
        ("dev", dict.fromkeys(SPECS, 1), "development", "dev"),
        ("prod", {**dict.fromkeys(SPECS, 2), "gateway": 3}, "production", "0.1.0"),
    ],
)
def test_overlay_replicas_environment_and_images(
    overlay: str, replicas: dict[str, int], environment: str, tag: str
) -> None:
    for name, count in replicas.items():
        assert named(overlay, "Deployment", name)["spec"]["replicas"] == count, name
        env, _ = container_env(overlay, service_container(overlay, name))
        assert env[f"{SPECS[name].env_prefix}ENVIRONMENT"] == environment
    for workload in workloads(overlay):
        for container in containers(workload):
            image = container["image"]
            pinned = "@sha256:" in image or (":" in image.rsplit("/", 1)[-1])
            assert pinned and not image.endswith(":latest"), f"{overlay}: unpinned {image}"
            if image_name(image) in IMAGES.values():
                assert image == f"{image_name(image)}:{tag}", f"{overlay}: {image}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_and_inference_autoscale_within_their_replicas(overlay: str) -> None:
    autoscalers = {h["metadata"]["name"]: h for h in of_kind(overlay, "HorizontalPodAutoscaler")}
    budgets = of_kind(overlay, "PodDisruptionBudget")
    assert set(autoscalers) == {"gateway", "inference"}
    for hpa in autoscalers.values():
        ref = hpa["spec"]["scaleTargetRef"]
        target = named(overlay, ref["kind"], ref["name"])
        low, high = hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]
        assert low <= target["spec"]["replicas"] <= high, f"{ref['name']} replicas vs HPA"
    covered = {app_name(w) for b in budgets for w in selected(overlay, b["spec"]["selector"])}
    assert covered == {"gateway", "inference"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scaled_deployments_keep_no_readwriteonce_state(overlay: str) -> None:
    for deployment in of_kind(overlay, "Deployment"):
        claims = [
            v for s in pod_specs(deployment) for v in s["volumes"] if "persistentVolumeClaim" in v
        ]
        if deployment["spec"]["replicas"] > 1:
            assert not claims, f"{deployment['metadata']['name']}: replicas share a RWO volume"
        if claims:
            assert deployment["spec"]["strategy"]["type"] == "Recreate"
    if overlay == "prod":
        env, from_secrets = container_env(overlay, service_container(overlay, "auth"))
        assert "AUTH_DATABASE_URL" in from_secrets, "several auth replicas need PostgreSQL"
        assert env["AUTH_DATABASE_URL"].startswith("postgresql")
