"""
Exact or approximate time synchronisation of N message streams (our replacement for message_filters).

Pure Python and message-agnostic: callers pass each message with its header stamp in integer nanoseconds
(``conversions.stamp_to_ns``), so the matching is exact arithmetic and unit-testable without ROS.

A set matches when it holds one message per stream and all its stamps lie within ``slop_s`` of each other
(``slop_s = 0``: identical stamps, the right choice when the detector copies the image stamp into its detections).
Each stream keeps a bounded queue; what cannot take part in a set any more is dropped and counted, so a node can report
how many inputs it never processed.

:class:`StampedHistory` serves inputs that are not synchronised but must belong to the frame, such as CameraInfo:
the one with the frame's stamp, else the newest usable one stamped before it.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

Message = TypeVar('Message')


class TimeSynchronizer(Generic[Message]):
    """Pairs up messages of ``num_streams`` streams by stamp; feed it with :meth:`add`."""

    def __init__(self, num_streams: int, queue_size: int = 10, slop_s: float = 0.0) -> None:
        if num_streams < 1:
            raise ValueError(f'num_streams must be >= 1, got {num_streams}')
        if queue_size < 1:
            raise ValueError(f'queue_size must be >= 1, got {queue_size}')
        if not slop_s >= 0.0:
            raise ValueError(f'slop_s must be >= 0 seconds, got {slop_s}')
        self.queue_size = queue_size
        self.slop_ns = round(slop_s * 1e9)
        # Per stream: stamp_ns -> message, in arrival order (dicts keep insertion order).
        self._queues: list[dict[int, Message]] = [{} for _ in range(num_streams)]
        self._dropped = [0] * num_streams
        self.matched = 0
        """Number of complete sets returned so far."""

    @property
    def dropped(self) -> tuple[int, ...]:
        """Per stream: messages discarded without being part of a set (queue overflow, superseded, or too old)."""
        return tuple(self._dropped)

    def queued(self) -> tuple[int, ...]:
        """Per stream: messages waiting for partners."""
        return tuple(len(queue) for queue in self._queues)

    def add(self, stream: int, stamp_ns: int, message: Message) -> tuple[Message, ...] | None:
        """Queue ``message`` of stream ``stream``; return the complete set it finishes (one per stream), else None."""
        if not 0 <= stream < len(self._queues):
            raise ValueError(f'stream {stream} out of range for {len(self._queues)} streams')
        queue = self._queues[stream]
        if queue.pop(stamp_ns, None) is not None:
            self._dropped[stream] += 1  # a second message with the same stamp supersedes the first
        queue[stamp_ns] = message
        if len(queue) > self.queue_size:
            # Evict by arrival, not by stamp, so a clock jumping backwards (a replayed bag) cannot wedge the queue.
            del queue[next(iter(queue))]
            self._dropped[stream] += 1
        stamps = self._best_set(stream, stamp_ns)
        if stamps is None:
            return None
        matched = tuple(self._queues[i].pop(t) for i, t in enumerate(stamps))
        # Anything older than the set on a stream has missed its chance: its partners were due before these.
        for i, t in enumerate(stamps):
            stale = [s for s in self._queues[i] if s < t]
            for s in stale:
                del self._queues[i][s]
            self._dropped[i] += len(stale)
        self.matched += 1
        return matched

    def _best_set(self, stream: int, stamp_ns: int) -> tuple[int, ...] | None:
        """Stamps (one per stream, ``stamp_ns`` for ``stream``) with the smallest spread <= slop, if any."""
        candidates = []
        for i, queue in enumerate(self._queues):
            if i == stream:
                candidates.append([stamp_ns])
                continue
            near = [s for s in queue if abs(s - stamp_ns) <= self.slop_ns]
            if not near:
                return None
            candidates.append(near)
        # Queues are short (tens) and streams few (2-3), so trying every combination is cheap.
        best = min(itertools.product(*candidates), key=lambda stamps: max(stamps) - min(stamps))
        return best if max(best) - min(best) <= self.slop_ns else None


class StampedHistory(Generic[Message]):
    """The last ``size`` messages of a stream by arrival, looked up by the stamp of the frame they must belong to."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f'size must be >= 1, got {size}')
        self._entries: deque[tuple[int, Message]] = deque(maxlen=size)  # (stamp ns, message), oldest arrival first

    def add(self, stamp_ns: int, message: Message) -> None:
        self._entries.append((stamp_ns, message))

    def __len__(self) -> int:
        return len(self._entries)

    def match(self, stamp_ns: int, usable: Callable[[Message], bool]) -> Message | None:
        """
        Return a message stamped exactly ``stamp_ns``.

        An unusable one first (it is *the* one of that frame: two that disagree about the same instant leave it unknown,
        whatever their order); else the usable message with the latest stamp before ``stamp_ns`` (the newest arrival
        among equal stamps); else None.
        """
        exact = [message for stamp, message in self._entries if stamp == stamp_ns]
        if exact:
            unusable = [message for message in exact if not usable(message)]
            return unusable[-1] if unusable else exact[-1]
        best: tuple[int, Message] | None = None
        for stamp, message in self._entries:
            if stamp < stamp_ns and usable(message) and (best is None or stamp >= best[0]):
                best = (stamp, message)
        return None if best is None else best[1]
