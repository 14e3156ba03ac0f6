"""``kayle-webhooks``: the one command line for the service. Errors become messages and exit statuses here."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click
from redis.exceptions import RedisError

from kayle_webhooks.cli import account, events, keys, service  # noqa: F401 - each attaches its commands
from kayle_webhooks.cli.root import PROG, root
from kayle_webhooks.errors import CommandError
from receiver.connections import display_url
from receiver.keyring import KeyFileError
from receiver.settings import ConfigError, read_settings

EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    try:
        result = root.main(args=list(argv) if argv is not None else None, prog_name=PROG, standalone_mode=False)
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except click.Abort:
        return 130
    except ConfigError as error:
        return _fail(str(error), EXIT_CONFIG)
    except KeyFileError as error:
        return _fail(f"KAYLE_KEY_DIR: {error}", EXIT_CONFIG)
    except CommandError as error:
        return _fail(str(error))
    except RedisError as error:
        return _fail(f"cannot reach Redis at {_redis_url()} ({type(error).__name__})")
    except KeyboardInterrupt:
        return 130
    return result if isinstance(result, int) else 0


def _redis_url() -> str:
    try:
        return display_url(read_settings().redis_url)
    except ConfigError:
        return "KAYLE_REDIS_URL"


def _fail(message: str, status: int = 1) -> int:
    click.echo(f"{PROG}: {message}", err=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
