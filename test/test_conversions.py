"""
Round trips of every conversion in mesc3d_ros.conversions, including real CDR serialisation, and its errors.

Messages with padding and big-endian data are built by hand here from the documented layouts, so the decoders are
checked against the wire format rather than against our own encoders.
"""

from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from hypothesis import given, settings
from hypothesis import strategies as st
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header
from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesis, ObjectHypothesisWithPose

from mesc3d_ros.conversions import (IMAGE_ENCODINGS, CameraIntrinsics, arrays_to_detections,
                                    camera_info_to_intrinsics, cloud_to_structured, cloud_to_xyz, depth_to_metres,
                                    detections_to_arrays, image_to_numpy, image_to_rgb, intrinsics_to_camera_info,
                                    numpy_to_image, points_to_cloud, stamp_to_ns)

HEADER = Header(stamp=Time(sec=17, nanosec=250_000_000), frame_id='camera_optical')
PADDING_BYTE = 0xAB  # fills row padding; must never show up in decoded pixels


def cdr_round_trip(msg):
    return deserialize_message(serialize_message(msg), type(msg))


def random_pixels(rng: np.random.Generator, encoding: str, height: int, width: int) -> np.ndarray:
    """(H, W[, C]) native-order pixels with random bits (NaN payloads included for 32FC1)."""
    dtype, channels = IMAGE_ENCODINGS[encoding]
    shape = (height, width) if channels == 1 else (height, width, channels)
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype.newbyteorder('=')).reshape(shape)


def hand_built_image(pixels: np.ndarray, encoding: str, padding: int, big_endian: bool) -> Image:
    """Build an Image laid out as sensor_msgs documents it: rows of ``step`` bytes, trailing padding, byte order."""
    height, width = pixels.shape[:2]
    ordered = pixels.astype(pixels.dtype.newbyteorder('>' if big_endian else '<'))
    rows = ordered.reshape(height, -1).view(np.uint8)  # (H, W·C·itemsize)
    padded = np.full((height, rows.shape[1] + padding), PADDING_BYTE, dtype=np.uint8)
    padded[:, :rows.shape[1]] = rows
    return Image(header=HEADER, height=height, width=width, encoding=encoding, is_bigendian=int(big_endian),
                 step=padded.shape[1], data=padded.tobytes())


# ---- Image ------------------------------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(encoding=st.sampled_from(sorted(IMAGE_ENCODINGS)), height=st.integers(1, 9), width=st.integers(1, 9),
       padding=st.integers(0, 7), big_endian=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_image_decodes_padded_rows_and_either_byte_order_through_cdr(encoding, height, width, padding, big_endian,
                                                                     seed):
    pixels = random_pixels(np.random.default_rng(seed), encoding, height, width)
    msg = hand_built_image(pixels, encoding, padding, big_endian)
    for candidate in (msg, cdr_round_trip(msg)):
        decoded = image_to_numpy(candidate)
        assert decoded.shape == pixels.shape and decoded.dtype == pixels.dtype
        assert decoded.tobytes() == pixels.tobytes()  # bit-exact, NaN payloads included


@settings(max_examples=60, deadline=None)
@given(encoding=st.sampled_from(sorted(IMAGE_ENCODINGS)), height=st.integers(1, 9), width=st.integers(1, 9),
       seed=st.integers(0, 2**32 - 1))
def test_image_encode_decode_round_trip_through_cdr(encoding, height, width, seed):
    pixels = random_pixels(np.random.default_rng(seed), encoding, height, width)
    msg = cdr_round_trip(numpy_to_image(pixels, encoding, HEADER))
    dtype, channels = IMAGE_ENCODINGS[encoding]
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian) == (height, width, encoding, 0)
    assert msg.step == width * channels * dtype.itemsize
    assert msg.header == HEADER
    assert image_to_numpy(msg).tobytes() == pixels.tobytes()


def test_image_decode_is_a_read_only_view_of_the_message_buffer():
    pixels = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    msg = hand_built_image(pixels, 'rgb8', padding=3, big_endian=False)
    decoded = image_to_numpy(msg)
    assert np.shares_memory(decoded, np.frombuffer(msg.data, dtype=np.uint8))
    assert not decoded.flags.writeable
    with pytest.raises(ValueError):
        decoded[0, 0, 0] = 1


def test_one_channel_images_accept_a_trailing_channel_axis():
    pixels = np.arange(6, dtype=np.uint16).reshape(2, 3, 1)
    assert np.array_equal(image_to_numpy(numpy_to_image(pixels, 'mono16')), pixels[:, :, 0])


def test_unsupported_encoding_is_named():
    msg = Image(height=1, width=2, encoding='yuv422', step=4, data=bytes(4))
    with pytest.raises(ValueError, match="'yuv422'"):
        image_to_numpy(msg)
    with pytest.raises(ValueError, match="'bayer_rggb8'"):
        numpy_to_image(np.zeros((2, 2), np.uint8), 'bayer_rggb8')


def test_inconsistent_image_sizes_are_named():
    with pytest.raises(ValueError, match=r'data holds 20 bytes, expected height 2 x step 12 = 24'):
        image_to_numpy(Image(height=2, width=4, encoding='rgb8', step=12, data=bytes(20)))
    with pytest.raises(ValueError, match=r'step 10 bytes is shorter than one row of 12 bytes'):
        image_to_numpy(Image(height=2, width=4, encoding='rgb8', step=10, data=bytes(20)))


def test_pixels_of_the_wrong_dtype_or_shape_are_rejected():
    with pytest.raises(ValueError, match=r"'rgb8' needs uint8 pixels, got float64"):
        numpy_to_image(np.zeros((2, 2, 3)), 'rgb8')
    with pytest.raises(ValueError, match=r"'bgra8' needs a \(H, W, 4\) array, got shape \(2, 2, 3\)"):
        numpy_to_image(np.zeros((2, 2, 3), np.uint8), 'bgra8')
    with pytest.raises(ValueError, match=r"'32FC1' needs a \(H, W\) array, got shape \(2, 2, 2\)"):
        numpy_to_image(np.zeros((2, 2, 2), np.float32), '32FC1')


# ---- the node's inputs: RGB and metric depth --------------------------------------------------------------------

SCENE_RGB = np.random.default_rng(3).integers(0, 256, (3, 5, 3), dtype=np.uint8)  # (H, W, 3) what the camera saw
ALPHA = np.random.default_rng(4).integers(0, 256, (3, 5, 1), dtype=np.uint8)  # (H, W, 1) ignored by the node


@pytest.mark.parametrize('padding', [0, 5])
@pytest.mark.parametrize('encoding, pixels', [
    ('rgb8', SCENE_RGB),
    ('bgr8', SCENE_RGB[:, :, ::-1]),
    ('rgba8', np.concatenate([SCENE_RGB, ALPHA], axis=2)),
    ('bgra8', np.concatenate([SCENE_RGB[:, :, ::-1], ALPHA], axis=2)),
])
def test_colour_images_come_back_as_the_rgb_they_encode(encoding, pixels, padding):
    msg = hand_built_image(np.ascontiguousarray(pixels), encoding, padding, big_endian=False)
    assert msg.step == 5 * IMAGE_ENCODINGS[encoding][1] + padding
    for candidate in (msg, cdr_round_trip(msg)):
        rgb = image_to_rgb(candidate)
        assert rgb.dtype == np.uint8 and rgb.flags.c_contiguous  # what crop_and_resize expects
        np.testing.assert_array_equal(rgb, SCENE_RGB)


@pytest.mark.parametrize('padding', [0, 3])
@pytest.mark.parametrize('encoding', ['mono8', '8UC1'])
def test_mono_images_become_grey_rgb(encoding, padding):
    grey = SCENE_RGB[:, :, 0]  # (H, W)
    msg = hand_built_image(grey, encoding, padding, big_endian=False)
    for candidate in (msg, cdr_round_trip(msg)):
        np.testing.assert_array_equal(image_to_rgb(candidate), np.stack([grey] * 3, axis=2))


def test_images_that_are_no_colour_are_refused_naming_the_encoding():
    with pytest.raises(ValueError, match="image encoding '32FC1' is not a colour encoding"):
        image_to_rgb(numpy_to_image(np.zeros((2, 2), np.float32), '32FC1'))
    with pytest.raises(ValueError, match="image encoding '16UC1' is not a colour encoding"):
        image_to_rgb(numpy_to_image(np.zeros((2, 2), np.uint16), '16UC1'))
    with pytest.raises(ValueError, match="unsupported image encoding 'yuv422'"):
        image_to_rgb(Image(height=1, width=2, encoding='yuv422', step=4, data=bytes(4)))


@pytest.mark.parametrize('big_endian', [False, True])
@pytest.mark.parametrize('encoding', ['16UC1', 'mono16'])
def test_16_bit_depth_is_counts_times_the_scale_and_0_stays_no_reading(encoding, big_endian):
    counts = np.array([[0, 1, 1000], [65535, 0, 1234]], dtype=np.uint16)  # (H, W) sensor counts, 0 = no reading
    msg = hand_built_image(counts, encoding, padding=2, big_endian=big_endian)
    for candidate in (msg, cdr_round_trip(msg)):
        metres = depth_to_metres(candidate, 0.001)
        assert metres.dtype == np.float32 and metres.shape == (2, 3)
        np.testing.assert_array_equal(metres, counts.astype(np.float32) * np.float32(0.001))
        assert metres[0, 0] == 0.0 and metres[1, 1] == 0.0
    np.testing.assert_allclose(depth_to_metres(msg, 1e-4), counts * 1e-4, rtol=1e-6)


@pytest.mark.parametrize('big_endian', [False, True])
def test_32fc1_depth_is_metres_with_nan_and_0_kept_as_no_reading(big_endian):
    metres = np.array([[0.5, np.nan, 0.0], [np.inf, 12.25, 1e-4]], dtype=np.float32)  # (H, W) metres
    msg = hand_built_image(metres, '32FC1', padding=4, big_endian=big_endian)
    for candidate in (msg, cdr_round_trip(msg)):
        depth = depth_to_metres(candidate, 0.001)  # the scale is for 16-bit counts only
        assert depth.dtype == np.float32
        np.testing.assert_array_equal(depth, metres)  # NaN where NaN, 0 where 0


def test_depth_of_another_encoding_is_refused_naming_it():
    with pytest.raises(ValueError, match="depth encoding 'rgb8' is not 16UC1, mono16 or 32FC1"):
        depth_to_metres(numpy_to_image(np.zeros((2, 2, 3), np.uint8), 'rgb8'), 0.001)
    with pytest.raises(ValueError, match="unsupported image encoding '64FC1'"):
        depth_to_metres(Image(height=1, width=1, encoding='64FC1', step=8, data=bytes(8)), 0.001)


# ---- PointCloud2 ------------------------------------------------------------------------------------------------

EXTRA_DTYPES = ['i1', 'u1', '<i2', '<u2', '<i4', '<u4', '<f4', '<f8']


@settings(max_examples=60, deadline=None)
@given(count=st.integers(0, 40), extra_dtypes=st.lists(st.sampled_from(EXTRA_DTYPES), max_size=3),
       seed=st.integers(0, 2**32 - 1))
def test_cloud_round_trip_with_and_without_extra_fields_through_cdr(count, extra_dtypes, seed):
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(count, 3)).astype(np.float32)  # (N, 3) metres
    extras = {f'field_{i}': rng.integers(0, 100, size=count).astype(dtype) for i, dtype in enumerate(extra_dtypes)}
    msg = cdr_round_trip(points_to_cloud(points, HEADER, extras))
    assert (msg.height, msg.width, msg.is_bigendian, msg.is_dense) == (1, count, False, True)
    assert [(f.name, f.offset, f.datatype) for f in msg.fields[:3]] == [
        ('x', 0, PointField.FLOAT32), ('y', 4, PointField.FLOAT32), ('z', 8, PointField.FLOAT32)]
    assert msg.point_step == 12 + sum(np.dtype(d).itemsize for d in extra_dtypes)
    assert msg.row_step == msg.point_step * count and len(msg.data) == msg.row_step
    assert np.array_equal(cloud_to_xyz(msg), points)
    table = cloud_to_structured(msg)
    assert table.dtype.names == ('x', 'y', 'z', *extras)
    for name, values in extras.items():
        assert table[name].dtype == values.dtype and np.array_equal(table[name], values)


def test_cloud_with_an_object_id_field_has_the_documented_layout():
    points = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=np.float32)
    msg = points_to_cloud(points, HEADER, {'object_id': np.array([7, 9], dtype=np.uint32)})
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ('x', 0, PointField.FLOAT32, 1), ('y', 4, PointField.FLOAT32, 1), ('z', 8, PointField.FLOAT32, 1),
        ('object_id', 12, PointField.UINT32, 1)]
    expected = np.array([(1, 2, 3, 7), (4, 5, 6, 9)], dtype='<f4,<f4,<f4,<u4').tobytes()
    assert bytes(msg.data) == expected


def test_cloud_with_nan_is_not_dense():
    assert not points_to_cloud(np.array([[0.0, np.nan, 1.0]]), HEADER).is_dense


def test_hand_built_big_endian_organised_cloud_with_padded_rows_is_read():
    # 2 rows x 3 points; point = x, y, z float32 + intensity float64 at offset 16 (4 unused bytes at 12);
    # each row padded by 5 bytes.
    record = np.dtype({'names': ['x', 'y', 'z', 'intensity'], 'formats': ['>f4', '>f4', '>f4', '>f8'],
                       'offsets': [0, 4, 8, 16], 'itemsize': 24})
    values = np.zeros((2, 3), dtype=record)
    values['x'], values['y'], values['z'] = np.arange(6).reshape(2, 3), 10, np.arange(6).reshape(2, 3) * 2
    values['intensity'] = 0.5
    rows = np.full((2, 3 * 24 + 5), PADDING_BYTE, dtype=np.uint8)
    rows[:, :72] = values.view(np.uint8).reshape(2, 72)
    msg = PointCloud2(header=HEADER, height=2, width=3, is_bigendian=True, point_step=24, row_step=77,
                      is_dense=True, data=rows.tobytes(), fields=[
                          PointField(name='x', offset=0, datatype=PointField.FLOAT32, count=1),
                          PointField(name='y', offset=4, datatype=PointField.FLOAT32, count=1),
                          PointField(name='z', offset=8, datatype=PointField.FLOAT32, count=1),
                          PointField(name='intensity', offset=16, datatype=PointField.FLOAT64, count=1)])
    xyz = cloud_to_xyz(cdr_round_trip(msg))
    assert xyz.dtype == np.float32 and xyz.shape == (6, 3)
    assert np.array_equal(xyz, np.stack([np.arange(6), np.full(6, 10), np.arange(6) * 2], axis=1))
    assert np.array_equal(cloud_to_structured(msg)['intensity'], np.full(6, 0.5))


def test_bad_clouds_are_rejected_with_the_reason():
    with pytest.raises(ValueError, match=r'shape \(N, 3\), got \(4, 2\)'):
        points_to_cloud(np.zeros((4, 2)), HEADER)
    with pytest.raises(ValueError, match=r"'object_id' has shape \(3,\), expected \(4,\)"):
        points_to_cloud(np.zeros((4, 3)), HEADER, {'object_id': np.zeros(3, np.uint32)})
    with pytest.raises(ValueError, match=r"'z' is empty or clashes"):
        points_to_cloud(np.zeros((4, 3)), HEADER, {'z': np.zeros(4, np.float32)})
    with pytest.raises(ValueError, match=r"'stamp' has dtype int64"):
        points_to_cloud(np.zeros((4, 3)), HEADER, {'stamp': np.zeros(4, np.int64)})
    truncated = points_to_cloud(np.zeros((4, 3)), HEADER)
    truncated.data = truncated.data[:-1]
    with pytest.raises(ValueError, match=r'data holds 47 bytes, expected height 1 x step 48 = 48'):
        cloud_to_xyz(truncated)
    no_z = PointCloud2(height=1, width=1, point_step=8, row_step=8, data=bytes(8), fields=[
        PointField(name='x', offset=0, datatype=PointField.FLOAT32, count=1),
        PointField(name='y', offset=4, datatype=PointField.FLOAT32, count=1)])
    with pytest.raises(ValueError, match=r"no field\(s\) \['z'\]"):
        cloud_to_xyz(no_z)
    overflowing = PointCloud2(height=1, width=1, point_step=8, row_step=8, data=bytes(8), fields=[
        PointField(name='x', offset=6, datatype=PointField.FLOAT32, count=1)])
    with pytest.raises(ValueError, match=r"'x' at offset 6 with 4 bytes does not fit in point_step 8"):
        cloud_to_structured(overflowing)


# ---- Detection2DArray -------------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(count=st.integers(0, 6), seed=st.integers(0, 2**32 - 1))
def test_detections_round_trip_through_cdr(count, seed):
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0, 600, size=(count, 2))
    boxes = np.hstack([corner, corner + rng.uniform(1, 100, size=(count, 2))])  # (K, 4) xyxy pixels
    class_ids = [f'class_{i}' for i in rng.integers(0, 5, size=count)]
    scores = rng.uniform(0, 1, size=count)
    ids = [f'track_{i}' for i in range(count)]
    arrays = detections_to_arrays(cdr_round_trip(arrays_to_detections(boxes, class_ids, scores, HEADER, ids)))
    assert np.allclose(arrays.boxes, boxes, rtol=0, atol=1e-9)
    assert arrays.class_ids == class_ids and arrays.ids == ids
    assert np.array_equal(arrays.scores, scores)


def test_detection_box_centre_is_where_vision_msgs_4_keeps_it():
    msg = arrays_to_detections(np.array([[10.0, 20.0, 50.0, 80.0]]), ['cup'], np.array([0.5]), HEADER)
    bbox = msg.detections[0].bbox
    assert (bbox.center.position.x, bbox.center.position.y, bbox.size_x, bbox.size_y) == (30.0, 50.0, 40.0, 60.0)
    assert msg.header == HEADER and msg.detections[0].header == HEADER


def test_best_hypothesis_wins_and_a_detection_without_hypotheses_is_empty():
    def hypothesis(class_id: str, score: float) -> ObjectHypothesisWithPose:
        return ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=class_id, score=score))

    several = Detection2D(results=[hypothesis('cup', 0.2), hypothesis('bowl', 0.7), hypothesis('mug', 0.1)])
    arrays = detections_to_arrays(Detection2DArray(detections=[several, Detection2D()]))
    assert arrays.class_ids == ['bowl', ''] and np.array_equal(arrays.scores, [0.7, 0.0])


def test_rotated_box_becomes_its_enclosing_axis_aligned_box():
    detection = Detection2D()
    detection.bbox.center.position.x, detection.bbox.center.position.y = 100.0, 50.0
    detection.bbox.center.theta = np.pi / 2  # a 40 x 10 box turned upright is 10 wide and 40 tall
    detection.bbox.size_x, detection.bbox.size_y = 40.0, 10.0
    boxes = detections_to_arrays(Detection2DArray(detections=[detection])).boxes
    assert np.allclose(boxes, [[95.0, 30.0, 105.0, 70.0]])


def test_inconsistent_detection_arrays_are_rejected():
    with pytest.raises(ValueError, match=r'shape \(K, 4\), got \(2, 3\)'):
        arrays_to_detections(np.zeros((2, 3)), ['a', 'b'], np.zeros(2), HEADER)
    with pytest.raises(ValueError, match=r'2 boxes need 2 class ids, scores and ids; got 1 class ids'):
        arrays_to_detections(np.zeros((2, 4)), ['a'], np.zeros(2), HEADER)
    with pytest.raises(ValueError, match=r'x0 <= x1'):
        arrays_to_detections(np.array([[10.0, 0.0, 5.0, 1.0]]), ['a'], np.zeros(1), HEADER)


# ---- CameraInfo -------------------------------------------------------------------------------------------------

def test_camera_info_round_trip_through_cdr():
    k = np.array([[525.0, 0.0, 319.5], [0.0, 530.0, 239.5], [0.0, 0.0, 1.0]])
    distortion = np.array([0.1, -0.2, 0.001, 0.002, 0.05])
    msg = cdr_round_trip(intrinsics_to_camera_info(
        CameraIntrinsics(k=k, width=640, height=480, distortion=distortion), HEADER))
    assert np.array_equal(np.reshape(msg.p, (3, 4)), np.hstack([k, np.zeros((3, 1))]))
    assert np.array_equal(np.reshape(msg.r, (3, 3)), np.eye(3))
    intrinsics = camera_info_to_intrinsics(msg)
    assert intrinsics.k.dtype == np.float64 and np.array_equal(intrinsics.k, k)
    assert (intrinsics.width, intrinsics.height, intrinsics.distortion_model) == (640, 480, 'plumb_bob')
    assert np.array_equal(intrinsics.distortion, distortion)


def test_uncalibrated_or_malformed_camera_info_is_rejected():
    with pytest.raises(ValueError, match='all zeros'):
        camera_info_to_intrinsics(CameraInfo(width=640, height=480))
    skewed_bottom = CameraInfo(width=640, height=480, k=[500.0, 0, 320, 0, 500, 240, 0, 0, 2])
    with pytest.raises(ValueError, match='not a pinhole matrix'):
        camera_info_to_intrinsics(skewed_bottom)
    with pytest.raises(ValueError, match=r'K must be 3x3, got shape \(2, 3\)'):
        intrinsics_to_camera_info(CameraIntrinsics(k=np.ones((2, 3)), width=4, height=4))


def test_stamp_to_ns_is_exact():
    assert stamp_to_ns(Time(sec=1_700_000_000, nanosec=999_999_999)) == 1_700_000_000_999_999_999


def test_stamp_with_unnormalised_nanosec_is_refused_not_aliased():
    # sec S with nanosec 4294967295 would otherwise equal sec S + 4 with nanosec 294967295.
    with pytest.raises(ValueError, match='nanosec 4294967295 is not below 10\\^9'):
        stamp_to_ns(Time(sec=100, nanosec=4_294_967_295))
    with pytest.raises(ValueError, match='nanosec'):
        stamp_to_ns(Time(sec=100, nanosec=1_000_000_000))


def test_message_strings_in_errors_are_short_and_printable():
    image = Image(encoding='\x1b[2J' + 'x' * 1_000_000, width=1, height=1, step=3, data=bytes(3))
    with pytest.raises(ValueError) as error:
        image_to_numpy(image)
    assert len(str(error.value)) < 400 and '\x1b' not in str(error.value) and 'more chars' in str(error.value)
    info = CameraInfo(width=640, height=480, k=[1e-12, 0, 320, 0, 1e-12, 240, 0, 0, 1])
    info.header.frame_id = 'f' * 1_000_000
    with pytest.raises(ValueError, match='implausible intrinsics: fx') as error:
        camera_info_to_intrinsics(info)
    assert len(str(error.value)) < 400


# ---- against the real ROS packages, where installed -------------------------------------------------------------

def test_same_bytes_as_cv_bridge():
    cv_bridge = pytest.importorskip('cv_bridge', reason='ROS cv_bridge is not on PyPI (only in a ROS install); '
                                                        'the PyPI cv-bridge package is a different, broken one')
    rng = np.random.default_rng(0)
    for encoding in sorted(IMAGE_ENCODINGS):
        pixels = random_pixels(rng, encoding, 5, 7)
        theirs = cv_bridge.CvBridge().cv2_to_imgmsg(pixels, encoding=encoding)
        ours = numpy_to_image(pixels, encoding)
        assert (ours.step, bytes(ours.data)) == (theirs.step, bytes(theirs.data)), encoding
        assert image_to_numpy(theirs).tobytes() == pixels.tobytes(), encoding


def test_same_bytes_as_sensor_msgs_py():
    point_cloud2 = pytest.importorskip('sensor_msgs_py.point_cloud2',
                                       reason='sensor_msgs_py is not on PyPI (only in a ROS install)')
    points = np.random.default_rng(0).normal(size=(9, 3)).astype(np.float32)
    theirs = point_cloud2.create_cloud_xyz32(HEADER, points)
    ours = points_to_cloud(points, HEADER)
    assert ours.fields == theirs.fields and ours.point_step == theirs.point_step
    assert bytes(ours.data) == bytes(theirs.data)
    ids = np.arange(9, dtype=np.uint32)
    fields = [*theirs.fields, PointField(name='object_id', offset=12, datatype=PointField.UINT32, count=1)]
    records = np.rec.fromarrays([*points.T, ids], names='x,y,z,object_id')
    theirs = point_cloud2.create_cloud(HEADER, fields, records.tolist())
    assert bytes(points_to_cloud(points, HEADER, {'object_id': ids}).data) == bytes(theirs.data)
