"""``python -m knowledge_service`` / ``switchboard-knowledge``: serve the knowledge service."""

from knowledge_service.config import Settings
from switchboard_common import serve


def main() -> None:
    serve("knowledge_service.main:create_app", Settings(), factory=True)


if __name__ == "__main__":
    main()
