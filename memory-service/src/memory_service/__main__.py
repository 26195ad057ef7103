"""``python -m memory_service`` / ``switchboard-memory``: serve the memory service."""

from memory_service.config import Settings
from switchboard_common import serve


def main() -> None:
    serve("memory_service.main:create_app", Settings(), factory=True)


if __name__ == "__main__":
    main()
