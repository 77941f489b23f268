"""
reconstruct_node under bad input and bad parameters: each problem named once in the log, the node never crashes.

Same scene, camera and node factories as test/test_node.py (test/node_scene.py). Every bad message is followed by a
good frame that must still get the right answer; invalid parameter values end the process with exit 1 and a clear
message instead of a traceback.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, PointCloud2
from std_msgs.msg import Header
from vision_msgs.msg import Detection3DArray

from mesc3d_ros.conversions import numpy_to_image
from node_scene import FRAME_ID, K, NUM_POINTS, PARAMS_FILE, SIZE, Camera, check_frame, header_at
from ros_helpers import spin_until, start_process, venv_script

pytestmark = pytest.mark.ros


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
