"""Pydantic request/response schemas of the inference service."""
