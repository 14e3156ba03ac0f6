"""Compact dedup markers: exactly-once within the window, across periods and bucket levels, in intsets."""

from __future__ import annotations

import time

import pytest
import redis

from receiver import dedup
from tests.helpers.processes import wait_until

WINDOW = 60  # a store made with it has periods of 6 s


def mark_all(client: redis.Redis, event_ids: list[str], window: int = WINDOW) -> None:
    script = client.register_script(dedup.prelude(window) + "mark(ARGV[1], tonumber(ARGV[2]))")
    with client.pipeline(transaction=False) as pipe:
        for event_id in event_ids:
            digest = dedup.Digest.of(event_id)
            script(args=[digest.value, digest.spread], client=pipe)
        pipe.execute()


def test_a_marked_event_is_seen_until_forgotten_and_others_are_not(redis_client: redis.Redis) -> None:
    ids = [f"evt_{n:064d}" for n in range(50)]
    mark_all(redis_client, ids[:25])
    assert dedup.seen(redis_client, WINDOW, ids) == set(ids[:25])
    assert dedup.forget(redis_client, WINDOW, ids[3]) is True
    assert dedup.forget(redis_client, WINDOW, ids[3]) is False
    assert dedup.seen(redis_client, WINDOW, ids) == set(ids[:25]) - {ids[3]}


def test_markers_are_intsets_that_expire_a_period_after_the_window(redis_client: redis.Redis) -> None:
    mark_all(redis_client, [f"evt_{n}" for n in range(300)])
    keys = list(redis_client.scan_iter("kayle:seen:*:*:*"))
    assert 1 <= len(keys) <= 64  # one period, the first level's 64 buckets
    for key in keys:
        assert redis_client.object("encoding", key) == b"intset"
        assert WINDOW - 2 < redis_client.ttl(key) <= WINDOW + WINDOW // 10
    assert sum(redis_client.scard(key) for key in keys) == 300


@pytest.mark.slow
def test_events_marked_in_an_earlier_period_are_still_seen(redis_client: redis.Redis) -> None:
    """The period turns (6 s with this window): lookups cover every period a live marker can be in."""
    early = [f"evt_early{n}" for n in range(20)]
    mark_all(redis_client, early)
    first_period = int(redis_client.time()[0]) // 6
    wait_until(lambda: int(redis_client.time()[0]) // 6 > first_period, "the next period", every=0.2)
    late = [f"evt_late{n}" for n in range(20)]
    mark_all(redis_client, late)
    assert dedup.seen(redis_client, WINDOW, [*early, *late, "evt_never"]) == set(early + late)
    periods = {key.split(b":")[2] for key in redis_client.scan_iter("kayle:seen:*:*:*")}
    assert len(periods) == 2


@pytest.mark.slow
def test_a_busy_period_opens_more_buckets_and_every_marker_stays_seen(redis_client: redis.Redis) -> None:
    """Past 256 markers a bucket on average, the period opens 16 times as many buckets: sets stay small
    (intsets), and the markers in the first level are still found."""
    ids = [f"evt_busy{n}" for n in range(17_000)]
    started = time.monotonic()
    mark_all(redis_client, ids, window=864_000)  # one period of a day: the test cannot straddle two
    print(f"17,000 markers in {time.monotonic() - started:.1f} s")  # reported with -s
    levels = {int(key.split(b":")[3]) for key in redis_client.scan_iter("kayle:seen:*:*:*")}
    assert levels == {6, 10}
    assert dedup.seen(redis_client, 864_000, [*ids[::50], "evt_never"]) == set(ids[::50])
    largest = max(redis_client.scard(key) for key in redis_client.scan_iter("kayle:seen:*:*:*"))
    assert largest < 512  # Redis keeps sets of up to 512 integers as intsets
    encodings = {redis_client.object("encoding", key) for key in redis_client.scan_iter("kayle:seen:*:*:*")}
    assert encodings == {b"intset"}
