"""The reference pipeline's worker: RQ's default forking ``Worker`` on the reference queue, with the job's
module imported first, as RQ's documentation advises for speed (a forked work horse then inherits jwcrypto
and the loaded key instead of importing them for every job).

    python -m bench.reference_worker [--burst]
"""

from __future__ import annotations

import os
import sys

from redis import Redis
from rq import Worker

import bench.reference_job  # noqa: F401 (preloaded for the work horses)


def main() -> None:
    worker = Worker(["reference"], connection=Redis.from_url(os.environ["KAYLE_REDIS_URL"]))
    worker.work(burst="--burst" in sys.argv[1:], logging_level="WARNING")


if __name__ == "__main__":
    main()
