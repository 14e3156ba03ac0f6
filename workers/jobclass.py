"""The RQ job class of our workers: deleting an event's job deletes its handler progress with it.

Jobs are kept with ``result_ttl=0``, so when a job succeeds RQ 3 deletes it
inside the transaction that records the success (``handle_job_success`` calls
``job.cleanup(0, pipeline)``, which calls ``job.delete(pipeline)`` before the
``EXEC``). Deleting the progress set (``kayle:done:<event_id>``) on that same
pipeline makes "job finished" and "progress gone" one step: a work horse lost
before it leaves the job unfinished with its progress intact, so the retry runs
only the handlers that had not completed; lost after it, nothing runs again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rq.job import Job

from receiver.jobs import JOB_PREFIX, event_id_of, progress_key

if TYPE_CHECKING:
    from redis.client import Pipeline


class KayleJob(Job):
    """An RQ job whose deletion also deletes its event's progress set, in the same pipeline."""

    def delete(
        self, pipeline: Pipeline | None = None, remove_from_queue: bool = True, delete_dependents: bool = False
    ) -> None:
        if self.id.startswith(JOB_PREFIX):  # a job of ours (another job on the queue has no progress)
            (pipeline if pipeline is not None else self.connection).delete(progress_key(event_id_of(self.id)))
        super().delete(pipeline=pipeline, remove_from_queue=remove_from_queue, delete_dependents=delete_dependents)
