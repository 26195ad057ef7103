"""Pydantic request/response schemas of the memory service."""
