"""The kayle-webhooks program: its command line, Kayle API client and account commands, key tooling,
the testing kit, ``check``, the demo and the failed-event commands."""
