"""
ROS message <-> numpy conversions: Image (raw pixels, RGB, metric depth), PointCloud2, Detection2DArray, CameraInfo.

Our own replacement for cv_bridge and sensor_msgs_py, which are not installable from PyPI (docs: ros2-from-pip.md §6).
Every function is vectorised numpy over the whole buffer; reads return zero-copy, read-only views of the message
buffer where the layout allows it. Malformed input raises ``ValueError`` naming the encoding, field or sizes
(message strings in it shortened and made printable, ``safe_text``).

Conventions written by this module:

- Images and clouds are little-endian (``is_bigendian = 0``); both byte orders are read.
- Clouds are unorganised (``height = 1``), fields ``x, y, z`` FLOAT32 at offsets 0/4/8, extra per-point fields packed
  after them in the given order, ``is_dense`` true exactly when every coordinate is finite.
- Boxes are ``(x0, y0, x1, y1)`` pixels; a detection's class and score are those of its best hypothesis.
"""

from __future__ import annotations

import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header
from vision_msgs.msg import (BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesis,
                             ObjectHypothesisWithPose)

from mesc3d_ros.intrinsics_check import intrinsics_problem
from mesc3d_ros.safe_text import printable

# encoding -> (little-endian dtype, channels); the subset of sensor_msgs/image_encodings.h this project handles.
IMAGE_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    'rgb8': (np.dtype('u1'), 3),
    'bgr8': (np.dtype('u1'), 3),
    'rgba8': (np.dtype('u1'), 4),
    'bgra8': (np.dtype('u1'), 4),
    'mono8': (np.dtype('u1'), 1),
    '8UC1': (np.dtype('u1'), 1),
    'mono16': (np.dtype('<u2'), 1),
    '16UC1': (np.dtype('<u2'), 1),
    '32FC1': (np.dtype('<f4'), 1),
}

# sensor_msgs/PointField datatype constants <-> little-endian numpy dtypes.
POINT_FIELD_DTYPES: dict[int, np.dtype] = {
    PointField.INT8: np.dtype('i1'),
    PointField.UINT8: np.dtype('u1'),
    PointField.INT16: np.dtype('<i2'),
    PointField.UINT16: np.dtype('<u2'),
    PointField.INT32: np.dtype('<i4'),
    PointField.UINT32: np.dtype('<u4'),
    PointField.FLOAT32: np.dtype('<f4'),
    PointField.FLOAT64: np.dtype('<f8'),
}
_POINT_FIELD_TYPES = {dtype: datatype for datatype, dtype in POINT_FIELD_DTYPES.items()}
XYZ_FIELDS = ('x', 'y', 'z')


def stamp_to_ns(stamp: Time) -> int:
    """
    Return a ``builtin_interfaces/Time`` as integer nanoseconds (exact, unlike a float of seconds).

    Raises ValueError for ``nanosec`` >= 10⁹: such a stamp is not normalised, and summing it would make different
    (sec, nanosec) pairs equal (sec S with nanosec 4294967295 is S + 4 s), so matching on the sum would pair
    messages whose headers differ. With nanosec validated, equal sums are exactly equal (sec, nanosec).
    """
    if not 0 <= stamp.nanosec < 1_000_000_000:
        raise ValueError(f'stamp nanosec {stamp.nanosec} is not below 10^9 (sec {stamp.sec})')
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def _with_byte_order(dtype: np.dtype, big_endian: bool) -> np.dtype:
    return dtype.newbyteorder('>' if big_endian else '<')


def _readonly(view: np.ndarray) -> np.ndarray:
    # The view aliases the message buffer: writing through it would silently change the message.
    view.flags.writeable = False
    return view


def _native(values: np.ndarray) -> np.ndarray:
    """``values`` itself when its byte order is native (zero copy), else a native-order copy."""
    return values if values.dtype.isnative else values.astype(values.dtype.newbyteorder('='))


def _byte_array(values: np.ndarray) -> array.array:
    """Return the bytes of a C-contiguous array as the ``array('B')`` of message ``uint8[]`` fields (one memcpy)."""
    data = array.array('B')
    data.frombytes(memoryview(values).cast('B'))
    return data


def _byte_rows(data: Sequence[int], rows: int, step: int, row_bytes: int, what: str) -> np.ndarray:
    """(rows, row_bytes) uint8 view of a row-padded message buffer; checks the sizes agree."""
    if step < row_bytes:
        raise ValueError(f'{what}: step {step} bytes is shorter than one row of {row_bytes} bytes')
    if len(data) != rows * step:
        raise ValueError(f'{what}: data holds {len(data)} bytes, expected height {rows} x step {step} = '
                         f'{rows * step}')
    return np.frombuffer(data, dtype=np.uint8).reshape(rows, step)[:, :row_bytes]


# ---- Image ------------------------------------------------------------------------------------------------------

def image_to_numpy(msg: Image) -> np.ndarray:
    """
    Pixels of ``msg`` as (H, W, C), or (H, W) for one-channel encodings, in native byte order.

    A read-only view of ``msg.data`` (row padding skipped by strides) unless the message's byte order differs from
    the host's, in which case the pixels are copied into native order.
    """
    if msg.encoding not in IMAGE_ENCODINGS:
        raise ValueError(f'unsupported image encoding {printable(msg.encoding)!r}; supported: '
                         f'{sorted(IMAGE_ENCODINGS)}')
    dtype, channels = IMAGE_ENCODINGS[msg.encoding]
    dtype = _with_byte_order(dtype, bool(msg.is_bigendian))
    height, width, step = msg.height, msg.width, msg.step
    rows = _byte_rows(msg.data, height, step, width * channels * dtype.itemsize,
                      f'{msg.encoding} image {width}x{height}')
    pixels = rows.view(dtype).reshape(height, width, channels)  # (H, W, C)
    if channels == 1:
        pixels = pixels[:, :, 0]  # (H, W)
    return _readonly(_native(pixels))


def image_to_rgb(msg: Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an rgb8, bgr8, rgba8, bgra8, mono8 or 8UC1 image; ValueError for anything else."""
    pixels = image_to_numpy(msg)  # first: an unknown encoding is named with the supported ones
    if msg.encoding in ('rgb8', 'rgba8'):
        return np.ascontiguousarray(pixels[:, :, :3])
    if msg.encoding in ('bgr8', 'bgra8'):
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    if msg.encoding in ('mono8', '8UC1'):
        return np.repeat(pixels[:, :, None], 3, axis=2)
    raise ValueError(f'image encoding {printable(msg.encoding)!r} is not a colour encoding; use rgb8, bgr8, rgba8, '
                     f'bgra8 or mono8')


def depth_to_metres(msg: Image, scale_m: float) -> np.ndarray:
    """
    Return (H, W) float32 metres of a 16UC1, mono16 or 32FC1 depth image; ValueError for any other encoding.

    16UC1/mono16 counts × ``scale_m`` (0 stays 0: no reading); 32FC1 is metres (NaN and 0 kept: no reading).
    """
    pixels = image_to_numpy(msg)
    if msg.encoding in ('16UC1', 'mono16'):
        return pixels.astype(np.float32) * np.float32(scale_m)
    if msg.encoding == '32FC1':
        return pixels  # a read-only view of the message (or a native-order copy)
    raise ValueError(f'depth encoding {printable(msg.encoding)!r} is not 16UC1, mono16 or 32FC1')


def numpy_to_image(pixels: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """Return an Image of ``pixels`` ((H, W, C), or (H, W) for one channel) with no row padding, little-endian."""
    if encoding not in IMAGE_ENCODINGS:
        raise ValueError(f'unsupported image encoding {encoding!r}; supported: {sorted(IMAGE_ENCODINGS)}')
    dtype, channels = IMAGE_ENCODINGS[encoding]
    pixels = np.asarray(pixels)
    if pixels.dtype.kind != dtype.kind or pixels.dtype.itemsize != dtype.itemsize:
        raise ValueError(f'encoding {encoding!r} needs {dtype.name} pixels, got {pixels.dtype}')
    if channels == 1 and pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    expected_ndim = 2 if channels == 1 else 3
    if pixels.ndim != expected_ndim or (channels > 1 and pixels.shape[2] != channels):
        wanted = '(H, W)' if channels == 1 else f'(H, W, {channels})'
        raise ValueError(f'encoding {encoding!r} needs a {wanted} array, got shape {pixels.shape}')
    pixels = np.ascontiguousarray(pixels, dtype=dtype)  # copies only for a view, a byte swap or a big-endian host
    height, width = pixels.shape[:2]
    return Image(header=header if header is not None else Header(), height=height, width=width,
                 encoding=encoding, is_bigendian=0, step=width * channels * dtype.itemsize,
                 data=_byte_array(pixels))


# ---- PointCloud2 ------------------------------------------------------------------------------------------------

def points_to_cloud(points: np.ndarray, header: Header,
                    fields: Mapping[str, np.ndarray] | None = None) -> PointCloud2:
    """
    Return an unorganised PointCloud2 of (N, 3) ``points`` plus optional named per-point (N,) ``fields``.

    Coordinates are stored as FLOAT32; each extra field keeps its dtype (any PointField type) and follows x, y, z
    in the order given, packed without padding.
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f'points must have shape (N, 3), got {points.shape}')
    if points.dtype.kind not in 'fiu':
        raise ValueError(f'points must be numeric, got dtype {points.dtype}')
    count = points.shape[0]
    extras = {} if fields is None else dict(fields)
    layout = [(name, np.dtype('<f4')) for name in XYZ_FIELDS]
    for name, values in extras.items():
        values = np.asarray(values)
        if name in XYZ_FIELDS or not name:
            raise ValueError(f'extra point field name {name!r} is empty or clashes with x, y, z')
        if values.shape != (count,):
            raise ValueError(f'point field {name!r} has shape {values.shape}, expected ({count},) for {count} points')
        little = values.dtype.newbyteorder('<')
        if little not in _POINT_FIELD_TYPES:
            raise ValueError(f'point field {name!r} has dtype {values.dtype}, which PointField cannot represent; '
                             f'use one of {sorted(str(d) for d in _POINT_FIELD_TYPES)}')
        layout.append((name, little))
        extras[name] = values
    record = np.dtype(layout)  # packed: offsets are the running sum of the item sizes, x/y/z at 0/4/8
    table = np.empty(count, dtype=record)  # (N,) one record per point
    for axis, name in enumerate(XYZ_FIELDS):
        table[name] = points[:, axis]
    for name, values in extras.items():
        table[name] = values
    point_fields = [PointField(name=name, offset=record.fields[name][1], datatype=_POINT_FIELD_TYPES[dtype], count=1)
                    for name, dtype in layout]
    return PointCloud2(header=header, height=1, width=count, fields=point_fields, is_bigendian=False,
                       point_step=record.itemsize, row_step=record.itemsize * count,
                       is_dense=bool(np.isfinite(points).all()), data=_byte_array(table))


def cloud_to_structured(msg: PointCloud2) -> np.ndarray:
    """
    All points of ``msg`` as an (height · width,) structured array with one named member per PointField.

    A read-only view of ``msg.data`` when rows are unpadded (always, for unorganised clouds); fields with
    ``count > 1`` become sub-arrays. The members keep the message's byte order (numpy reads either correctly).
    """
    names, formats, offsets = [], [], []
    for point_field in msg.fields:
        if point_field.datatype not in POINT_FIELD_DTYPES:
            raise ValueError(f'point field {point_field.name!r} has unknown datatype {point_field.datatype}')
        dtype = _with_byte_order(POINT_FIELD_DTYPES[point_field.datatype], msg.is_bigendian)
        if point_field.count > 1:
            dtype = np.dtype((dtype, (point_field.count,)))
        if point_field.offset + dtype.itemsize > msg.point_step:
            raise ValueError(f'point field {point_field.name!r} at offset {point_field.offset} with '
                             f'{dtype.itemsize} bytes does not fit in point_step {msg.point_step}')
        names.append(point_field.name)
        formats.append(dtype)
        offsets.append(point_field.offset)
    if len(set(names)) != len(names):
        raise ValueError(f'point cloud repeats a field name: {names}')
    if msg.point_step == 0 and msg.width * msg.height:
        raise ValueError(f'point cloud of {msg.width}x{msg.height} points has point_step 0')
    record = np.dtype({'names': names, 'formats': formats, 'offsets': offsets, 'itemsize': msg.point_step})
    rows = _byte_rows(msg.data, msg.height, msg.row_step, msg.width * msg.point_step,
                      f'point cloud {msg.width}x{msg.height} (point_step {msg.point_step})')
    return _readonly(rows.view(record).reshape(-1))  # copies only when organised rows are padded


def cloud_to_xyz(msg: PointCloud2) -> np.ndarray:
    """(N, 3) float32 coordinates of every point of ``msg`` (a copy), whatever the x/y/z field types."""
    table = cloud_to_structured(msg)
    missing = [name for name in XYZ_FIELDS if name not in (table.dtype.names or ())]
    if missing:
        raise ValueError(f'point cloud has no field(s) {missing}; fields: {table.dtype.names}')
    xyz = np.empty((table.shape[0], 3), dtype=np.float32)  # (N, 3)
    for axis, name in enumerate(XYZ_FIELDS):
        xyz[:, axis] = table[name]
    return xyz


# ---- Detection2DArray -------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Detections2D:
    """The detections of one Detection2DArray as arrays, in message order."""

    boxes: np.ndarray
    """(K, 4) float64 axis-aligned (x0, y0, x1, y1) pixels."""
    class_ids: list[str]
    """Class of each detection's best hypothesis; ``''`` for a detection with no hypotheses."""
    scores: np.ndarray
    """(K,) float64 score of that hypothesis; 0 for a detection with no hypotheses."""
    ids: list[str]
    """``Detection2D.id`` (tracking id; often empty)."""


def _box_center(bbox: BoundingBox2D):
    """
    Return the object holding a box centre's ``x`` and ``y``: the one place that knows where vision_msgs keeps it.

    vision_msgs 4.x (Humble and later) nests it as ``bbox.center.position`` (its own Pose2D with a Point2D);
    3.x used geometry_msgs/Pose2D with ``bbox.center.x``. Reads and writes both go through here.
    """
    center = bbox.center
    return getattr(center, 'position', center)


def detections_to_arrays(msg: Detection2DArray) -> Detections2D:
    """
    Boxes, best-hypothesis classes and scores, and ids of every detection in ``msg``.

    A rotated box (``theta != 0``) becomes the axis-aligned box that encloses it.
    """
    detections = msg.detections
    count = len(detections)
    geometry = np.empty((count, 5), dtype=np.float64)  # (K, 5) cx, cy, size_x, size_y, theta
    scores = np.zeros(count, dtype=np.float64)
    class_ids = [''] * count
    for row, detection in enumerate(detections):
        center = _box_center(detection.bbox)
        geometry[row] = (center.x, center.y, detection.bbox.size_x, detection.bbox.size_y, detection.bbox.center.theta)
        if detection.results:
            best = max(detection.results, key=lambda result: result.hypothesis.score).hypothesis
            class_ids[row], scores[row] = best.class_id, best.score
    cx, cy, size_x, size_y, theta = geometry.T
    # Non-finite or huge message values give NaN/inf boxes, which the pipeline reports as degenerate; numpy's
    # warnings about them would only leak to stderr.
    with np.errstate(all='ignore'):
        cos, sin = np.abs(np.cos(theta)), np.abs(np.sin(theta))
        half_w = (cos * size_x + sin * size_y) / 2  # half extent of the enclosing axis-aligned box
        half_h = (sin * size_x + cos * size_y) / 2
        boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)  # (K, 4) xyxy pixels
    return Detections2D(boxes=boxes, class_ids=class_ids, scores=scores,
                        ids=[detection.id for detection in detections])


def arrays_to_detections(boxes: np.ndarray, class_ids: Sequence[str], scores: np.ndarray, header: Header,
                         ids: Sequence[str] | None = None) -> Detection2DArray:
    """Return a Detection2DArray of axis-aligned (K, 4) xyxy pixel ``boxes``, one hypothesis each, headed ``header``."""
    boxes = np.asarray(boxes, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f'boxes must have shape (K, 4), got {boxes.shape}')
    count = boxes.shape[0]
    ids = [''] * count if ids is None else list(ids)
    if scores.shape != (count,) or len(class_ids) != count or len(ids) != count:
        raise ValueError(f'{count} boxes need {count} class ids, scores and ids; got {len(class_ids)} class ids, '
                         f'scores of shape {scores.shape} and {len(ids)} ids')
    if not np.isfinite(boxes).all() or (boxes[:, 2:] < boxes[:, :2]).any():
        raise ValueError(f'boxes must be finite with x0 <= x1 and y0 <= y1, got {boxes.tolist()}')
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2  # (K, 2) pixels
    sizes = boxes[:, 2:] - boxes[:, :2]  # (K, 2) pixels
    detections = []
    for (cx, cy), (size_x, size_y), class_id, score, detection_id in zip(
            centers.tolist(), sizes.tolist(), class_ids, scores.tolist(), ids):
        bbox = BoundingBox2D(size_x=size_x, size_y=size_y)
        center = _box_center(bbox)
        center.x, center.y = cx, cy
        hypothesis = ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=class_id, score=score))
        detections.append(Detection2D(header=header, results=[hypothesis], bbox=bbox, id=detection_id))
    return Detection2DArray(header=header, detections=detections)


# ---- CameraInfo -------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class CameraIntrinsics:
    """Pinhole intrinsics of one camera, in pixels, for the OpenCV optical frame (x right, y down, z forward)."""

    k: np.ndarray
    """(3, 3) float64 camera matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]."""
    width: int
    height: int
    distortion_model: str = 'plumb_bob'
    distortion: np.ndarray = field(default_factory=lambda: np.zeros(5))
    """(D,) float64 coefficients of ``distortion_model`` (plumb_bob: k1, k2, t1, t2, k3)."""


def _check_k(k: np.ndarray, width: int, height: int, where: str) -> np.ndarray:
    """(3, 3) float64 K, if it is a calibrated pinhole matrix plausible for a ``width`` x ``height`` image."""
    k = np.asarray(k, dtype=np.float64)
    if k.shape != (3, 3):
        raise ValueError(f'{where}: K must be 3x3, got shape {k.shape}')
    if not k.any():
        raise ValueError(f'{where}: K is all zeros (uncalibrated camera)')
    problem = intrinsics_problem(k, width, height)
    if problem is not None:
        raise ValueError(f'{where}: implausible intrinsics: {problem}')
    return k


def camera_info_to_intrinsics(msg: CameraInfo) -> CameraIntrinsics:
    """
    Return K, image size and distortion of ``msg``.

    Raises ValueError for an uncalibrated (all-zero), malformed or implausible K (``intrinsics_check``: focal
    lengths, principal point and skew within what a real camera of that size has).
    """
    where = f'CameraInfo (frame {printable(msg.header.frame_id)!r})'
    if msg.width == 0 or msg.height == 0:
        raise ValueError(f'{where}: image size {msg.width}x{msg.height} is empty')
    return CameraIntrinsics(k=_check_k(np.asarray(msg.k, dtype=np.float64).reshape(3, 3), msg.width, msg.height,
                                       where),
                            width=msg.width, height=msg.height, distortion_model=msg.distortion_model,
                            distortion=np.asarray(msg.d, dtype=np.float64))


def intrinsics_to_camera_info(intrinsics: CameraIntrinsics, header: Header | None = None) -> CameraInfo:
    """Return a monocular CameraInfo: ``k`` = K, ``p`` = [K | 0], ``r`` = identity."""
    k = _check_k(intrinsics.k, intrinsics.width, intrinsics.height, 'CameraIntrinsics')
    projection = np.hstack([k, np.zeros((3, 1))])  # (3, 4)
    return CameraInfo(header=header if header is not None else Header(), width=intrinsics.width,
                      height=intrinsics.height, distortion_model=intrinsics.distortion_model,
                      d=np.asarray(intrinsics.distortion, dtype=np.float64).ravel().tolist(),
                      k=k.ravel(), r=np.eye(3).ravel(), p=projection.ravel())
