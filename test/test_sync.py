"""mesc3d_ros.sync.TimeSynchronizer: exact and approximate matching, bounded queues, drop accounting."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesc3d_ros.sync import StampedHistory, TimeSynchronizer

MS = 1_000_000  # nanoseconds


def test_exact_pairs_arrive_in_either_order():
    sync = TimeSynchronizer(2)
    assert sync.add(0, 100, 'image@100') is None
    assert sync.add(1, 100, 'dets@100') == ('image@100', 'dets@100')
    assert sync.add(1, 200, 'dets@200') is None
    assert sync.add(0, 200, 'image@200') == ('image@200', 'dets@200')
    assert (sync.matched, sync.dropped, sync.queued()) == (2, (0, 0), (0, 0))


def test_exact_does_not_pair_different_stamps():
    sync = TimeSynchronizer(2)
    assert sync.add(0, 100, 'image') is None
    assert sync.add(1, 101, 'dets') is None
    assert sync.queued() == (1, 1) and sync.matched == 0


def test_older_unmatched_messages_are_dropped_and_counted_when_a_newer_set_matches():
    sync = TimeSynchronizer(2)
    for stamp in (100, 200, 300):
        sync.add(0, stamp, f'image@{stamp}')  # the detector skipped 100 and 200
    assert sync.add(1, 300, 'dets@300') == ('image@300', 'dets@300')
    assert sync.dropped == (2, 0) and sync.queued() == (0, 0)


def test_queue_overflow_evicts_the_earliest_arrival():
    sync = TimeSynchronizer(2, queue_size=3)
    for stamp in (1, 2, 3, 4):
        sync.add(0, stamp, stamp)
    assert sync.dropped == (1, 0) and sync.queued() == (3, 0)
    assert sync.add(1, 1, 'late') is None  # stamp 1 was evicted
    assert sync.add(1, 2, 'dets@2') == (2, 'dets@2')


def test_clock_jumping_back_does_not_wedge_a_full_queue():
    sync = TimeSynchronizer(2, queue_size=3)
    for stamp in (1000, 1001, 1002):
        sync.add(0, stamp, stamp)  # never matched: e.g. the end of a replayed bag
    assert sync.add(0, 5, 'image@5') is None  # the bag restarts at t = 5
    assert sync.add(1, 5, 'dets@5') == ('image@5', 'dets@5')


def test_a_repeated_stamp_supersedes_the_queued_message():
    sync = TimeSynchronizer(2)
    sync.add(0, 100, 'first')
    sync.add(0, 100, 'second')
    assert sync.add(1, 100, 'dets') == ('second', 'dets')
    assert sync.dropped == (1, 0)


def test_approximate_matches_within_slop_and_prefers_the_closest():
    sync = TimeSynchronizer(2, slop_s=0.010)
    sync.add(0, 100 * MS, 'image@100')
    assert sync.add(1, 115 * MS, 'dets@115') is None  # 15 ms apart: outside the slop
    assert sync.add(1, 121 * MS, 'dets@121') is None
    assert sync.add(0, 119 * MS, 'image@119') == ('image@119', 'dets@121')  # 2 ms beats 4 ms
    assert sync.dropped == (1, 1)  # image@100 and dets@115 can no longer be matched
    assert sync.queued() == (0, 0)


def test_three_streams_need_all_within_slop_of_each_other():
    sync = TimeSynchronizer(3, slop_s=0.005)
    sync.add(0, 100 * MS, 'a')
    sync.add(1, 104 * MS, 'b')
    assert sync.add(2, 96 * MS, 'c-early') is None  # within 5 ms of 'a' but 8 ms from 'b'
    assert sync.add(2, 102 * MS, 'c') == ('a', 'b', 'c')


@pytest.mark.parametrize('kwargs, message', [
    ({'num_streams': 0}, 'num_streams must be >= 1, got 0'),
    ({'num_streams': 2, 'queue_size': 0}, 'queue_size must be >= 1, got 0'),
    ({'num_streams': 2, 'slop_s': -0.1}, r'slop_s must be >= 0 seconds, got -0.1'),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TimeSynchronizer(**kwargs)


def test_unknown_stream_is_named():
    with pytest.raises(ValueError, match='stream 2 out of range for 2 streams'):
        TimeSynchronizer(2).add(2, 0, 'x')


@settings(max_examples=100, deadline=None)
@given(num_streams=st.integers(1, 3), stamps=st.lists(st.integers(0, 10**6), min_size=1, max_size=20, unique=True),
       data=st.data())
def test_in_order_streams_with_large_queues_match_every_stamp(num_streams, stamps, data):
    stamps = sorted(stamps)
    # Interleave the streams at random, each stream keeping its own stamps in increasing order.
    positions = [0] * num_streams
    sync = TimeSynchronizer(num_streams, queue_size=len(stamps))
    sets = []
    while any(p < len(stamps) for p in positions):
        stream = data.draw(st.sampled_from([i for i, p in enumerate(positions) if p < len(stamps)]))
        stamp = stamps[positions[stream]]
        positions[stream] += 1
        matched = sync.add(stream, stamp, (stream, stamp))
        if matched is not None:
            sets.append(matched)
    assert [tuple(s for _, s in matched) for matched in sets] == [(t,) * num_streams for t in stamps]
    assert all([stream for stream, _ in matched] == list(range(num_streams)) for matched in sets)
    assert sync.dropped == (0,) * num_streams and sync.queued() == (0,) * num_streams


@settings(max_examples=100, deadline=None)
@given(slop_ms=st.integers(0, 20), queue_size=st.integers(1, 5),
       arrivals=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 100)), max_size=40))
def test_every_message_is_matched_dropped_or_queued_and_sets_respect_the_slop(slop_ms, queue_size, arrivals):
    sync = TimeSynchronizer(2, queue_size=queue_size, slop_s=slop_ms / 1000)
    for stream, stamp_ms in arrivals:
        matched = sync.add(stream, stamp_ms * MS, stamp_ms * MS)
        if matched is not None:
            assert max(matched) - min(matched) <= slop_ms * MS
    added = [sum(1 for stream, _ in arrivals if stream == i) for i in range(2)]
    for i in range(2):
        assert sync.matched + sync.dropped[i] + sync.queued()[i] == added[i]


def test_history_prefers_the_frames_own_stamp_then_the_newest_usable_before_it():
    history: StampedHistory[str] = StampedHistory(5)
    assert history.match(10, lambda m: True) is None
    for stamp, message in ((5, 'good5'), (9, 'bad9'), (10, 'bad10'), (12, 'good12')):
        history.add(stamp, message)
    usable = lambda message: message.startswith('good')  # noqa: E731
    assert history.match(10, usable) == 'bad10'  # its own stamp wins, even if unusable: the frame is skipped
    assert history.match(11, usable) == 'good5'  # newest usable before it; 12 is after the frame
    assert history.match(13, usable) == 'good12'
    assert history.match(4, usable) is None
    history.add(10, 'good10')  # a good one with the same stamp does not overrule the bad one, in either order
    assert history.match(10, usable) == 'bad10'
    history.add(20, 'good20')  # evicts the oldest arrival (good5)
    assert history.match(7, usable) is None and history.match(11, usable) == 'good10' and len(history) == 5
