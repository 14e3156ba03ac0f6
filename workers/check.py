"""``kayle-webhooks check``: is this deployment ready? Every problem comes with its fix.

Exit status 0 only when ready; warnings (such as Redis persistence being off)
are printed but do not make it fail.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from redis import Redis
from redis.exceptions import RedisError

from receiver.persistence import FIX, WARNING, read_persistence
from receiver.settings import Config, ConfigError, load_config
from workers.plugins import describe_handlers, load_handlers


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


def check_command(args: argparse.Namespace) -> int:
    report = Report()
    config = _check_configuration(report)
    if config is not None:
        _check_redis(report, config)
        _check_handlers(report, config)
    print("\n".join(report.lines))
    print("ready" if not report.problems else f"not ready: {report.problems} problem(s)")
    return 0 if not report.problems else 1


def _check_configuration(report: Report) -> Config | None:
    try:
        config = load_config()
    except ConfigError as error:
        report.fail(f"configuration: {error}", "set the variable named above (environment or ./.env), then re-run")
        return None
    settings = config.settings
    report.ok(f"configuration: {len(config.secrets)} signing secret(s), POST path {settings.path}")
    for info in config.keyring.describe():
        report.ok(f"key {info.kid}: RSA {info.bits} bits, fingerprint {info.fingerprint}")
    return config


def _check_redis(report: Report, config: Config) -> None:
    url = config.settings.redis_url
    client = Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)
    try:
        version = client.info("server").get("redis_version", "?")
    except RedisError as error:
        report.fail(
            f"Redis at {_without_password(url)} is unreachable ({type(error).__name__})",
            "start Redis or set KAYLE_REDIS_URL to one that answers",
        )
        return
    report.ok(f"Redis {version} reachable at {_without_password(url)}")
    persistence = read_persistence(client)
    if persistence.off:
        report.warn(WARNING, FIX)
    elif persistence.aof is None:
        report.warn(
            "Redis persistence could not be read (CONFIG is not allowed)",
            "make sure your Redis provider persists data (AOF preferred)",
        )
    else:
        report.ok(f"Redis persistence on: {persistence.describe()}")
    client.close()


def _check_handlers(report: Report, config: Config) -> None:
    try:
        registry = load_handlers(config.settings)
    except ConfigError as error:
        report.fail(str(error), "install the plugin or fix the import error, or remove it from KAYLE_HANDLERS")
        return
    lines = describe_handlers(registry)
    if not lines:
        report.fail(
            "no handlers found: a worker would refuse to start",
            "install a plugin (entry point kayle_webhooks.handlers) or list modules in KAYLE_HANDLERS",
        )
    for line in lines:
        report.ok(f"handlers for {line}")


def _without_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    return f"{scheme}{sep}***@{rest.split('@', 1)[1]}"
