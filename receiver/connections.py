"""Redis clients from ``KAYLE_REDIS_URL`` (and ``KAYLE_REDIS_PASSWORD_FILE``), for every process: one place
that knows how to connect, to one Redis or to the primary the sentinels name (docs/design.md: High availability).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from redis import Redis
from redis.asyncio import BlockingConnectionPool
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.backoff import NoBackoff
from redis.sentinel import Sentinel

if TYPE_CHECKING:
    from receiver.settings import Settings

SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
PLAIN_SCHEMES = ("redis://", "rediss://", "unix://")
SENTINEL_PORT = 26379
_SENTINEL_SHAPE = "redis+sentinel://[user:password@]host1:26379,host2:26379,.../<service>/<db>"


@dataclass(frozen=True)
class SentinelUrl:
    """A ``redis+sentinel://`` URL, parsed: the sentinels to ask, the service they monitor, the database."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    tls: bool  # rediss+sentinel: TLS to the primary and replicas (the sentinels are asked in clear)
    username: str | None
    password: str | None


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Parse a Sentinel URL; :class:`ValueError` says what is wrong with it."""
    scheme, _, rest = url.partition("://")
    rest = rest.split("?", 1)[0]
    netloc, _, path = rest.partition("/")
    credentials, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username, password = (unquote(user) or None, unquote(secret)) if colon else (None, unquote(user))
    sentinels = tuple(_host_port(part) for part in hosts.split(","))
    service, _, db = path.strip("/").partition("/")
    if not service:
        raise ValueError(f"names no service: write it as {_SENTINEL_SHAPE} (the name the sentinels monitor)")
    if not db.isdigit():
        raise ValueError(f"database {db!r} is not a number: write it as {_SENTINEL_SHAPE}")
    return SentinelUrl(sentinels, unquote(service), int(db), scheme == "rediss+sentinel", username, password)


def _host_port(part: str) -> tuple[str, int]:
    part = part.strip()
    if part.startswith("["):  # [IPv6]:port
        host, _, port = part[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = part.rpartition(":") if ":" in part else (part, "", "")
    if not host:
        raise ValueError(f"has an empty sentinel address in {part!r}: write it as {_SENTINEL_SHAPE}")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"has a bad port in sentinel address {part!r}: write it as {_SENTINEL_SHAPE}")
    return host, int(port) if port else SENTINEL_PORT


def check_url(url: str) -> None:
    """Raise :class:`ValueError` naming what to fix when ``url`` is not one we can connect with."""
    if url.startswith(SENTINEL_SCHEMES):
        parse_sentinel_url(url)
    elif not url.startswith(PLAIN_SCHEMES):
        raise ValueError(
            "must be a redis://, rediss://, unix:// URL, or a Sentinel URL "
            f"{_SENTINEL_SHAPE} (rediss+sentinel:// for TLS to the data nodes)"
        )


def _credentials(settings: Settings) -> dict[str, Any]:
    """The password from ``KAYLE_REDIS_PASSWORD_FILE``, when set (the URL then carries none: settings check it)."""
    from receiver.settings import redis_password

    password = redis_password(settings)
    return {} if password is None else {"password": password}


def _sentinel_target(url: str, settings: Settings) -> tuple[SentinelUrl, dict[str, Any]]:
    target = parse_sentinel_url(url)
    node: dict[str, Any] = {"db": target.db, "ssl": target.tls, "username": target.username}
    if target.password is not None:
        node["password"] = target.password
    node.update(_credentials(settings))
    return target, node


def sync_redis(settings: Settings, **options: Any) -> Redis:
    """A client of the configured Redis (the current primary, with Sentinel); ``options`` are redis-py's."""
    url = settings.redis_url
    if not url.startswith(SENTINEL_SCHEMES):
        return Redis.from_url(url, **_credentials(settings), **options)
    target, node = _sentinel_target(url, settings)
    timeouts = {k: v for k, v in options.items() if k.startswith("socket_")}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=timeouts or {"socket_timeout": 5}
    )
    client: Redis = sentinel.master_for(target.service, **node, **options)  # type: ignore[no-untyped-call]
    return client


class _BlockingSentinelPool(AsyncSentinelPool, BlockingConnectionPool):
    """Sentinel's pool (connections to whichever primary the sentinels name), bounded as the receiver's is."""


def async_redis(settings: Settings) -> AsyncRedis:
    """The receiver's client: it fails fast, so a dead Redis (or no known primary) answers 503 well inside
    Kayle's 15 s.

    The pool is bounded: under a burst, deliveries wait (up to 5 s) for one of 64 connections
    instead of each opening its own, which on a busy host ends in connect timeouts.
    """
    options: dict[str, Any] = {
        "max_connections": 64,
        "timeout": 5,
        "socket_timeout": 5,
        "socket_connect_timeout": 2,
        "retry": Retry(NoBackoff(), 1),
        "health_check_interval": 30,
    }
    url = settings.redis_url
    if not url.startswith(SENTINEL_SCHEMES):
        return AsyncRedis.from_pool(BlockingConnectionPool.from_url(url, **_credentials(settings), **options))
    target, node = _sentinel_target(url, settings)
    sentinel = AsyncSentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs={"socket_timeout": 2, "socket_connect_timeout": 2}
    )
    client: AsyncRedis = sentinel.master_for(
        target.service, connection_pool_class=_BlockingSentinelPool, **node, **options
    )
    return client


def display_url(url: str) -> str:
    """``url`` without its credentials, for messages (a password may hold any character: all before the last @)."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    return f"{scheme}{sep}***@{rest.rsplit('@', 1)[1]}"
