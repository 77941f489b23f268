"""
The hand-over between reconstruct_node's callbacks and its worker (mesc3d_ros/frame_slot.py), with real threads.

The worker always gets the newest frame, an overwritten one is reported, and closing ends the worker.
"""

from __future__ import annotations

import threading

from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from mesc3d_ros.frame_slot import Frame, FrameSlot

TIMEOUT_S = 10.0


def frame(index: int) -> Frame:
    return Frame(image=Image(width=index), detections=Detection2DArray(), depth=None, camera_info=None,
                 matched_s=float(index))


def test_put_reports_an_overwritten_frame_and_take_returns_the_newest():
    slot = FrameSlot()
    assert slot.put(frame(1)) is False
    assert slot.put(frame(2)) is True  # frame 1 was never taken: the caller counts it as dropped
    assert slot.take().image.width == 2
    assert slot.put(frame(3)) is False


def test_take_waits_for_a_frame_from_another_thread():
    slot, taken = FrameSlot(), []
    worker = threading.Thread(target=lambda: taken.append(slot.take()))
    worker.start()
    worker.join(0.05)
    assert worker.is_alive() and not taken, 'take must block while the slot is empty'
    slot.put(frame(7))
    worker.join(TIMEOUT_S)
    assert [f.image.width for f in taken] == [7]


def test_clear_forgets_the_waiting_frame():
    slot = FrameSlot()
    slot.put(frame(1))
    slot.clear()
    assert slot.put(frame(2)) is False


def test_close_wakes_a_waiting_worker_and_ends_every_later_take():
    slot, taken = FrameSlot(), []
    worker = threading.Thread(target=lambda: taken.append(slot.take()))
    worker.start()
    slot.close()
    worker.join(TIMEOUT_S)
    assert not worker.is_alive() and taken == [None]
    slot.put(frame(1))
    assert slot.take() is None
