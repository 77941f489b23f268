"""
What the node counts and how it reports it: thread-safe statistics, once-per-cause logging, /diagnostics.

diagnostic_updater is not installable from PyPI (docs: ros2-from-pip.md §6), so the node publishes a
``diagnostic_msgs/DiagnosticArray`` itself: one ``DiagnosticStatus`` per period with rates, latencies, drops, issue
counts, the backend and the placement modes used. The statistics are plain Python so that they are testable and
shared by the callback thread and the inference worker under one lock.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

from mesc3d_ros.safe_text import LINE_CHARS, printable

LATENCY_WINDOW = 200
"""Frames kept for the latency statistics (≈ 7 s at 30 Hz)."""
VALUE_CHARS = 256
"""Longest /diagnostics value (a model name or a path fits)."""


class CauseLog:
    """
    Decides which problems get a log line: the first of each cause at once, then a count every ``period_s``.

    A camera sending a bad encoding at 30 Hz would otherwise write 30 identical lines a second; rclpy's own
    throttling is per call site, which would hide a second cause logged from the same place.
    """

    def __init__(self, period_s: float = 60.0) -> None:
        self.period_s = period_s
        self._last_logged: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def line(self, cause: str, text: str, keep_newlines: bool = False, now_s: float | None = None) -> str | None:
        """
        Return the log line for one problem of ``cause``, or None while that cause is within its quiet period.

        The line counts the problems of the cause that got no line since its last one; ``text`` is made printable
        and bounded whatever it holds (message-derived parts are already shortened where they are quoted).
        """
        now_s = time.monotonic() if now_s is None else now_s
        with self._lock:
            last = self._last_logged.get(cause)
            if last is not None and now_s - last < self.period_s:
                self._suppressed[cause] += 1
                return None
            self._last_logged[cause] = now_s
            suppressed = self._suppressed.pop(cause, 0)
        more = f' ({suppressed} more since the last report)' if suppressed else ''
        return (f'[{cause}] {printable(text, LINE_CHARS, keep_newlines=keep_newlines)}{more}; repeats are counted '
                f'on /diagnostics, logged at most once every {self.period_s:g} s')


@dataclass(frozen=True)
class Snapshot:
    """Statistics of one reporting period plus running totals."""

    period_s: float
    input_hz: float
    output_hz: float
    totals: dict[str, int]
    issues: dict[str, int]
    placements: dict[str, int]
    fit_residual_mm: tuple[float, float, float]
    """(mean, p95, max) of the shape fits' RMS residuals over the last fitted objects."""
    fit_visible_points: tuple[float, float, float]
    """(mean, p95, max) of the measured visible points those fits used."""
    processing_ms: tuple[float, float, float]
    """(mean, p95, max) of match → publish, the node's own time, over the last frames."""
    stamp_age_ms: tuple[float, float, float]
    """(mean, p95, max) of publish time − image stamp: end-to-end latency when the clocks agree."""
    new_problems: int
    """Drops and issues in this period."""


class NodeStats:
    """Counters and latency windows, updated by the callback thread and the worker, read by the diagnostics timer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: Counter[str] = Counter()
        self._issues: Counter[str] = Counter()
        self._placements: Counter[str] = Counter()
        self._processing_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._stamp_age_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._fit_residual_mm: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._fit_visible_points: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._last_report = (time.monotonic(), Counter(), 0)

    def count(self, what: str, amount: int = 1) -> None:
        """Add to a total: ``matched``, ``processed``, ``published``, ``objects``, ``dropped_stale`` and so on."""
        with self._lock:
            self._totals[what] += amount

    def issue(self, cause: str) -> None:
        with self._lock:
            self._issues[cause] += 1

    def frame_done(self, processing_s: float, stamp_age_s: float, placements: list[str]) -> None:
        with self._lock:
            self._totals['published'] += 1
            self._totals['objects'] += len(placements)
            self._placements.update(placements)
            self._processing_ms.append(processing_s * 1e3)
            self._stamp_age_ms.append(stamp_age_s * 1e3)

    def fits_done(self, fits: list[tuple[float, int]]) -> None:
        """(RMS residual metres, visible points) of each object of a frame whose shape was fitted to depth."""
        with self._lock:
            self._totals['fitted'] += len(fits)
            for rms_m, visible in fits:
                self._fit_residual_mm.append(rms_m * 1e3)
                self._fit_visible_points.append(float(visible))

    def snapshot(self) -> Snapshot:
        """Return the period since the previous snapshot, and the totals."""
        with self._lock:
            now = time.monotonic()
            last_time, last_totals, last_problems = self._last_report
            period = max(now - last_time, 1e-9)
            totals = Counter(self._totals)
            problems = self._problems(totals)
            self._last_report = (now, totals, problems)
            return Snapshot(
                period_s=period,
                input_hz=(totals['matched'] - last_totals['matched']) / period,
                output_hz=(totals['published'] - last_totals['published']) / period,
                totals=dict(totals), issues=dict(self._issues), placements=dict(self._placements),
                fit_residual_mm=_summary(self._fit_residual_mm),
                fit_visible_points=_summary(self._fit_visible_points),
                processing_ms=_summary(self._processing_ms), stamp_age_ms=_summary(self._stamp_age_ms),
                new_problems=problems - last_problems)

    def _problems(self, totals: Counter[str]) -> int:
        return totals['dropped_stale'] + totals['dropped_sync'] + sum(self._issues.values())


def _summary(values: deque[float]) -> tuple[float, float, float]:
    if not values:
        return (0.0, 0.0, 0.0)
    ordered = sorted(values)
    return (sum(ordered) / len(ordered), ordered[min(int(0.95 * len(ordered)), len(ordered) - 1)], ordered[-1])


def diagnostic_array(snapshot: Snapshot, name: str, hardware_id: str, context: dict[str, str],
                     header: Header) -> DiagnosticArray:
    """
    One DiagnosticStatus: OK, or WARN when frames were dropped or inputs had issues in this period.

    ``context`` adds fixed facts (backend, model, state, placement policy) as key/values.
    """
    level, message = DiagnosticStatus.OK, f'{snapshot.output_hz:.1f} Hz out'
    if snapshot.new_problems:
        level = DiagnosticStatus.WARN
        message += f', {snapshot.new_problems} dropped frames or input issues in the last {snapshot.period_s:.1f} s'
    values = {
        **context,
        'input_rate_hz': f'{snapshot.input_hz:.2f}',
        'output_rate_hz': f'{snapshot.output_hz:.2f}',
        'processing_ms_mean_p95_max': ' / '.join(f'{v:.1f}' for v in snapshot.processing_ms),
        'stamp_age_ms_mean_p95_max': ' / '.join(f'{v:.1f}' for v in snapshot.stamp_age_ms),
        'fit_residual_mm_mean_p95_max': ' / '.join(f'{v:.1f}' for v in snapshot.fit_residual_mm),
        'fit_visible_points_mean_p95_max': ' / '.join(f'{v:.0f}' for v in snapshot.fit_visible_points),
        **{f'total_{key}': str(value) for key, value in sorted(snapshot.totals.items())},
        **{f'issue_{key}': str(value) for key, value in sorted(snapshot.issues.items())},
        **{f'placement_{key}': str(value) for key, value in sorted(snapshot.placements.items())},
    }
    # Values are counts and fixed facts; printable() bounds them anyway, so nothing a message carries can bloat them.
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                              values=[KeyValue(key=key, value=printable(value, VALUE_CHARS))
                                      for key, value in values.items()])
    return DiagnosticArray(header=header, status=[status])
