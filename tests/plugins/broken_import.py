"""A handler plugin that cannot be imported: the worker must refuse to start and name it."""

raise RuntimeError("this plugin needs a database that is not configured")
