"""Switchboard inference service.

Ollama-backed chat, generation and embeddings with a fair admission queue.
"""
