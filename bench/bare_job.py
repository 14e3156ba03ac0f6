"""The bare RQ baseline's job for the worker benchmark: nothing at all, in a module that imports nothing.

A forking RQ worker imports the job's module afresh in every work horse (its parent never
imports it), so the baseline's module must not import the project: that alone costs a horse
about 70 ms and would make bare RQ look several times slower than it is.
"""


def bare_job() -> None:
    return None
