"""``python -m inference_service`` / ``switchboard-inference``: serve the inference service."""

from inference_service.config import Settings
from switchboard_common import serve


def main() -> None:
    serve("inference_service.main:create_app", Settings(), factory=True)


if __name__ == "__main__":
    main()
