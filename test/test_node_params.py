"""
reconstruct_node's parameters without ROS (mesc3d_ros/node_params.py).

The declaration table is the dataclass, each rule rclpy cannot express is refused with the parameter named, and the
values reach the pipeline as set.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from rcl_interfaces.msg import ParameterDescriptor

from mesc3d_ros import geometry
from mesc3d_ros.node_params import PARAMETERS, NodeParams, ParameterError, parse_class_map
from sphere_model import class_entry, make_sphere_model

BALL = class_entry('ball', y_stretch=1.0, size_m=0.2, dim=4)


def values(**changed) -> dict[str, object]:
    """Every parameter as rclpy returns it (class_map unset: None), with ``changed`` applied."""
    return {**{spec.name: spec.default for spec in PARAMETERS}, **changed}


def test_the_declaration_table_is_the_dataclass_in_field_order():
    fields = dataclasses.fields(NodeParams)
    assert [spec.name for spec in PARAMETERS] == [f.name for f in fields]
    defaults = NodeParams()
    for spec in PARAMETERS:
        expected = () if spec.default is None else spec.default
        assert getattr(defaults, spec.name) == expected and type(getattr(defaults, spec.name)) is type(expected)
    assert [spec.name for spec in PARAMETERS if spec.default is None] == ['class_map']  # string array, no default
    assert NodeParams.from_values(values()) == NodeParams()


def test_descriptors_carry_description_choices_and_typed_ranges():
    spec = {s.name: s for s in PARAMETERS}
    max_batch = spec['max_batch'].descriptor()
    assert isinstance(max_batch, ParameterDescriptor) and max_batch.description.startswith('Most objects')
    assert [(r.from_value, r.to_value, r.step) for r in max_batch.integer_range] == [(1, 64, 0)]
    assert not max_batch.floating_point_range
    min_score = spec['min_score'].descriptor()
    assert [(r.from_value, r.to_value) for r in min_score.floating_point_range] == [(0.0, 1.0)]
    assert not min_score.integer_range
    assert spec['placement'].descriptor().additional_constraints == 'one of: auto, depth, size_prior'
    assert not spec['output_frame'].descriptor().additional_constraints


@pytest.mark.parametrize('changed, message', [
    ({'placement': 'guess'}, 'parameter "placement" is \'guess\'; allowed: auto, depth, size_prior'),
    ({'precision': 'int4'}, 'parameter "precision" is \'int4\'; allowed: auto, fp32, fp16, int8'),
    ({'class_map': ['41-cup']}, 'entry \'41-cup\' is not "detector_id:model_class"'),
    ({'class_map': [':cup']}, 'entry \':cup\' is not "detector_id:model_class"'),
    ({'min_depth_m': 2.0, 'max_depth_m': 2.0}, 'min_depth_m (2.0) must be below max_depth_m (2.0)'),
    ({'placement': 'depth'}, 'placement is "depth" but use_depth is false'),
])
def test_rules_rclpy_cannot_express_are_refused_naming_the_parameter(changed, message):
    with pytest.raises(ParameterError) as error:
        NodeParams.from_values(values(**changed))
    assert message in str(error.value)


def test_valid_combinations_are_accepted_and_frozen():
    params = NodeParams.from_values(values(placement='depth', use_depth=True, class_map=['41:cup']))
    assert params.class_map == ('41:cup',)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.placement = 'auto'


def test_class_map_splits_at_the_last_colon():
    assert parse_class_map(['41:cup', 'coco:44:bottle']) == {'41': 'cup', 'coco:44': 'bottle'}
    assert parse_class_map(()) == {}


def test_pipeline_settings_follow_the_parameters():
    params = NodeParams(min_score=0.3, max_objects=5, class_map=('41:cup',), unknown_class='skip',
                        placement='size_prior', depth_fit=False, output_cloud='fused', depth_roi_fraction=0.4,
                        min_depth_m=0.2, max_depth_m=3.0, min_valid_depth_fraction=0.3, placement_box_fill=0.9,
                        placement_centre_offset=0.5)
    settings = params.pipeline_settings()
    assert (settings.min_score, settings.max_objects, settings.class_map, settings.unknown_class) == (
        0.3, 5, {'41': 'cup'}, 'skip')
    assert (settings.placement, settings.depth_fit, settings.output_cloud) == ('size_prior', False, 'fused')
    assert settings.depth == geometry.DepthWindow(roi_fraction=0.4, min_depth_m=0.2, max_depth_m=3.0,
                                                  min_valid_fraction=0.3)
    assert settings.prior == geometry.PlacementPrior(box_fill=0.9, centre_offset=0.5)
    assert settings.crop_padding is None  # negative: the contract's
    assert NodeParams(crop_padding=0.25).pipeline_settings().crop_padding == 0.25


def test_open_pipeline_loads_the_named_model_or_says_why_not(tmp_path: Path):
    path = make_sphere_model(tmp_path, classes=(BALL,), generic=BALL)
    pipeline, model_path = NodeParams(model_path=str(path), backend='onnxruntime', max_batch=2,
                                      cpu_threads=1).open_pipeline()
    try:
        assert model_path == path and pipeline.contract.name and pipeline.backend.name.startswith('onnxruntime')
    finally:
        pipeline.backend.close()
    with pytest.raises(ValueError, match=r"class_map maps to \['teapot'\]"):
        NodeParams(model_path=str(path), backend='onnxruntime', class_map=('7:teapot',)).open_pipeline()
    with pytest.raises(Exception, match='nonexistent'):
        NodeParams(model_path=str(tmp_path / 'nonexistent.json')).open_pipeline()
