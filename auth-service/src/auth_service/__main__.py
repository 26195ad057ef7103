"""``python -m auth_service`` / ``switchboard-auth``: serve the auth service.

``switchboard-auth rotate-signing-key`` rotates the signing key from the command line
(same effect as ``POST /auth/admin/signing-keys/rotate``) and prints the new key ids.
"""

from __future__ import annotations

import asyncio
import sys

from auth_service.config import Settings
from switchboard_common import serve


async def rotate_signing_key(settings: Settings) -> str:
    from auth_service.db.engine import create_engine, create_session_factory
    from auth_service.db.migrate import apply_migrations
    from auth_service.lifespan import key_ring

    engine = create_engine(settings.resolved_database_url)
    try:
        await apply_migrations(engine)
        keyring = key_ring(settings, create_session_factory(engine))
        await keyring.ensure_keys()
        rotation = await keyring.rotate()
    finally:
        await engine.dispose()
    return (
        f"current: {rotation.current_kid}\nretired: {rotation.retired_kid}\n"
        f"next: {rotation.next_kid}"
    )


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    settings = Settings()
    if args == ["rotate-signing-key"]:
        print(asyncio.run(rotate_signing_key(settings)))
        return
    if args:
        sys.exit(f"usage: switchboard-auth [rotate-signing-key] (got: {' '.join(args)})")
    serve("auth_service.main:create_app", settings, factory=True)


if __name__ == "__main__":
    main()
