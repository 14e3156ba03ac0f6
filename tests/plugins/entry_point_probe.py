"""A handler module that tests advertise through an entry point (tests.helpers.plugins.entry_point_dir)."""

from workers import BaseEvent, Context, on_any


@on_any
def probe(event: BaseEvent, ctx: Context) -> None:
    pass
