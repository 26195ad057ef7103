"""HTTP side of the response cache: the ``Cache-Control`` request header and ``X-Cache``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header

from inference_service.services.inference import Generation
from inference_service.services.response_cache import CacheDirective


async def cache_directive(
    cache_control: Annotated[
        str | None,
        Header(
            description="`no-cache`: do not serve from the response cache (the answer is "
            "still stored); `no-store`: neither read nor write it. See docs/caching.md."
        ),
    ] = None,
) -> CacheDirective:
    return CacheDirective.from_header(cache_control)


CacheControl = Annotated[CacheDirective, Depends(cache_directive)]


def x_cache(gen: Generation) -> dict[str, str]:
    """``X-Cache``: ``HIT`` when the answer came from the response cache, ``MISS`` when it
    was looked up (or refreshed) and may be stored, ``BYPASS`` when the request is not
    cacheable (not deterministic, or ``Cache-Control: no-store``)."""
    return {"X-Cache": gen.cache_status}
