"""A database of the session's Redis, emptied before and after a test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis


@contextmanager
def flushed_redis(redis_url: str, db: int | None = None) -> Iterator[redis.Redis]:
    """A client on database ``db`` of the server at ``redis_url`` (the URL's own when
    None), emptied before and after; tests that may run beside others use their own db."""
    if db is None:
        client = redis.Redis.from_url(redis_url)
    else:
        kw = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs
        client = redis.Redis(host=kw["host"], port=kw["port"], db=db)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()
