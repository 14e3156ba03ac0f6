"""The reference pipeline's worker: RQ's default forking ``Worker`` on the reference queue (``--simple``: RQ's
``SimpleWorker``), with the job's module imported first, as RQ's documentation advises for speed (a forked work
horse then inherits jwcrypto and the loaded key instead of importing them for every job).

    python -m bench.reference_worker [--burst] [--simple]
"""

from __future__ import annotations

import os
import sys

from redis import Redis
from rq import SimpleWorker, Worker

import bench.reference_job  # noqa: F401 (preloaded for the work horses)


def main() -> None:
    worker_class = SimpleWorker if "--simple" in sys.argv[1:] else Worker
    worker = worker_class(["reference"], connection=Redis.from_url(os.environ["KAYLE_REDIS_URL"]))
    worker.work(burst="--burst" in sys.argv[1:], logging_level="WARNING")


if __name__ == "__main__":
    main()
