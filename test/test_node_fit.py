"""
reconstruct_node's shape fit over real DDS.

The console script with the shipped params file, the oracle sphere model (test/sphere_model.py: it predicts the true
shape, so the pose is checkable), and a ray-cast ball on a table with holes and noise in millimetre 16UC1 depth. The
ball must come back within 1 cm and 5 % of its radius, with the fit's residual and visible point count in
/mesc3d/objects and counted on /diagnostics; ``output_cloud: fused`` publishes the measured front plus the predicted
back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, Detection3DArray

from mesc3d_ros.conversions import (CameraIntrinsics, arrays_to_detections, cloud_to_structured,
                                    intrinsics_to_camera_info, numpy_to_image)
from mesc3d_ros.object_messages import FIT_RESIDUAL_ID, VISIBLE_POINTS_ID
from ros_helpers import start_process, spin_until, venv_script
from sphere_model import class_entry, make_sphere_model

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 640, 480
K = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])
CENTRE, RADIUS = np.array([0.12, 0.05, 1.1]), 0.1  # metres, optical frame
BALL = class_entry('ball', y_stretch=1.0, size_m=0.3, dim=4)  # a wrong size prior: only depth can be right


def render() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H, W, 3) uint8, (H, W) uint16 millimetre depth (0 = none) and the (1, 4) box of a ball on a table."""
    u, v = np.meshgrid(np.arange(WIDTH, dtype=np.float64), np.arange(HEIGHT, dtype=np.float64))
    rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(K).T  # (H, W, 3), z = 1
    a = np.einsum('hwk,hwk->hw', rays, rays)
    b = rays @ CENTRE
    disc = b * b - a * (CENTRE @ CENTRE - RADIUS ** 2)
    ball = disc >= 0
    z = np.where(ball, (b - np.sqrt(np.where(ball, disc, 0.0))) / a, np.inf)
    normal = np.array([0.0, -np.cos(0.5), np.sin(0.5)])  # a table tilted towards the camera, touching the ball
    offset = float(normal @ CENTRE + RADIUS)
    along = rays @ normal
    table = np.where(along > 1e-6, offset / np.where(along > 1e-6, along, 1.0), np.inf)
    depth = np.minimum(z, table)
    rng = np.random.default_rng(0)
    depth = depth + rng.normal(0.0, 0.002, depth.shape)
    depth[rng.random(depth.shape) < 0.2] = 0.0  # holes
    rows, cols = np.nonzero(ball)
    box = np.array([[cols.min() - 0.5, rows.min() - 0.5, cols.max() + 0.5, rows.max() + 0.5]])
    rgb = np.where(ball[:, :, None], np.uint8(200), np.uint8(60)).repeat(3, axis=2)
    depth_mm = np.where(np.isfinite(depth), np.round(depth * 1000.0), 0).clip(0, 65535).astype(np.uint16)
    return rgb, depth_mm, box


@pytest.fixture(scope='module')
def sphere_contract(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sphere_model(tmp_path_factory.mktemp('sphere'), classes=(BALL,), generic=BALL)


@pytest.mark.parametrize('output_cloud', ['predicted', 'fused'])
def test_node_fits_the_ball_to_its_depth_and_reports_the_fit(ros_node, sphere_contract, output_cloud):
    namespace = f'/fit_{output_cloud}'
    cmd = [venv_script('reconstruct_node'), '--ros-args', '-r', f'__ns:={namespace}',
           '--params-file', REPO / 'config' / 'reconstruct.yaml', '-p', f'model_path:={sphere_contract}',
           '-p', 'use_depth:=true', '-p', f'output_cloud:={output_cloud}', '-p', 'diagnostics_period_s:=0.25',
           '-p', 'cpu_threads:=1']
    rgb, depth_mm, box = render()
    clouds, objects, diagnostics = {}, {}, []
    ros_node.create_subscription(PointCloud2, f'{namespace}/mesc3d/points', lambda m: clouds.setdefault(1, m), 10)
    ros_node.create_subscription(Detection3DArray, f'{namespace}/mesc3d/objects',
                                 lambda m: objects.setdefault(1, m), 10)
    ros_node.create_subscription(DiagnosticArray, '/diagnostics', lambda m: diagnostics.extend(
        {kv.key: kv.value for kv in s.values} for s in m.status if s.name.startswith(f'{namespace}/')), 10)
    publishers = [ros_node.create_publisher(t, f'{namespace}/{name}', 10) for t, name in (
        (CameraInfo, 'camera_info'), (Image, 'depth'), (Image, 'image'), (Detection2DArray, 'detections'))]
    header = Header(stamp=Time(sec=7), frame_id='camera_color_optical_frame')
    messages = [intrinsics_to_camera_info(CameraIntrinsics(k=K, width=WIDTH, height=HEIGHT), header),
                numpy_to_image(depth_mm, '16UC1', header), numpy_to_image(rgb, 'rgb8', header),
                arrays_to_detections(box, ['ball'], np.ones(1), header, ['ball_0'])]

    def send() -> None:
        for publisher, message in zip(publishers, messages):
            publisher.publish(message)

    with start_process(cmd) as node:
        spin_until(ros_node, lambda: all(p.get_subscription_count() > 0 for p in publishers), 30.0,
                   'the node to subscribe')
        send()
        spin_until(ros_node, lambda: 1 in clouds and 1 in objects, 20.0, 'the fitted answer', on_tick=send,
                   tick_s=2.0)
        spin_until(ros_node, lambda: diagnostics and int(diagnostics[-1].get('placement_fit', 0)) >= 1, 10.0,
                   'diagnostics counting the fit')
        assert node.stop() == 0

    detection = objects[1].detections[0]
    assert [r.hypothesis.class_id for r in detection.results] == ['ball', FIT_RESIDUAL_ID, VISIBLE_POINTS_ID]
    residual_m, visible = (r.hypothesis.score for r in detection.results[1:])
    assert 0 < residual_m < 0.1 * RADIUS and visible >= 100
    assert detection.results[0].pose.covariance[0] == pytest.approx(residual_m ** 2)
    centroid = detection.results[0].pose.pose.position
    assert np.linalg.norm(np.array([centroid.x, centroid.y, centroid.z]) - CENTRE) < 0.01
    table = cloud_to_structured(clouds[1])
    xyz = np.stack([table['x'], table['y'], table['z']], axis=1).astype(np.float64)
    assert detection.bbox.size.x / 2 == pytest.approx(RADIUS, rel=0.05)  # the fitted scale
    # Every point on the ball, within the 1 cm + 5 % the pose is allowed and the depth noise.
    assert np.abs(np.linalg.norm(xyz - CENTRE, axis=1) - RADIUS).max() < 0.01 + 0.05 * RADIUS + 0.006
    if output_cloud == 'fused':
        assert len(xyz) != 512  # measured points replace the predicted front
    else:
        assert len(xyz) == 512 and np.linalg.norm(xyz.mean(axis=0) - CENTRE) < 0.01
    values = diagnostics[-1]
    assert int(values['total_fitted']) >= 1 and values['depth_fit'] == 'true'
    assert values['output_cloud'] == output_cloud
    residual_mm = float(values['fit_residual_mm_mean_p95_max'].split(' / ')[0])
    assert residual_mm == pytest.approx(residual_m * 1e3, rel=0.5)
