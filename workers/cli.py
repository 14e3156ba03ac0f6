"""``kayle-webhooks``: the one command line for both halves of the service.

It lives in ``workers`` because that package may import ``receiver`` and not the
other way round. Every subcommand is declared here, in one place, and runs a
function ``(args) -> exit status`` from the module that owns the capability;
that module is imported only when its subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import cast

from receiver.settings import ConfigError

PROG = "kayle-webhooks"
Command = Callable[[argparse.Namespace], int]


def _command(parser: argparse.ArgumentParser, target: str) -> None:
    """Bind ``parser`` to ``module:function``, imported when the subcommand runs."""
    parser.set_defaults(target=target)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Receive Kayle ID webhook deliveries: verify, decrypt, deduplicate, queue, and run "
        "your handlers. Configuration comes from KAYLE_* environment variables (and ./.env).",
    )
    parser.add_argument(
        "--log-format",
        choices=["json", "text"],
        help="log as JSON lines (default) or human-readable text; overrides KAYLE_LOG_FORMAT",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser("serve", help="run the receiver (HTTP) under uvicorn")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    serve.add_argument("--workers", type=int, default=1, help="receiver processes (default 1)")
    _command(serve, "receiver.server:serve")

    worker = sub.add_parser("worker", help="run RQ workers that pass events to your handlers")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    worker.add_argument(
        "--simple", action="store_true", help="run jobs in the worker process (RQ SimpleWorker), not a fork"
    )
    worker.add_argument("--processes", type=int, default=1, help="worker processes to run (default 1)")
    _command(worker, "workers.process:run")

    failed = sub.add_parser("failed", help="inspect and requeue events whose handlers failed")
    failed_sub = failed.add_subparsers(dest="failed_command", metavar="ACTION", required=True)
    failed_list = failed_sub.add_parser("list", help="list failed events (ids, types, handlers, error types)")
    _command(failed_list, "workers.failures:list_command")
    requeue = failed_sub.add_parser("requeue", help="run failed events again (only unfinished handlers)")
    requeue.add_argument("event_ids", nargs="*", metavar="EVENT_ID", help="events to requeue")
    requeue.add_argument("--all", action="store_true", help="requeue every failed event")
    _command(requeue, "workers.failures:requeue_command")

    forget = sub.add_parser(
        "forget", help="drop an event's dedup marker and handler progress so a replay is accepted again"
    )
    forget.add_argument("event_ids", nargs="+", metavar="EVENT_ID")
    _command(forget, "workers.failures:forget_command")

    keys = sub.add_parser("keys", help="create and list the RSA keys deliveries are encrypted to")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    keys_new = keys_sub.add_parser("new", help="generate <kid>.pem and print the body Kayle registers")
    keys_new.add_argument("--kid", required=True, help="key id to register at Kayle (the file stem)")
    keys_new.add_argument("--bits", type=int, choices=[2048, 3072, 4096], default=4096, help="default 4096")
    keys_new.add_argument("--dir", help="key directory (default KAYLE_KEY_DIR)")
    _command(keys_new, "receiver.keytool:new_command")
    keys_list = keys_sub.add_parser("list", help="show each key's kid, size and public-key fingerprint")
    keys_list.add_argument("--dir", help="key directory (default KAYLE_KEY_DIR)")
    _command(keys_list, "receiver.keytool:list_command")

    send = sub.add_parser(
        "send-test", help="send real signed and encrypted deliveries, built as Kayle builds them, to a URL"
    )
    send.add_argument("--url", required=True, help="the receiver URL, e.g. http://127.0.0.1:8000/webhooks/kayle")
    send.add_argument("--type", default=None, help="event type (default: one of each of the four types)")
    send.add_argument("--count", type=int, default=1, help="deliveries per type (default 1)")
    _command(send, "receiver.sender:send_test_command")

    check = sub.add_parser("check", help="check configuration, Redis, persistence, keys and plugins")
    _command(check, "workers.check:check_command")

    demo = sub.add_parser("demo", help="run a local receiver and worker with a throwaway key and send events")
    demo.add_argument("--port", type=int, default=8000, help="receiver port (default 8000)")
    demo.add_argument("--dir", default=".demo", help="where the throwaway key and data go (default .demo)")
    _command(demo, "workers.demo:demo_command")

    register = sub.add_parser("register", help="register this service with Kayle (endpoint, key, secret)")
    register.add_argument("--url", required=True, help="the public URL Kayle will deliver to")
    register.add_argument("--name", default=None, help="endpoint name at Kayle")
    register.add_argument("--events", default=None, help="comma-separated event types (default: all)")
    register.add_argument("--kid", default=None, help="key id to register (default: newest key or a new one)")
    register.add_argument("--show-secret", action="store_true", help="also print the whsec_ secret")
    register.add_argument("--bits", type=int, choices=[2048, 3072, 4096], default=4096, help="new key size")
    _command(register, "receiver.management:register_command")

    rotate = sub.add_parser(
        "rotate-key", help="generate and register a new key; keep the old one for retries"
    )
    rotate.add_argument(
        "--kid", default=None, help="key id for the new key (default: generated; an existing unregistered key is used)"
    )
    rotate.add_argument("--bits", type=int, choices=[2048, 3072, 4096], default=4096, help="new key size")
    _command(rotate, "receiver.management:rotate_key_command")

    reconcile = sub.add_parser("reconcile", help="ask Kayle to retry failed deliveries not accepted here")
    reconcile.add_argument("--since", default="9d", help="look back this far, e.g. 36h or 7d (default 9d)")
    reconcile.add_argument(
        "--dry-run", action="store_true", help="report what would be retried, change nothing"
    )
    _command(reconcile, "receiver.management:reconcile_command")

    status = sub.add_parser("status", help="show the endpoint as Kayle sees it")
    _command(status, "receiver.management:status_command")
    return parser


def resolve(target: str) -> Command:
    module_name, _, function = target.partition(":")
    return cast(Command, getattr(importlib.import_module(module_name), function))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.log_format:
        os.environ["KAYLE_LOG_FORMAT"] = args.log_format
    try:
        return resolve(args.target)(args)
    except ConfigError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
