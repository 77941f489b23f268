"""
The demo's recorder: every topic of the run into a rosbag2 MCAP file, plus the node's outputs kept for scoring.

Subscriptions are raw (``raw=True``): callbacks receive the serialised CDR bytes exactly as they crossed DDS, which
go into the bag unchanged (PyPI ``rosbags`` writes real rosbag2 MCAP bags, metadata version 9 = Jazzy; docs:
ros2-from-pip.md §6). test_demo.py reads it back with rosbags and rclpy; ``ros2 bag play demo_out/bag`` needs a ROS
install with the ros2 CLI, which this project's machines lack, so replay with it is untested. The bag's timestamps
are receive times, as ``ros2 bag record`` writes them. Outputs (clouds, 3D detections, diagnostics) are also kept
in memory with their receive time for matching to frames; only they are deserialised, after the run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode, StoragePlugin
from rosbags.typesys import Stores, get_typestore, get_types_from_msg
from rosbags.typesys.store import Typestore

from mesc3d_ros.ros_env import REPO_ROOT

VISION_MSGS_DIR = REPO_ROOT / 'interfaces' / 'vision_msgs' / 'msg'
"""The vision_msgs definitions this project builds (field-identical to vision_msgs 4.x); rosbags' stores lack them."""


def bag_typestore() -> Typestore:
    """ROS 2 Jazzy's standard types plus our vision_msgs, to write each connection's message definition."""
    store = get_typestore(Stores.ROS2_JAZZY)
    types = {}
    for path in sorted(VISION_MSGS_DIR.glob('*.msg')):
        types.update(get_types_from_msg(path.read_text(), f'vision_msgs/msg/{path.stem}'))
    store.register(types)
    return store


def ros_type_name(msg_type: type) -> str:
    """``sensor_msgs.msg.Image`` -> ``sensor_msgs/msg/Image`` (the name rosbag2 stores)."""
    return f'{msg_type.__module__.split(".")[0]}/msg/{msg_type.__name__}'


@dataclass
class Received:
    """One output message as it arrived."""

    receive_ns: int
    """time.time_ns() in the callback: the same clock the publisher stamps frames with (both on this host)."""
    data: bytes
    """Serialised CDR."""


@dataclass
class Recording:
    """What the recorder kept of the outputs, by topic, in arrival order."""

    outputs: dict[str, list[Received]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    """Messages written to the bag per topic (inputs included)."""


class Recorder:
    """Records ``inputs`` and ``outputs`` (topic -> message type) of ``node`` into the MCAP bag at ``bag_path``."""

    def __init__(self, node: Node, bag_path: Path, inputs: dict[str, type], outputs: dict[str, type]) -> None:
        if bag_path.exists():
            raise FileExistsError(f'{bag_path} exists; rosbag2 never overwrites a bag (remove it first)')
        self.recording = Recording(outputs={topic: [] for topic in outputs},
                                   counts=dict.fromkeys({**inputs, **outputs}, 0))
        self._writer = Writer(bag_path, version=9, storage_plugin=StoragePlugin.MCAP)
        # zstd chunks: the stream repeats each rendered scene for several frames, which compresses very well.
        self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self._writer.open()
        self.closed = False
        store = bag_typestore()
        # Reliable keep-last: a recorder wants every message; a reliable reader never blocks a keep-last writer.
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self._subscriptions = []
        for topic, msg_type in {**inputs, **outputs}.items():
            connection = self._writer.add_connection(topic, ros_type_name(msg_type), typestore=store)
            keep = topic in outputs
            self._subscriptions.append(node.create_subscription(
                msg_type, topic, lambda data, t=topic, c=connection, k=keep: self._on_message(t, c, k, data),
                qos, raw=True))

    def _on_message(self, topic: str, connection, keep: bool, data: bytes) -> None:
        receive_ns = time.time_ns()
        self._writer.write(connection, receive_ns, data)
        self.recording.counts[topic] += 1
        if keep:
            self.recording.outputs[topic].append(Received(receive_ns, bytes(data)))

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc_info) -> None:
        """Leaving a ``with`` block however (an error, Ctrl-C) still finishes the bag: nothing recorded is lost."""
        self.close()

    def close(self) -> Recording:
        """Finish the bag (its metadata.yaml is written now) and return what was kept."""
        if not self.closed:
            self._writer.close()
            self.closed = True
        return self.recording
