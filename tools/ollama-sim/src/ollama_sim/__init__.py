"""ollama-sim: a protocol-faithful Ollama server simulator (a test double, not a real LLM).

Public entry points: :func:`ollama_sim.app.create_app`, :class:`ollama_sim.config.SimConfig`,
:func:`ollama_sim.tokens.count_tokens` (the tokeniser rule) and the ``ollama-sim`` CLI.
"""

from .app import VERSION, create_app
from .config import SimConfig
from .tokens import count_tokens

__all__ = ["VERSION", "SimConfig", "count_tokens", "create_app"]
__version__ = "0.1.0"
