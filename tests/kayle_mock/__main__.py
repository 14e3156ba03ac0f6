"""``python -m tests.kayle_mock --port N --api-key kk_...``: run the mock Kayle API on 127.0.0.1."""

from __future__ import annotations

import argparse

import uvicorn

from tests.kayle_mock.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="kayle_mock")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", required=True, help="the one key with webhooks:read and webhooks:write")
    parser.add_argument("--readonly-key", default="kk_readonly", help="a key with webhooks:read only")
    args = parser.parse_args()
    uvicorn.run(create_app(args.api_key, args.readonly_key), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
