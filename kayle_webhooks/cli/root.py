"""The ``kayle-webhooks`` command group every subcommand module attaches to."""

from __future__ import annotations

import click

from kayle_webhooks.cli import options

PROG = "kayle-webhooks"


@click.group(
    name=PROG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@options.log_format
def root() -> None:
    """Receive Kayle ID webhook deliveries: verify, decrypt, deduplicate, queue, and run your handlers.

    Configuration comes from KAYLE_* environment variables (and ./.env); see the README.
    """
