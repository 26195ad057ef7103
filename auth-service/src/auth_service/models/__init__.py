"""Pydantic request/response schemas of the auth service."""
