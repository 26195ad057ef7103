"""Server processes freeze their startup objects (out of the collector's full passes);
apps built elsewhere (tests) do not."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from switchboard_common import ServiceSettings, create_service_app
from switchboard_common import app as app_module


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_a_server_process_freezes_what_startup_left_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(app_module._freeze, "after_startup", True)  # as serve() does
    app = create_service_app(ServiceSettings(), title="t")
    assert gc.get_freeze_count() == 0
    with TestClient(app):
        assert gc.get_freeze_count() > 1000  # modules, the app, its routes and models


def test_an_app_built_outside_serve_leaves_the_collector_alone() -> None:
    with TestClient(create_service_app(ServiceSettings(), title="t")):
        assert gc.get_freeze_count() == 0
