"""Fixtures: one real simulator subprocess (uvicorn, via the CLI) per test session.

Each test starts from a clean simulator (``POST /_sim/reset``) and talks to it over HTTP.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from simtools import Sim


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def sim_server() -> Iterator[tuple[str, Path]]:
    for _attempt in range(3):
        port = _free_port()
        out = Path(tempfile.mkstemp(prefix="ollama-sim-", suffix=".log")[1])
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with out.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ollama_sim", "--port", str(port)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
            )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(base + "/", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        if proc.poll() is None:
            break
    else:
        pytest.fail("could not start the simulator:\n" + out.read_text())
    try:
        yield base, out
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        out.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def sim_client(sim_server: tuple[str, Path]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim_server[0], timeout=10) as client:
        yield client


@pytest.fixture
def sim(sim_server: tuple[str, Path], sim_client: httpx.Client) -> Iterator[Sim]:
    """A clean simulator: reset before and after the test."""
    base, out = sim_server
    r = sim_client.post("/_sim/reset")
    assert r.status_code == 200, r.text
    yield Sim(base, sim_client, out)
    sim_client.post("/_sim/reset")
