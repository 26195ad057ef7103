"""``python -m auth_service`` / ``switchboard-auth``: serve the auth service."""

from auth_service.config import Settings
from switchboard_common import serve


def main() -> None:
    serve("auth_service.main:create_app", Settings(), factory=True)


if __name__ == "__main__":
    main()
