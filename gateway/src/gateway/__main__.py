"""``python -m gateway`` / ``switchboard-gateway``: serve the gateway."""

from gateway.config import Settings
from switchboard_common import serve


def main() -> None:
    serve("gateway.main:create_app", Settings(), factory=True)


if __name__ == "__main__":
    main()
