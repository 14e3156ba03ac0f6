"""Handlers of the example plugin (to be written)."""
