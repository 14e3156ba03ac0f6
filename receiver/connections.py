"""Redis clients from ``KAYLE_REDIS_URL``, for every process: one place that knows how to connect."""

from __future__ import annotations

from typing import Any

from redis import Redis
from redis.asyncio import BlockingConnectionPool
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def sync_redis(url: str, **options: Any) -> Redis:
    return Redis.from_url(url, **options)


def async_redis(url: str) -> AsyncRedis:
    """The receiver's client: it fails fast, so a dead Redis answers 503 well inside Kayle's 15 s.

    The pool is bounded: under a burst, deliveries wait (up to 5 s) for one of 64 connections
    instead of each opening its own, which on a busy host ends in connect timeouts.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=64,
        timeout=5,
        socket_timeout=5,
        socket_connect_timeout=2,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=30,
    )
    return AsyncRedis.from_pool(pool)


def display_url(url: str) -> str:
    """``url`` without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    return f"{scheme}{sep}***@{rest.split('@', 1)[1]}"
