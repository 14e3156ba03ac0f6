"""Handler plugins and helpers for the worker tests (loaded through KAYLE_HANDLERS)."""
