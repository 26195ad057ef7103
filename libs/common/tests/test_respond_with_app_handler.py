"""``respond_with_app_handler``: raw ASGI code answering an exception as the app's routes would."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from starlette.types import Message

from switchboard_common.exception_handlers import (
    install_exception_handlers,
    respond_with_app_handler,
)
from switchboard_common.problems import NotFound


async def _answer(app: FastAPI, exc: Exception) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": "http", "method": "POST", "path": "/x", "raw_path": b"/x", "query_string": b"",
        "headers": [], "app": app,
    }  # fmt: skip
    await respond_with_app_handler(app, exc, scope, receive, send)
    return sent


async def test_the_nearest_handler_in_the_class_hierarchy_answers() -> None:
    app = FastAPI()
    install_exception_handlers(app)
    start, body = await _answer(app, NotFound("No such thing."))  # a ProblemError subclass
    assert start["status"] == 404
    assert (b"content-type", b"application/problem+json") in start["headers"]
    assert b'"detail":"No such thing."' in body["body"]
    start, _ = await _answer(app, KeyError("bug"))  # only the catch-all Exception handler
    assert start["status"] == 500


async def test_an_app_without_a_handler_lets_the_exception_through() -> None:
    with pytest.raises(NotFound):
        await _answer(FastAPI(), NotFound("No such thing."))
