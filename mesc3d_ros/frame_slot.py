"""
The hand-over between reconstruct_node's callbacks and its worker: a matched frame and a slot holding the newest.

Callbacks only match messages and :meth:`FrameSlot.put` the set; the worker :meth:`FrameSlot.take` s it. The slot
holds one frame, so under load the worker answers the latest frame instead of falling behind, and the caller counts
each overwritten frame as dropped. No rclpy.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sensor_msgs.msg import CameraInfo, Image
from vision_msgs.msg import Detection2DArray

from mesc3d_ros.conversions import CameraIntrinsics, camera_info_to_intrinsics
from mesc3d_ros.sync import StampedHistory

CAMERA_INFO_HISTORY = 64
"""CameraInfo messages kept for matching to frames: 2 s of a 30 Hz camera, longer than a detector takes."""


@dataclass(frozen=True)
class BadCameraInfo:
    """A CameraInfo that failed validation, kept so that the frame with its stamp is skipped, not answered."""

    reason: str


CameraInfoEntry = CameraIntrinsics | BadCameraInfo


@dataclass(frozen=True, eq=False)
class Frame:
    """A matched set of inputs waiting for the worker."""

    image: Image
    detections: Detection2DArray
    depth: Image | None
    camera_info: CameraInfoEntry | None
    """The frame's CameraInfo (same stamp) or the newest valid one before it; None if there is none."""
    matched_s: float
    """time.monotonic() when the set was complete."""


class CameraInfoHistory:
    """The last CameraInfo messages by stamp, validated on arrival; the callbacks add, the matcher looks up."""

    def __init__(self, size: int = CAMERA_INFO_HISTORY) -> None:
        self._lock = threading.Lock()
        self._entries: StampedHistory[CameraInfoEntry] = StampedHistory(size)

    def add(self, stamp_ns: int, msg: CameraInfo) -> str | None:
        """Keep ``msg``'s intrinsics, or the reason they are unusable (returned) so that its frame is skipped."""
        try:
            entry: CameraInfoEntry = camera_info_to_intrinsics(msg)
        except ValueError as exc:
            entry = BadCameraInfo(str(exc))
        with self._lock:
            self._entries.add(stamp_ns, entry)
        return entry.reason if isinstance(entry, BadCameraInfo) else None

    def match(self, stamp_ns: int) -> CameraInfoEntry | None:
        """Return the entry of the frame stamped ``stamp_ns`` (StampedHistory.match: a bad one of that stamp wins)."""
        with self._lock:
            return self._entries.match(stamp_ns, lambda entry: isinstance(entry, CameraIntrinsics))


class FrameSlot:
    """Holds the newest frame only: ``put`` replaces an unprocessed frame (the caller counts it as dropped)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False

    def put(self, frame: Frame) -> bool:
        """Store ``frame``; True when it overwrote one the worker had not taken."""
        with self._condition:
            replaced = self._frame is not None
            self._frame = frame
            self._condition.notify()
            return replaced

    def take(self) -> Frame | None:
        """Block until a frame is there (returned) or the slot is closed (None)."""
        with self._condition:
            self._condition.wait_for(lambda: self._frame is not None or self._closed)
            frame, self._frame = self._frame, None
            return None if self._closed else frame

    def clear(self) -> None:
        """Forget a frame the worker has not taken (deactivation: it must not be answered later)."""
        with self._condition:
            self._frame = None

    def close(self) -> None:
        """Wake the worker with None, now and at every later ``take``: it ends."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
