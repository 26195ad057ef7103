"""Schema of the placeholder ping route."""

from pydantic import BaseModel


class Pong(BaseModel):
    service: str
    version: str
