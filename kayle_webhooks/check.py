"""``kayle-webhooks check``: is this deployment ready? Every problem, each with its fix, in one run.

Warnings (such as Redis persistence being off) are printed but do not make it fail.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from redis import Redis
from redis.exceptions import RedisError

from receiver import error_reports, tracing
from receiver.connections import display_url, sync_redis
from receiver.persistence import FIX, WARNING, eviction_finding, read_eviction_policy, read_persistence
from receiver.settings import ConfigError, Settings, keyring_of, read_settings, signing_secrets
from workers.plugins import handler_lines, load_handlers, unknown_type_warnings


@dataclass
class Report:
    problems: int = 0
    lines: list[str] = field(default_factory=list)

    def ok(self, text: str) -> None:
        self.lines.append(f"ok    {text}")

    def warn(self, text: str, fix: str) -> None:
        self.lines.append(f"WARN  {text}\n      fix: {fix}")

    def fail(self, text: str, fix: str) -> None:
        self.problems += 1
        self.lines.append(f"FAIL  {text}\n      fix: {fix}")

    @property
    def ready(self) -> bool:
        return not self.problems


def check() -> Report:
    report = Report()
    try:
        settings = read_settings()
    except ConfigError as error:
        report.fail(f"configuration: {error}", _FIX_VARIABLE)
        return report
    for part in (_check_secrets, _check_keys, _check_redis, _check_handlers, _check_telemetry):
        part(report, settings)
    return report


_FIX_VARIABLE = "set the variable named above (environment or ./.env), then re-run"


def _check_secrets(report: Report, settings: Settings) -> None:
    try:
        secrets = signing_secrets(settings)
    except ConfigError as error:
        report.fail(f"configuration: {error}", _FIX_VARIABLE)
        return
    report.ok(f"configuration: {len(secrets)} signing secret(s), POST path {settings.path}")


def _check_keys(report: Report, settings: Settings) -> None:
    try:
        keys = keyring_of(settings)
    except ConfigError as error:
        report.fail(f"keys: {error}", "point KAYLE_KEY_DIR at the directory of <kid>.pem private keys")
        return
    for info in keys.infos():
        report.ok(f"key {info.kid}: RSA {info.bits} bits, fingerprint {info.fingerprint}")
    for warning, fix in keys.warnings:
        report.fail(warning, fix)  # the service starts, with a warning: a deployment is not ready with it


def _check_redis(report: Report, settings: Settings) -> None:
    url = display_url(settings.redis_url)
    client = sync_redis(settings, socket_connect_timeout=3, socket_timeout=5)
    try:
        version = client.info("server").get("redis_version", "?")
        persistence = read_persistence(client)
        policy = read_eviction_policy(client)
        replicas = int(client.info("replication").get("connected_slaves", 0))
    except (RedisError, OSError) as error:
        report.fail(
            f"Redis at {url} is unreachable ({type(error).__name__})",
            "start Redis or set KAYLE_REDIS_URL to one that answers",
        )
        return
    finally:
        client.close()
    report.ok(f"Redis {version} reachable at {url}")
    if persistence.off:
        report.warn(WARNING, FIX)
    elif persistence.aof is None:
        report.warn(
            "Redis persistence could not be read (CONFIG is not allowed)",
            "make sure your Redis provider persists data (AOF preferred)",
        )
    else:
        report.ok(f"Redis persistence on: {persistence.summary}")
    finding = eviction_finding(policy)
    if finding is None:
        report.ok("Redis maxmemory-policy noeviction: markers and jobs are never evicted")
    elif finding.loses:
        report.fail(finding.text, finding.fix)
    else:
        report.warn(finding.text, finding.fix)
    wanted = settings.redis_min_replicas
    if wanted and replicas < wanted:
        report.fail(
            f"KAYLE_REDIS_MIN_REPLICAS is {wanted} but the Redis primary has {replicas} connected replica(s): "
            "every event would be answered 503 not_replicated",
            "start the replicas (and check their replicaof/masterauth), or lower KAYLE_REDIS_MIN_REPLICAS",
        )
    elif wanted:
        report.ok(f"Redis primary has {replicas} connected replica(s); events wait for {wanted}")
    exposed = _open_to_the_network(settings.redis_url)
    if exposed:
        report.warn(
            f"Redis at {exposed} answers clients without a password on an address other hosts can reach: anyone "
            "who reaches it can drop, replay or inject events",
            "require a password or an ACL user (README: Security), keep Redis on a private network, use rediss://",
        )


def _open_to_the_network(url: str) -> str | None:
    """``host:port`` when the Redis of ``url`` is on a non-loopback address and accepts a client without
    credentials; ``None`` otherwise (loopback, a Unix socket, a Sentinel URL, or authentication required)."""
    if not url.startswith(("redis://", "rediss://")):
        return None
    where = urlsplit(url)
    host, port = where.hostname or "localhost", where.port or 6379
    try:
        if ipaddress.ip_address(socket.gethostbyname(host)).is_loopback:
            return None
    except (OSError, ValueError):
        return None
    anonymous = Redis(host=host, port=port, ssl=url.startswith("rediss://"), socket_timeout=3, socket_connect_timeout=3)
    try:
        anonymous.ping()
    except (RedisError, OSError):
        return None  # NOAUTH (a password is required) or unreachable: not open
    finally:
        anonymous.close()
    return f"{host}:{port}"


def _check_handlers(report: Report, settings: Settings) -> None:
    try:
        registry = load_handlers(settings)
    except ConfigError as error:
        report.fail(str(error), "install the plugin or fix the import error, or remove it from KAYLE_HANDLERS")
        return
    lines = handler_lines(registry)
    if not lines:
        report.fail(
            "no handlers found: a worker would refuse to start",
            "install a plugin (entry point kayle_webhooks.handlers) or list modules in KAYLE_HANDLERS",
        )
    for line in lines:
        report.ok(f"handlers for {line}")
    for warning, fix in unknown_type_warnings(registry):
        report.warn(warning, fix)


def _check_telemetry(report: Report, settings: Settings) -> None:
    exporters = tracing.exporters_requested(os.environ)
    if exporters and not tracing.sdk_installed():
        report.warn(tracing.NO_SDK, tracing.NO_SDK_FIX)
    elif exporters:
        report.ok(f"tracing on: {', '.join(exporters)}")
    if settings.sentry_dsn is not None and not error_reports.sdk_installed():
        report.fail("error reports: KAYLE_SENTRY_DSN is set but sentry-sdk is not installed", error_reports.SENTRY_FIX)
    elif settings.sentry_dsn is not None:
        report.ok("error reports to Sentry (KAYLE_SENTRY_DSN)")
