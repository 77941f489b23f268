"""
reconstruct_node's parameters: one typed frozen dataclass, the declaration table derived from it, its validation.

Each field of :class:`NodeParams` is one declared ROS parameter; its default, description and allowed values sit on
the field, and :data:`PARAMETERS` (what the node declares, what config/reconstruct.yaml and docs/node.md are checked
against) is derived from the fields, so the three cannot drift. Two owners of validation, no overlap: rclpy enforces
each parameter's type and numeric range (from :meth:`ParamSpec.descriptor`, at start and at every set), and
constructing a :class:`NodeParams` checks everything rclpy cannot express (enumerations, the class map format, rules
between parameters), so every instance is valid. No rclpy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from mesc3d_ros import geometry
from mesc3d_ros.contract import load_contract
from mesc3d_ros.inference import create_backend
from mesc3d_ros.package_share import DEFAULT_MODEL, resolve_model
from mesc3d_ros.pipeline import MIN_DEPTH_READING_M, PipelineSettings, ReconstructionPipeline


class ParameterError(ValueError):
    """An invalid parameter value; the message names the parameter, the value and what is allowed."""


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter. ``default`` None: a string array without default (rclpy cannot type an empty list)."""

    name: str
    default: str | int | float | bool | None
    description: str
    choices: tuple[str, ...] = ()
    value_range: tuple[float, float] | None = None
    """Inclusive [low, high] for numbers, enforced by rclpy."""

    def descriptor(self) -> ParameterDescriptor:
        """Return the ROS descriptor: description, the choices as text, and the range rclpy enforces."""
        descriptor = ParameterDescriptor(description=self.description)
        if self.choices:
            descriptor.additional_constraints = f'one of: {", ".join(self.choices)}'
        if self.value_range is not None:
            low, high = self.value_range
            if isinstance(self.default, int):
                descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=0)]
            else:
                descriptor.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high))]
        return descriptor


def _param(default: str | int | float | bool | tuple[str, ...], description: str, choices: tuple[str, ...] = (),
           value_range: tuple[float, float] | None = None):
    """Declare a NodeParams field: its default plus what the ROS declaration needs."""
    return field(default=default, metadata={'description': description, 'choices': choices,
                                            'value_range': value_range})


@dataclass(frozen=True)
class NodeParams:
    """The node's parameters as read at configure; docs/node.md §Parameters is generated from these fields."""

    model_path: str = _param(DEFAULT_MODEL, 'Model contract JSON written by `mesc3d export` (the ONNX file lies '
                             "next to it), or the name of a model shipped in the package's models/ folder")
    backend: str = _param('auto', 'Inference backend; auto = TensorRT when usable, else ONNX Runtime',
                          choices=('auto', 'tensorrt', 'onnxruntime'))
    precision: str = _param('auto', 'Model file to run, checked at configure against what the contract offers: '
                            'auto = fp16 on TensorRT, int8 on ONNX Runtime when exported, else fp32; int8 is ONNX '
                            'Runtime only', choices=('auto', 'fp32', 'fp16', 'int8'))
    engine_dir: str = _param('', 'Folder for cached TensorRT engines; empty = next to the model')
    max_batch: int = _param(8, 'Most objects sent to the backend in one call (a frame with more is split)',
                            value_range=(1, 64))
    cpu_threads: int = _param(0, 'ONNX Runtime intra-op threads; 0 = one per core', value_range=(0, 256))
    min_score: float = _param(0.0, 'Detections scoring below this are ignored', value_range=(0.0, 1.0))
    max_objects: int = _param(32, 'Most detections reconstructed per frame, highest scores first (the rest are '
                              'counted); fewer if the cloud would exceed 4 MiB', value_range=(1, 1024))
    class_map: tuple[str, ...] = _param((), 'Detector class id to model class, as "id:model_class" strings, e.g. '
                                        '"41:cup"; ids not listed are used as model class names')
    unknown_class: str = _param('zero_shot', 'A class the model lacks: zero_shot = the generic class embedding, '
                                'skip = no cloud', choices=('zero_shot', 'skip'))
    crop_padding: float = _param(-1.0, 'Relative padding around a box before squaring; negative = the model '
                                 "contract's (what the model was trained with)", value_range=(-1.0, 4.0))
    placement: str = _param('auto', 'Metric placement: auto = depth when valid, else class size prior; depth = the '
                            'same, but missing depth is reported; size_prior = ignore depth',
                            choices=('auto', 'depth', 'size_prior'))
    use_depth: bool = _param(False, 'Subscribe to `depth` (registered to the image) and match it by stamp too')
    depth_fit: bool = _param(True, "With depth: fit each predicted shape (scale, translation) to the object's "
                             'measured visible surface; false = box and median depth only')
    output_cloud: str = _param('predicted', 'Points published per object: predicted = the placed predicted shape; '
                               'fused = the measured visible points of a fitted object plus its predicted hidden '
                               'side', choices=('predicted', 'fused'))
    box_aspect_weight: float = _param(0.5, "How far each predicted shape's width / height across the view moves "
                                      "towards its detection box's: 0 = the model's proportions, 1 = the box's "
                                      '(at most 1.5x either way); lower it for loose or occluded boxes',
                                      value_range=(0.0, 1.0))
    depth_scale_m: float = _param(0.001, 'Metres per count of a 16UC1 depth image', value_range=(1e-6, 1.0))
    depth_roi_fraction: float = _param(0.5, 'Side of the central box region whose median depth is the front '
                                       'surface, as a fraction of the box side', value_range=(0.05, 1.0))
    min_depth_m: float = _param(0.05, 'Depth readings nearer than this are invalid (below 1 mm never count)',
                                value_range=(MIN_DEPTH_READING_M, 100.0))
    max_depth_m: float = _param(20.0, 'Depth readings farther than this are invalid', value_range=(0.01, 1000.0))
    min_valid_depth_fraction: float = _param(0.1, 'Share of valid readings the region needs, else the size prior '
                                             'is used', value_range=(0.0, 1.0))
    placement_box_fill: float = _param(0.81, "Box half-size as a fraction of the bounding sphere's silhouette "
                                       '(1 for spheres); measured median over dataset objects',
                                       value_range=(0.05, 1.0))
    placement_centre_offset: float = _param(0.35, 'How far the centroid lies behind the median surface depth, in '
                                            'silhouette radii (1 for spheres); measured median over dataset objects',
                                            value_range=(0.0, 2.0))
    output_frame: str = _param('', 'frame_id written into the outputs; empty = the image frame (no TF is applied)')
    sync_slop_s: float = _param(0.0, 'Largest stamp difference between matched image, detections (and depth); '
                                '0 = exact match', value_range=(0.0, 10.0))
    queue_size: int = _param(10, 'Messages kept per input stream while waiting for partners', value_range=(1, 1000))
    image_reliability: str = _param('best_effort', 'QoS reliability of the image, depth and camera_info '
                                    'subscriptions', choices=('best_effort', 'reliable'))
    detections_reliability: str = _param('best_effort', 'QoS reliability of the detections subscription '
                                         '(best_effort also receives from reliable publishers)',
                                         choices=('best_effort', 'reliable'))
    diagnostics_period_s: float = _param(1.0, 'Period of /diagnostics', value_range=(0.1, 60.0))
    autostart: bool = _param(True, 'Configure and activate at start; false = wait for lifecycle transitions')

    def __post_init__(self) -> None:
        for spec in PARAMETERS:
            value = getattr(self, spec.name)
            if spec.choices and value not in spec.choices:
                raise ParameterError(f'parameter "{spec.name}" is {value!r}; allowed: {", ".join(spec.choices)}')
        parse_class_map(self.class_map)
        if self.min_depth_m >= self.max_depth_m:
            raise ParameterError(f'min_depth_m ({self.min_depth_m}) must be below max_depth_m ({self.max_depth_m})')
        if self.placement == 'depth' and not self.use_depth:
            raise ParameterError('placement is "depth" but use_depth is false: set use_depth:=true or placement:=auto')

    @classmethod
    def from_values(cls, values: Mapping[str, object]) -> NodeParams:
        """Every parameter from ``{name: value}`` as rclpy holds them (``class_map``: a list, None while unset)."""
        return cls(**{**values, 'class_map': tuple(values['class_map'] or ())})

    def pipeline_settings(self) -> PipelineSettings:
        """Return what these parameters decide about reconstruction."""
        return PipelineSettings(
            min_score=self.min_score, max_objects=self.max_objects, class_map=parse_class_map(self.class_map),
            unknown_class=self.unknown_class, crop_padding=None if self.crop_padding < 0 else self.crop_padding,
            placement=self.placement, depth_fit=self.depth_fit, output_cloud=self.output_cloud,
            box_aspect_weight=self.box_aspect_weight,
            depth=geometry.DepthWindow(roi_fraction=self.depth_roi_fraction, min_depth_m=self.min_depth_m,
                                       max_depth_m=self.max_depth_m, min_valid_fraction=self.min_valid_depth_fraction),
            prior=geometry.PlacementPrior(box_fill=self.placement_box_fill,
                                          centre_offset=self.placement_centre_offset))

    def open_pipeline(self) -> tuple[ReconstructionPipeline, Path]:
        """
        Open the pipeline on the model these parameters name; return it and the model contract's path.

        Raises whatever stops the model from loading (missing or mismatching files, a class_map target the model
        lacks, a precision the export does not offer), having closed the backend again.
        """
        model_path = resolve_model(self.model_path)
        contract = load_contract(model_path)
        settings = self.pipeline_settings()
        backend = create_backend(model_path, self.backend, max_batch=self.max_batch, engine_dir=self.engine_dir or None,
                                 threads=self.cpu_threads, precision=self.precision)
        try:
            return ReconstructionPipeline(backend, contract, settings), model_path
        except BaseException:
            backend.close()
            raise


def parse_class_map(entries: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``["41:cup", "coco:44:bottle"]`` -> ``{"41": "cup", "coco:44": "bottle"}`` (split at the last colon)."""
    mapping = {}
    for entry in entries:
        detector_id, colon, model_class = entry.rpartition(':')
        if not (colon and detector_id and model_class):
            raise ParameterError(f'parameter "class_map" entry {entry!r} is not "detector_id:model_class"')
        mapping[detector_id] = model_class
    return mapping


PARAMETERS = tuple(
    ParamSpec(f.name, None if isinstance(f.default, tuple) else f.default, f.metadata['description'],
              f.metadata['choices'], f.metadata['value_range'])
    for f in dataclasses.fields(NodeParams))
"""What the node declares, in this order: one entry per NodeParams field (the string array without a default)."""
