"""Pydantic request/response schemas of the knowledge service."""
