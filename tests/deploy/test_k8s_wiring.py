"""``deploy/k8s`` wiring: selectors, ports, probes, ConfigMap/Secret/volume references,
internal URLs, the services' settings from the rendered environment, Prometheus scraping."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from switchboard_devtools.cluster import GATEWAY, SERVICES
from tests.deploy.k8s import (
    app_name,
    container_env,
    container_port,
    named,
    of_kind,
    pod_labels,
    selected,
    selects,
    service_container,
    workloads,
)
from tests.deploy.kustomize import containers, image_name, pod_specs
from tests.deploy.support import (
    IMAGES,
    K8S_DIR,
    OVERLAYS,
    SECRET_NAME,
    SPECS,
    build_settings,
    check_required_settings,
    fill_secrets,
    internal_urls,
    read_env_file,
    secret_fields,
    settings_class,
)

# ---------------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_select_pods_and_target_their_ports(overlay: str) -> None:
    for service in of_kind(overlay, "Service"):
        name = service["metadata"]["name"]
        pods = selected(overlay, service["spec"]["selector"])
        assert pods, f"Service {name} selects no pod"
        for port in service["spec"]["ports"]:
            for pod in pods:
                target = port.get("targetPort", port["port"])
                assert any(container_port(c, target) for c in containers(pod)), (
                    f"Service {name}: targetPort {target} is not a port of {app_name(pod)}"
                )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workload_selectors_match_their_own_pods(overlay: str) -> None:
    for workload in workloads(overlay):
        assert selects(workload["spec"]["selector"], pod_labels(workload))
        others = [w for w in selected(overlay, workload["spec"]["selector"]) if w is not workload]
        assert not others, f"{workload['metadata']['name']} selector also selects {others}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_use_declared_ports_and_the_right_endpoints(overlay: str) -> None:
    for workload in workloads(overlay):
        for container in containers(workload):
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in container, f"{container['name']}: no {probe}"
                action = container[probe]
                for kind in ("httpGet", "tcpSocket"):
                    if kind in action:
                        port = action[kind]["port"]
                        assert container_port(container, port), f"{container['name']}: {probe}"
            if app_name(workload) in SPECS:
                assert container["livenessProbe"]["httpGet"]["path"] == "/health"
                assert container["startupProbe"]["httpGet"]["path"] == "/health"
                assert container["readinessProbe"]["httpGet"]["path"] == "/ready"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_secret_and_volume_references_exist(overlay: str) -> None:
    for workload in workloads(overlay):
        name = workload["metadata"]["name"]
        for container in containers(workload):
            container_env(overlay, container)  # raises on a missing ConfigMap/Secret/key
            mounts = {m["name"] for m in container.get("volumeMounts", [])}
            volumes = {v["name"] for spec in pod_specs(workload) for v in spec.get("volumes", [])}
            claims = {
                t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])
            }
            assert mounts <= volumes | claims, f"{name}: mounts without volume"
        for spec in pod_specs(workload):
            for volume in spec.get("volumes", []):
                if "persistentVolumeClaim" in volume:
                    claim = volume["persistentVolumeClaim"]["claimName"]
                    named(overlay, "PersistentVolumeClaim", claim)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_internal_urls_point_at_services_and_their_ports(overlay: str) -> None:
    services = {s["metadata"]["name"]: s for s in of_kind(overlay, "Service")}
    for workload in workloads(overlay):
        for container in containers(workload):
            env, _ = container_env(overlay, container)
            for key, url in internal_urls(env):
                host = urlsplit(url).hostname or ""
                if "." in host:
                    continue  # outside the namespace (another namespace or external)
                assert host in services, f"{overlay}: {key}={url}: no Service {host}"
                ports = {p["port"] for p in services[host]["spec"]["ports"]}
                assert urlsplit(url).port in ports, f"{overlay}: {key}={url}: port"


# ---------------------------------------------------------------------------------------
# The services' settings
# ---------------------------------------------------------------------------------------


SERVICE_CASES = [(o, n) for o in OVERLAYS for n in sorted(SPECS)]


@pytest.mark.parametrize(("overlay", "name"), SERVICE_CASES)
def test_settings_validate_with_the_rendered_environment(
    overlay: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = SPECS[name]
    container = service_container(overlay, name)
    assert image_name(container["image"]) == IMAGES[name]
    env, from_secrets = container_env(overlay, container)
    check_required_settings(spec, set(env), overlay)
    for var in set().union(*secret_fields(settings_class(spec)).values()) & set(env):
        assert var in from_secrets, f"{overlay}: {var} must come from a Secret"
    env = {k: fill_secrets({k: v})[k] if k in from_secrets else v for k, v in env.items()}
    settings = build_settings(spec, env, monkeypatch)
    assert settings.environment == ("development" if overlay == "dev" else "production")
    assert settings.host == "0.0.0.0"
    assert settings.port == container_port(container, "http")
    if spec is GATEWAY:
        for service in SERVICES:
            url = urlsplit(settings.upstream_urls()[service.name])
            assert url.hostname == service.name
            assert url.port == container_port(service_container(overlay, service.name), "http")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmaps_hold_no_secrets_and_examples_list_every_secret_key(overlay: str) -> None:
    for config in of_kind(overlay, "ConfigMap"):
        leaked = [k for k in config["data"] if SECRET_NAME.search(k)]
        assert not leaked, f"{overlay}: secret-looking keys in a ConfigMap: {leaked}"
    used = {
        item["valueFrom"]["secretKeyRef"]["key"]
        for w in workloads(overlay)
        for c in containers(w)
        for item in c.get("env", [])
        if "secretKeyRef" in item.get("valueFrom", {})
    }
    example = K8S_DIR / "overlays" / overlay / "secrets.env.example"
    assert set(read_env_file(example)) == used, f"{example.name} vs secretKeyRefs"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_are_annotated_for_prometheus(overlay: str) -> None:
    for name in SPECS:
        deployment = named(overlay, "Deployment", name)
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        port = container_port(service_container(overlay, name), "http")
        assert annotations == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(port),
            "prometheus.io/path": "/metrics",
        }
