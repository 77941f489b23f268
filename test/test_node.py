"""
reconstruct_node as users run it: its console script, the shipped params file, real DDS between real processes.

Frames are rendered by the dataset's own loader and renderer (training/data): the tiny dataset objects (two mugs
and a random shape) stand upright in front of one pinhole camera, each rendered separately with the same K and
composited by depth, so every pixel is a true perspective view; boxes come from the visible masks, depth is
millimetre 16UC1 as a RealSense driver sends it. The model is the random-weight MESC-3D of test/model_fixtures.py
(real bindings, class table and checks): **the predicted shapes are meaningless and not checked**. What is checked is
what the node owns: message layout, stamps, frames, the per-object split and the placement, since the node
re-normalises every shape on its centroid (geometry.normalise_shape) and so places the cloud's centroid whatever the
network predicts. Tolerances are the issue's: centroid error ≤ 5 % of the camera distance with depth, ≤ 20 % with
the class size prior (set here to each class's true bounding diameter, as export sets typical diameters).

Each test gets the node it assumes from a fixture factory (ros_helpers.NodeFactory): the functional and parameter
tests share the node of the same parameters, which neither changes; the lifecycle test reconfigures its node and the
bad-input test needs one that has never seen a camera_info, so each gets a fresh one. Any test passes alone and in
any order (check: ``pytest test/test_node.py --random-order-seed=N``, pytest-random-order).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.parameter_client import AsyncParameterClient
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, Detection3DArray

from mesc3d_ros.contract import load_contract
from mesc3d_ros.conversions import (IMAGE_ENCODINGS, CameraIntrinsics, arrays_to_detections, cloud_to_structured,
                                    intrinsics_to_camera_info, numpy_to_image)
from model_fixtures import make_random_model
from ros_helpers import NodeFactory, RunningNode, spin_until, start_process, venv_script

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parent.parent
PARAMS_FILE = REPO / 'config' / 'reconstruct.yaml'
SIZE = 480  # square frames: the dataset renderer draws square images
K = np.array([[450.0, 0.0, (SIZE - 1) / 2], [0.0, 450.0, (SIZE - 1) / 2], [0.0, 0.0, 1.0]])
FRAME_ID = 'camera_color_optical_frame'
NUM_POINTS = 64  # the random model's
# (object id, centroid in the optical frame in metres, yaw in degrees); the camera looks down at 30°.
LAYOUT = (('pybullet_mug', (-0.18, 0.06, 0.80), 30.0),
          ('random_007', (0.02, -0.08, 0.95), -50.0),
          ('sh3d_katorlegaz_coffee_mug', (0.20, 0.10, 0.75), 120.0))
ELEVATION_DEG = 30.0


# ---- rendered frames ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SceneObject:
    object_id: str
    category: str
    centroid: np.ndarray
    """(3,) metres, optical frame: the ground truth placement must recover."""
    radius_m: float


@dataclass(frozen=True, eq=False)
class Scene:
    rgb: np.ndarray  # (H, W, 3) uint8
    depth_mm: np.ndarray  # (H, W) uint16, 0 = no reading
    boxes: np.ndarray  # (K, 4) xyxy pixels around each object's visible mask
    objects: tuple[SceneObject, ...]


def upright_rotation(yaw_deg: float) -> np.ndarray:
    """Object (Y up) -> optical frame for an upright object turned by ``yaw``, seen from ELEVATION_DEG above."""
    yaw, elevation = np.deg2rad(yaw_deg), np.deg2rad(ELEVATION_DEG)
    turn = np.array([[np.cos(yaw), 0.0, np.sin(yaw)], [0.0, 1.0, 0.0], [-np.sin(yaw), 0.0, np.cos(yaw)]])
    level = np.diag([1.0, -1.0, -1.0])  # object up -> image up, object +Z -> towards the camera
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(elevation), -np.sin(elevation)],
                     [0.0, np.sin(elevation), np.cos(elevation)]])
    return tilt @ level @ turn


def render_scene() -> Scene:
    from mesc3d_training.data.render import ObjectRenderer
    from mesc3d_training.data.sources import list_sources, load_object, sample_surface

    sources = {source.object_id: source for source in list_sources()[0]}
    rgb = np.full((SIZE, SIZE, 3), 90, np.uint8)
    depth = np.full((SIZE, SIZE), np.inf)
    owner = np.full((SIZE, SIZE), -1)
    objects = []
    renderer = ObjectRenderer(SIZE, scene_ranges=None)  # each object alone: this test composes its own scene
    try:
        for index, (object_id, centroid, yaw) in enumerate(LAYOUT):
            loaded = load_object(sources[object_id])
            points = sample_surface(loaded, 16384, seed=0)  # (N, 3) metres, object frame
            centre = points.mean(axis=0)
            pose = np.eye(4)
            pose[:3, :3] = upright_rotation(yaw)
            pose[:3, 3] = np.array(centroid) - pose[:3, :3] @ centre
            view = renderer.render_views(loaded, [(K, pose)], np.random.default_rng(index))[0]
            color, mask, z = view['rgb'], view['mask'], view['depth']
            nearer = mask & (z < depth)
            rgb[nearer], depth[nearer], owner[nearer] = color[nearer], z[nearer], index
            objects.append(SceneObject(object_id, sources[object_id].category, np.array(centroid),
                                       float(np.linalg.norm(points - centre, axis=1).max())))
    finally:
        renderer.close()
    boxes = []
    for index in range(len(objects)):
        rows, cols = np.nonzero(owner == index)
        boxes.append([cols.min() - 0.5, rows.min() - 0.5, cols.max() + 0.5, rows.max() + 0.5])
    depth_mm = np.where(np.isfinite(depth), np.round(depth * 1000.0), 0).astype(np.uint16)
    return Scene(rgb=rgb, depth_mm=depth_mm, boxes=np.array(boxes), objects=tuple(objects))


@pytest.fixture(scope='module')
def random_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_model(tmp_path_factory.mktemp('random_model'), classes=('mug', 'bottle', 'bowl'))


@pytest.fixture(scope='module')
def scene(random_model: Path) -> Scene:
    # Exporting imports torch._dynamo; importing it after pyrender's EGL (llvmpipe) context exists segfaults the
    # process (Mesa and torch each bring LLVM), so the model is made first.
    return render_scene()


@pytest.fixture(scope='module')
def contract_path(random_model: Path, scene: Scene) -> Path:
    """Save the random model's contract with each class's size prior the true bounding diameter of its objects."""
    contract = load_contract(random_model)
    diameter = {'mug': 2 * scene.objects[0].radius_m, 'bottle': 2 * scene.objects[1].radius_m}
    classes = tuple(dataclasses.replace(entry, size_m=diameter.get(entry.name, entry.size_m))
                    for entry in contract.classes)
    return dataclasses.replace(contract, classes=classes).save(random_model.with_name('sized.json'))


# ---- talking to the node -----------------------------------------------------------------------------------------
def header_at(sec: int) -> Header:
    return Header(stamp=Time(sec=sec, nanosec=250_000_000), frame_id=FRAME_ID)


class Camera:
    """Publishes frames to a node under ``namespace`` and collects what it answers, keyed by stamp."""

    def __init__(self, ros_node, namespace: str) -> None:
        self.node = ros_node
        self.namespace = namespace
        self.image = ros_node.create_publisher(Image, f'{namespace}/image', 10)
        self.depth = ros_node.create_publisher(Image, f'{namespace}/depth', 10)
        self.info = ros_node.create_publisher(CameraInfo, f'{namespace}/camera_info', 10)
        self.detections = ros_node.create_publisher(Detection2DArray, f'{namespace}/detections', 10)
        self.clouds: dict[int, PointCloud2] = {}
        self.objects: dict[int, Detection3DArray] = {}
        self.diagnostics: list[DiagnosticArray] = []
        ros_node.create_subscription(PointCloud2, f'{namespace}/mesc3d/points',
                                     lambda msg: self.clouds.setdefault(msg.header.stamp.sec, msg), 10)
        ros_node.create_subscription(Detection3DArray, f'{namespace}/mesc3d/objects',
                                     lambda msg: self.objects.setdefault(msg.header.stamp.sec, msg), 10)
        ros_node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        if any(status.name.startswith(f'{self.namespace}/') for status in msg.status):
            self.diagnostics.append(msg)

    def diagnostic_values(self) -> dict[str, str]:
        """Key/values of the node's latest /diagnostics status."""
        return {kv.key: kv.value for kv in self.diagnostics[-1].status[0].values} if self.diagnostics else {}

    def wait_connected(self, with_depth: bool, timeout_s: float = 30.0) -> None:
        publishers = [self.image, self.info, self.detections] + ([self.depth] if with_depth else [])
        spin_until(self.node, lambda: all(p.get_subscription_count() > 0 for p in publishers), timeout_s,
                   f'the node under {self.namespace} to subscribe')

    def publish(self, scene: Scene, sec: int, depth: bool = True, info: bool = True, image: np.ndarray | None = None,
                encoding: str = 'rgb8', depth_mm: np.ndarray | None = None, boxes: np.ndarray | None = None,
                classes: list[str] | None = None, with_image: bool = True, scores: np.ndarray | None = None) -> None:
        """One frame; every message carries the stamp ``sec``. Arguments replace parts with bad variants."""
        header = header_at(sec)
        boxes = scene.boxes if boxes is None else boxes
        classes = [o.category for o in scene.objects] if classes is None else classes
        ids = [o.object_id for o in scene.objects][:len(boxes)] + [''] * max(0, len(boxes) - len(scene.objects))
        if info:
            self.info.publish(intrinsics_to_camera_info(CameraIntrinsics(k=K, width=SIZE, height=SIZE), header))
        if depth:
            self.depth.publish(numpy_to_image(scene.depth_mm if depth_mm is None else depth_mm, '16UC1', header))
        if with_image:
            pixels = scene.rgb if image is None else image
            if encoding in IMAGE_ENCODINGS:
                self.image.publish(numpy_to_image(pixels, encoding, header))
            else:  # an encoding the node does not know: valid pixels under a bad name
                message = numpy_to_image(pixels, 'rgb8', header)
                message.encoding = encoding
                self.image.publish(message)
        scores = np.full(len(boxes), 0.9) if scores is None else scores
        self.detections.publish(arrays_to_detections(boxes, classes, scores, header, ids))

    def answer(self, sec: int, resend, timeout_s: float = 20.0) -> tuple[PointCloud2, Detection3DArray]:
        """
        Wait for the cloud and objects stamped ``sec``, calling ``resend`` every 2 s.

        Volatile QoS loses what is sent before a match completes.
        """
        spin_until(self.node, lambda: sec in self.clouds and sec in self.objects, timeout_s,
                   f'the answer to frame {sec} under {self.namespace}', on_tick=resend, tick_s=2.0)
        return self.clouds[sec], self.objects[sec]


def check_frame(cloud: PointCloud2, objects: Detection3DArray, scene: Scene, sec: int, tolerance: float,
                expected_ids: list[str] | None = None) -> None:
    """Layout, header, per-object split, and each object's centroid within ``tolerance`` × camera distance."""
    assert cloud.header == header_at(sec) and objects.header == header_at(sec)
    expected_ids = [o.object_id for o in scene.objects] if expected_ids is None else expected_ids
    assert [d.id for d in objects.detections] == expected_ids
    assert [(f.name, f.offset, f.datatype) for f in cloud.fields] == [
        ('x', 0, PointField.FLOAT32), ('y', 4, PointField.FLOAT32), ('z', 8, PointField.FLOAT32),
        ('object_index', 12, PointField.UINT32)]
    assert (cloud.height, cloud.width, cloud.is_dense) == (1, NUM_POINTS * len(expected_ids), True)
    table = cloud_to_structured(cloud)
    assert Counter(table['object_index'].tolist()) == {i: NUM_POINTS for i in range(len(expected_ids))}
    truth = {o.object_id: o for o in scene.objects}
    for index, detection in enumerate(objects.detections):
        points = table[table['object_index'] == index]
        xyz = np.stack([points['x'], points['y'], points['z']], axis=1).astype(np.float64)
        centroid = truth[detection.id].centroid
        error = np.linalg.norm(xyz.mean(axis=0) - centroid) / np.linalg.norm(centroid)
        assert error <= tolerance, f'{detection.id}: centroid off by {100 * error:.1f} % of the camera distance'
        pose = detection.results[0].pose.pose.position
        np.testing.assert_allclose([pose.x, pose.y, pose.z], xyz.mean(axis=0), atol=1e-5)
        assert detection.results[0].hypothesis.class_id == truth[detection.id].category
        size = detection.bbox.size
        assert 0 < max(size.x, size.y, size.z) <= 2.05 * np.linalg.norm(xyz - xyz.mean(axis=0), axis=1).max()


@pytest.fixture(scope='module')
def overlay_params(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Write a second params file, loaded after config/reconstruct.yaml as a deployment overlays its camera's."""
    path = tmp_path_factory.mktemp('params') / 'overlay.yaml'
    path.write_text('/**:\n  ros__parameters:\n    class_map: ["shape:bottle"]\n    diagnostics_period_s: 0.25\n'
                    '    cpu_threads: 1\n')
    return path


@pytest.fixture(scope='module')
def shared_nodes() -> Iterator[NodeFactory]:
    """Nodes kept for the module, one per parameter set: only for tests that leave their node as they found it."""
    factory = NodeFactory()
    yield factory
    factory.close()


@pytest.fixture
def fresh_nodes() -> Iterator[NodeFactory]:
    """Nodes for this test alone, stopped when it ends."""
    factory = NodeFactory()
    yield factory
    factory.close()


def deployed_node(factory: NodeFactory, contract_path: Path, overlay_params: Path) -> RunningNode:
    """Return the node as deployed with a camera: the shipped params file, a camera overlay, -p overrides."""
    return factory((PARAMS_FILE, overlay_params), model_path=contract_path, use_depth=True, queue_size=4)


# ---- functional --------------------------------------------------------------------------------------------------
def test_clouds_are_metric_split_per_object_and_placed_from_depth(ros_node, shared_nodes, contract_path,
                                                                  overlay_params, scene):
    node = deployed_node(shared_nodes, contract_path, overlay_params)
    camera = Camera(ros_node, node.namespace)
    camera.wait_connected(with_depth=True)
    camera.publish(scene, 100)
    cloud, objects = camera.answer(100, lambda: camera.publish(scene, 100))
    check_frame(cloud, objects, scene, 100, tolerance=0.05)
    # At least: a frame re-sent before its answer arrived is reconstructed again.
    # With depth, each shape is fitted to its visible surface, or placed from box + depth when the (random-weight)
    # shape does not fit it: either way from depth.
    spin_until(ros_node, lambda: sum(int(camera.diagnostic_values().get(f'placement_{mode}', 0))
                                     for mode in ('fit', 'depth')) >= 3, 10.0,
               'diagnostics counting the three depth placements')
    values = camera.diagnostic_values()
    assert values['backend'].startswith('onnxruntime') and values['state'] == 'active'
    assert values['placement_policy'] == 'auto' and values['use_depth'] == 'true'
    assert 'Traceback' not in node.process.output()


def test_params_file_overlay_and_command_line_overrides_take_effect(ros_node, shared_nodes, contract_path,
                                                                    overlay_params):
    node = deployed_node(shared_nodes, contract_path, overlay_params)
    client = AsyncParameterClient(ros_node, node.name)
    assert client.wait_for_services(timeout_sec=10.0)
    names = ['model_path', 'use_depth', 'queue_size', 'class_map', 'diagnostics_period_s', 'backend', 'max_batch']
    future = client.get_parameters(names)
    spin_until(ros_node, future.done, 10.0, "the node's parameters")
    values = dict(zip(names, map(parameter_value_to_python, future.result().values)))
    assert values == {'model_path': str(contract_path), 'use_depth': True, 'queue_size': 4,  # -p
                      'class_map': ['shape:bottle'], 'diagnostics_period_s': 0.25,  # overlay file
                      'backend': 'auto', 'max_batch': 8}  # config/reconstruct.yaml
    # Runtime sets are validated too: an unknown enumeration value is refused with the reason.
    future = client.set_parameters([Parameter('placement', value='guess')])
    spin_until(ros_node, future.done, 10.0, 'the answer to a parameter set')
    result = future.result().results[0]
    assert not result.successful and 'placement' in result.reason and 'size_prior' in result.reason
    # Refused means unchanged: the node is left as this test found it.
    future = client.get_parameters(['placement'])
    spin_until(ros_node, future.done, 10.0, 'the placement parameter')
    assert parameter_value_to_python(future.result().values[0]) == 'auto'


def change_state(ros_node, node: RunningNode, transition: int) -> None:
    client = ros_node.create_client(ChangeState, f'{node.name}/change_state')
    assert client.wait_for_service(timeout_sec=10.0)
    future = client.call_async(ChangeState.Request(transition=Transition(id=transition)))
    spin_until(ros_node, future.done, 30.0, f'lifecycle transition {transition}')
    assert future.result().success, f'lifecycle transition {transition} failed'
    ros_node.destroy_client(client)


def test_lifecycle_reconfigure_to_size_prior_without_depth(ros_node, fresh_nodes, contract_path, overlay_params,
                                                           scene):
    node = deployed_node(fresh_nodes, contract_path, overlay_params)  # its own: this test reconfigures it
    camera = Camera(ros_node, node.namespace)
    camera.wait_connected(with_depth=True)
    change_state(ros_node, node, Transition.TRANSITION_DEACTIVATE)
    spin_until(ros_node, lambda: camera.image.get_subscription_count() == 0, 10.0, 'deactivate to unsubscribe')
    spin_until(ros_node, lambda: camera.diagnostic_values().get('state') == 'inactive', 10.0,
               'diagnostics of the inactive node')
    change_state(ros_node, node, Transition.TRANSITION_CLEANUP)
    client = AsyncParameterClient(ros_node, node.name)
    future = client.set_parameters([Parameter('use_depth', value=False), Parameter('placement', value='size_prior')])
    spin_until(ros_node, future.done, 10.0, 'parameters to be set')
    assert all(result.successful for result in future.result().results)
    change_state(ros_node, node, Transition.TRANSITION_CONFIGURE)
    change_state(ros_node, node, Transition.TRANSITION_ACTIVATE)
    camera.wait_connected(with_depth=False)
    assert camera.depth.get_subscription_count() == 0, 'use_depth:=false must not subscribe to depth'
    camera.publish(scene, 200, depth=False)
    cloud, objects = camera.answer(200, lambda: camera.publish(scene, 200, depth=False))
    check_frame(cloud, objects, scene, 200, tolerance=0.20)
    # At least: a frame re-sent before its answer arrived is reconstructed again.
    spin_until(ros_node, lambda: int(camera.diagnostic_values().get('placement_size_prior', 0)) >= 3, 10.0,
               'diagnostics counting the three size-prior placements')


# ---- bad input ---------------------------------------------------------------------------------------------------
def test_each_bad_input_is_logged_once_and_good_frames_still_get_correct_answers(ros_node, fresh_nodes,
                                                                                 contract_path, scene):
    # Its own node: "no camera_info yet" is only possible before the first one arrives.
    node = fresh_nodes((PARAMS_FILE,), model_path=contract_path, use_depth=True, cpu_threads=1,
                       diagnostics_period_s=0.2, class_map=['shape:bottle'])
    camera = Camera(ros_node, node.namespace)
    camera.wait_connected(with_depth=True)
    stamps = iter(range(1000, 2000))

    def issue_count(cause: str) -> int:
        return int(camera.diagnostic_values().get(f'issue_{cause}', 0))

    def repeat_unanswered(cause: str, **bad) -> None:
        """Send a bad frame that gets no answer, three times, each time waiting until the node has counted it."""
        for count in range(1, 4):
            sec = next(stamps)
            camera.publish(scene, sec, **bad)
            spin_until(ros_node, lambda: issue_count(cause) >= count, 20.0, f'{cause} #{count} to be counted',
                       on_tick=lambda: camera.publish(scene, sec, **bad), tick_s=2.0)

    def repeat_answered(cause: str, **bad) -> list[tuple[int, PointCloud2, Detection3DArray]]:
        """Send a bad frame that is still answered (degraded), three times."""
        answers = []
        for _ in range(3):
            sec = next(stamps)
            camera.publish(scene, sec, **bad)
            answers.append((sec, *camera.answer(sec, lambda: camera.publish(scene, sec, **bad))))
        spin_until(ros_node, lambda: issue_count(cause) >= 3, 20.0, f'three {cause} to be counted')
        return answers

    def good_frame(tolerance: float = 0.05) -> None:
        sec = next(stamps)
        camera.publish(scene, sec)
        check_frame(*camera.answer(sec, lambda: camera.publish(scene, sec)), scene, sec, tolerance)

    half = scene.rgb[::2, ::2].copy()
    repeat_unanswered('no_camera_info', info=False)  # first: camera_info is latched by the node once it arrives
    good_frame()
    repeat_unanswered('bad_image', image=scene.depth_mm.astype(np.float32), encoding='32FC1')
    good_frame()
    repeat_unanswered('size_mismatch', image=half)
    good_frame()
    # Detections whose image never comes: dropped by the synchroniser once a later frame matches.
    for count in range(1, 4):
        sec = next(stamps)
        camera.publish(scene, sec, with_image=False)
        good_frame()
        spin_until(ros_node, lambda: issue_count('unmatched_detections') >= count, 10.0,
                   f'unmatched detections #{count} to be counted')

    for sec, cloud, objects in repeat_answered('empty_detections', boxes=np.zeros((0, 4)), classes=[]):
        assert cloud.width == 0 and objects.detections == [] and cloud.header == header_at(sec)
    good_frame()
    bad_boxes = np.concatenate([scene.boxes, [[600.0, 10.0, 700.0, 90.0],  # outside the 480-px image
                                              [50.0, 50.0, 50.0, 120.0],  # zero width
                                              [440.0, -40.0, 520.0, 40.0]]])  # partly outside: clipped
    for sec, cloud, objects in repeat_answered('box_off_image', boxes=bad_boxes,
                                               classes=[o.category for o in scene.objects] + ['mug'] * 3):
        assert [d.id for d in objects.detections] == [o.object_id for o in scene.objects] + ['5']
        assert cloud.width == 4 * NUM_POINTS
    assert issue_count('box_degenerate') >= 3 and issue_count('box_clipped') >= 3
    good_frame()
    for sec, cloud, objects in repeat_answered('unknown_class', classes=['teapot'] * 3):
        assert [d.results[0].hypothesis.class_id for d in objects.detections] == ['teapot'] * 3
    good_frame()
    no_depth = np.zeros_like(scene.depth_mm)
    for sec, cloud, objects in repeat_answered('depth_invalid', depth_mm=no_depth):
        check_frame(cloud, objects, scene, sec, tolerance=0.20)  # the size prior took over
    good_frame()
    for sec, cloud, objects in repeat_answered('depth_size_mismatch', depth_mm=scene.depth_mm[::2, ::2].copy()):
        check_frame(cloud, objects, scene, sec, tolerance=0.20)
    good_frame()

    # Issue 17: an implausible K with the frame's stamp skips that frame (an older good K must not answer it).
    skipped = []
    for count, fx in enumerate((1e-12, 1e300, 5e-324), start=1):
        sec = next(stamps)
        skipped.append(sec)
        k = K.copy()
        k[0, 0] = k[1, 1] = fx
        camera.info.publish(CameraInfo(header=header_at(sec), width=SIZE, height=SIZE, k=k.ravel().tolist()))
        spin_until(ros_node, lambda: issue_count('bad_camera_info') >= count, 20.0, f'bad_camera_info #{count}')
        camera.publish(scene, sec, info=False)
    good_frame()
    assert not set(skipped) & set(camera.clouds), 'a frame whose own CameraInfo is implausible was answered'
    # NaN, inf and 7.5 are no probabilities: those detections are dropped, the frame is answered without them.
    ids = [o.object_id for o in scene.objects]
    for sec, cloud, objects in repeat_answered('bad_score', scores=np.array([np.nan, 0.9, 0.9])):
        check_frame(cloud, objects, scene, sec, tolerance=0.05, expected_ids=ids[1:])
    for sec, cloud, objects in repeat_answered('bad_score', scores=np.array([0.9, 7.5, -np.inf])):
        check_frame(cloud, objects, scene, sec, tolerance=0.05, expected_ids=ids[:1])
    # sec S with nanosec 2^32 - 1 must not be matched as S + 4 s: the message is refused.
    for count in range(1, 4):
        sec = next(stamps)
        header = Header(stamp=Time(sec=sec, nanosec=4_294_967_295), frame_id=FRAME_ID)
        camera.image.publish(numpy_to_image(scene.rgb, 'rgb8', header))
        spin_until(ros_node, lambda: issue_count('bad_stamp') >= count, 20.0, f'bad_stamp #{count}',
                   on_tick=lambda: camera.image.publish(numpy_to_image(scene.rgb, 'rgb8', header)), tick_s=2.0)
    # 1 MB strings (encoding, class id) cost a bounded log line, not a megabyte.
    huge = 'x' * 2**20
    repeat_unanswered('bad_image', encoding=huge)
    repeat_answered('unknown_class', classes=[huge] * len(scene.objects))
    good_frame()

    output = node.process.output()
    causes = ['no_camera_info', 'bad_image', 'size_mismatch', 'unmatched_detections',
              'empty_detections', 'box_off_image', 'box_degenerate', 'box_clipped', 'unknown_class', 'depth_invalid',
              'depth_size_mismatch', 'bad_camera_info', 'bad_score', 'bad_stamp']
    assert {cause: output.count(f'[{cause}]') for cause in causes} == dict.fromkeys(causes, 1), output[:20000]
    assert 'Traceback' not in output and '[internal_error]' not in output, output[:20000]
    assert 'RuntimeWarning' not in output, 'numpy warnings must not leak to stderr'
    assert max(map(len, output.splitlines())) < 3000 and len(output) < 40_000, 'log lines must be bounded'


# ---- parameters that stop the node -------------------------------------------------------------------------------
INVALID = [  # (override, text the error must contain)
    ('placement:=guess', 'parameter "placement" is \'guess\'; allowed: auto, depth, size_prior'),
    ('min_score:=1.5', 'min_score out of range'),
    ("class_map:=['41-cup']", 'entry \'41-cup\' is not "detector_id:model_class"'),
    ('placement:=depth', 'placement is "depth" but use_depth is false'),
    ("class_map:=['41:teapot']", "class_map maps to ['teapot'], which the model does not know"),
    ('model_path:=/nonexistent/model.json', '/nonexistent/model.json: cannot read model contract'),
    ('precision:=int4', 'parameter "precision" is \'int4\'; allowed: auto, fp32, fp16, int8'),
    ('precision:=int8', 'precision int8 requested, but this export offers only fp32, fp16'),
]


def test_invalid_values_stop_the_node_with_a_clear_message(contract_path):
    # A valid model first, so that the model-dependent checks (class_map targets) are reached; -p order wins.
    cmds = [[venv_script('reconstruct_node'), '--ros-args', '-r', f'__node:=invalid_{i}', '--params-file',
             PARAMS_FILE, '-p', f'model_path:={contract_path}', '-p', override]
            for i, (override, _) in enumerate(INVALID)]
    with contextlib.ExitStack() as stack:  # all at once: each is a process start, most of the cost
        children = [stack.enter_context(start_process(cmd)) for cmd in cmds]
        results = [(child.wait_exit(timeout_s=60.0), child.output()) for child in children]
    for (override, expected), (code, output) in zip(INVALID, results):
        assert code == 1, f'{override}: exit {code}\n{output}'
        assert expected in output, f'{override}:\n{output}'
        assert 'Traceback' not in output, f'{override}:\n{output}'


def test_without_autostart_the_node_waits_unconfigured(ros_node, contract_path):
    cmd = [venv_script('reconstruct_node'), '--ros-args', '-r', '__ns:=/manual', '--params-file', PARAMS_FILE,
           '-p', f'model_path:={contract_path}', '-p', 'autostart:=false']
    with start_process(cmd) as child:
        client = ros_node.create_client(GetState, '/manual/reconstruct_node/get_state')
        assert client.wait_for_service(timeout_sec=30.0)
        future = client.call_async(GetState.Request())
        spin_until(ros_node, future.done, 10.0, 'the lifecycle state')
        assert future.result().current_state.id == State.PRIMARY_STATE_UNCONFIGURED
        assert ros_node.count_subscribers('/manual/image') == 0
        assert 'configured:' not in child.output()
        assert child.stop() == 0
