"""``python -m ollama_sim`` = the ``ollama-sim`` console script."""

from .cli import main

main()
