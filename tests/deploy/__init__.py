"""Offline validation of everything under ``deploy/`` and of the images' Dockerfiles.

Nothing here needs Docker, a cluster or the network. The checks read the files the way the
tools would and compare them with the code they deploy:

- Dockerfiles: base image, locked ``uv sync`` of a real workspace member, every COPY
  source present and not excluded by ``.dockerignore``, CMD runs a package of the repo,
  EXPOSE/HEALTHCHECK/``<PREFIX>HOST`` agree with the service's Settings.
- Compose: the Compose-spec JSON schema (vendored in ``check-jsonschema``), build contexts,
  ``depends_on`` targets, published ports, ``${VARS}`` against ``.env.example``, and each
  service's effective environment validated by its own ``Settings`` class in production.
- Traefik: every public prefix of the gateway's route table reaches the right service
  through the dynamic config, with the gateway's forwardAuth in front.
- Kubernetes: each overlay rendered by a small kustomize resolver (kustomize.py; cross-checked
  against ``kubectl kustomize`` when kubectl is installed), validated against the
  Kubernetes JSON schemas shipped in ``kubernetes-validate`` (strict: unknown fields fail),
  then checked for references (selectors, ports, ConfigMaps, Secrets, claims), settings,
  security context, autoscaling and NetworkPolicy reachability.

Layout: helpers without tests in ``support`` (paths, the services, env files, Settings),
``docker`` (Dockerfile reader, .dockerignore), ``compose`` (compose.yaml as Compose reads
it), ``kustomize`` (the resolver) and ``k8s`` (queries over the rendered overlays); the
checks in ``test_dockerfiles``, ``test_compose``, ``test_traefik`` and ``test_k8s_*``.
"""
