"""``ollama-sim`` command line: every :class:`SimConfig` knob as a flag, env vars as fallback.

Precedence per knob: ``--flag`` > ``OLLAMA_SIM_<KNOB>`` > default.  ``--host``/``--port`` fall
back to ``OLLAMA_SIM_HOST``/``OLLAMA_SIM_PORT`` (defaults ``127.0.0.1``/``11434``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from .config import ENV_PREFIX, FAIL_MODES, SimConfig

BANNER_TITLE = "OLLAMA SIMULATOR — simulated model, not a real LLM"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11434


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ollama-sim",
        description="Protocol-faithful Ollama server simulator (a test double, not an LLM).",
    )
    parser.add_argument("--host", default=None, help=f"bind address (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=None, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--log-level", default=None, help="uvicorn log level (default warning)")
    for name, field in SimConfig.model_fields.items():
        env = ENV_PREFIX + name.upper()
        help_text = f"{field.description} (env {env}, default {field.default})"
        flag = "--" + name.replace("_", "-")
        if name == "fail_mode":
            parser.add_argument(flag, dest=name, default=None, choices=FAIL_MODES, help=help_text)
        else:
            parser.add_argument(
                flag,
                dest=name,
                default=None,
                type=float if field.annotation is float else int,
                help=help_text,
            )
    return parser


def resolve(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> tuple[SimConfig, str, int, str]:
    """Parse ``argv`` with ``env`` fallbacks into (config, host, port, log level)."""
    env = os.environ if env is None else env
    parser = build_parser()
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    for name in SimConfig.model_fields:
        value = getattr(args, name)
        if value is None:
            value = env.get(ENV_PREFIX + name.upper())
        if value is not None:
            values[name] = value
    try:
        config = SimConfig.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        parser.error(f"invalid value for {first['loc'][0]}: {first['msg']}")
    host = args.host or env.get(ENV_PREFIX + "HOST") or DEFAULT_HOST
    try:
        port = (
            args.port if args.port is not None else int(env.get(ENV_PREFIX + "PORT", DEFAULT_PORT))
        )
    except ValueError:
        parser.error(f"invalid {ENV_PREFIX}PORT")
    log_level = args.log_level or env.get(ENV_PREFIX + "LOG_LEVEL") or "warning"
    return config, host, port, log_level


def banner(config: SimConfig, host: str, port: int) -> str:
    knobs = " ".join(f"{k}={v}" for k, v in config.model_dump().items())
    rule = "=" * 72
    return "\n".join(
        [
            rule,
            f"  {BANNER_TITLE}",
            f"  listening on http://{host}:{port}   (reports version 0.12.0-sim)",
            f"  knobs: {knobs}",
            "  admin: GET/POST /_sim/config   POST /_sim/reset   GET /_sim/stats",
            rule,
        ]
    )


def _print_banner(text: str) -> None:
    try:
        print(text, flush=True)
    except UnicodeEncodeError:
        print(text.replace("—", "-"), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    from .app import create_app

    config, host, port, log_level = resolve(argv)
    _print_banner(banner(config, host, port))
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        access_log=False,
        log_level=log_level,
        # Hanging / slow requests must not keep a stopping simulator alive.
        timeout_graceful_shutdown=1,
    )


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
