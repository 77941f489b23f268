"""
One camera frame with its detections in, one metric point cloud per object out: the node's work without ROS.

Per frame: drop detections whose score is not a probability (NaN, inf, outside [0, 1]: ``bad_score``); keep those
scoring at least ``min_score``; clip each box to the image (``preprocess.clip_box``);
map the detector's class id to a model class (or the contract's generic class, zero-shot); crop the padded square
window and resize it to the model input (``preprocess.square_window``, ``crop_and_resize``); run every crop of the
frame through the backend in one batch (the backend splits it at its ``max_batch``); move each shape's width ÷
height across the view towards its box's (``geometry.match_box_aspect``); then place each unit-ball shape in the
camera optical frame (``geometry``), in metres: with depth, the shape is fitted to the object's measured visible
surface (``visible_surface``, ``shape_fit``; the surfaces are cut out on a second thread while the backend runs, a
box without the pixels of another detection its centre sees, ``visible_surface.occluding_boxes``); when that fails,
from the box and the median depth of its centre; without depth, from the box and the class size prior. At most
``max_objects`` detections are reconstructed (the highest scores; fewer when the frame's cloud would not fit the
transport, ``output_guard.objects_that_fit``), and every placed object passes ``output_guard.object_problem`` or is
dropped. Problems with single detections never stop the frame: they skip or degrade that detection and are returned with
the objects as :class:`Issue` records (so is a depth image of another size than the image, which is ignored);
nothing derived from the input raises, and numpy floating-point warnings are silenced (their results are caught by
the guard). No rclpy, no message types.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from mesc3d_ros import geometry, output_guard, preprocess
from mesc3d_ros.contract import ClassEntry, ModelContract
from mesc3d_ros.inference import Backend
from mesc3d_ros.safe_text import printable
from mesc3d_ros.shape_fit import FitSettings, ShapeFit, fit_shape
from mesc3d_ros.visible_surface import (SurfaceSettings, VisibleSurface, occluding_boxes, seen_through,
                                        visible_surface)

UnknownClassPolicy = Literal['zero_shot', 'skip']
PlacementPolicy = Literal['auto', 'depth', 'size_prior']
OutputCloud = Literal['predicted', 'fused']
IssueCause = Literal['bad_score', 'box_degenerate', 'box_off_image', 'box_clipped', 'unknown_class',
                     'too_many_objects', 'depth_size_mismatch', 'depth_invalid', 'depth_missing', 'placement_failed',
                     'output_not_finite', 'output_behind_camera', 'output_too_large', 'output_too_far',
                     'fit_no_surface', 'fit_rejected',
                     # of the whole frame, found before the pipeline runs (frame_inputs)
                     'no_camera_info', 'bad_image', 'size_mismatch', 'bad_depth', 'empty_detections']

MIN_DEPTH_READING_M = 1e-3
"""A depth reading nearer than 1 mm is no reading, whatever ``min_depth_m`` says: no sensor measures inside its lens,
and zero is how depth images mark holes."""


@dataclass(frozen=True)
class PipelineSettings:
    """What the node's parameters decide about reconstruction (docs/node.md lists them with their defaults)."""

    min_score: float = 0.0
    """Detections scoring below this are ignored (not an issue: that is what the threshold is for)."""
    max_objects: int = 32
    """Most detections reconstructed per frame, highest scores first; the rest are reported (``too_many_objects``)."""
    class_map: dict[str, str] = field(default_factory=dict)
    """Detector class id -> model class name. Ids not in the map are looked up as model class names directly."""
    unknown_class: UnknownClassPolicy = 'zero_shot'
    """A class the model does not know: ``zero_shot`` uses the contract's generic class, ``skip`` drops it."""
    crop_padding: float | None = None
    """Relative padding around a box before squaring; None = the contract's (the padding the model trained with)."""
    placement: PlacementPolicy = 'auto'
    """``auto``: depth when given and valid, else size prior; ``depth``: as auto, but a frame without depth is an
    issue; ``size_prior``: ignore depth."""
    depth: geometry.DepthWindow = field(default_factory=geometry.DepthWindow)
    prior: geometry.PlacementPrior = field(default_factory=geometry.PlacementPrior)
    """How boxes and depth relate to the bounding sphere; ``geometry.SPHERE`` for spherical objects."""
    depth_fit: bool = True
    """With depth: fit each shape to its measured visible surface (else: box + median depth only)."""
    output_cloud: OutputCloud = 'predicted'
    """``predicted``: the placed predicted shape; ``fused``: the measured visible points of a fitted object plus
    its predicted hidden side (objects without a fit: the predicted shape)."""
    free_space_margin: float = 0.05
    """``fused`` drops predicted hidden points the depth image sees past by more than this share of their depth
    (``visible_surface.seen_through``): where a too-wide predicted shape overhangs the silhouette. Validation scenes
    (scripts/shape_fit_tuning.py): F@1cm 0.374 → 0.383, placed CD-L1 3.92 → 3.73 cm; 0.02 and 0.1 as good."""
    box_aspect_weight: float = 0.5
    """How far each shape's width ÷ height across the view moves towards its box's (``geometry.match_box_aspect``;
    0 = the model's proportions). Chosen on validation scenes (scripts/shape_fit_tuning.py)."""
    surface: SurfaceSettings = field(default_factory=SurfaceSettings)
    fit: FitSettings = field(default_factory=FitSettings)


@dataclass(frozen=True)
class Issue:
    """Something wrong with one detection or the whole frame; the node logs each cause once and counts all."""

    cause: IssueCause
    detail: str
    detection_index: int
    """The detection's index in the frame's input arrays; -1 for a problem of the whole frame (e.g. its depth)."""


@dataclass(frozen=True, eq=False)
class ObjectCloud:
    """One reconstructed object."""

    detection_index: int
    """Index of the detection in the frame's input arrays."""
    detector_class: str
    """The class id the detector sent."""
    model_class: str
    """The model class whose embedding was used (the generic class's name when zero-shot)."""
    zero_shot: bool
    score: float
    points: np.ndarray
    """(N, 3) float32 metres, camera optical frame (x right, y down, z forward): the placed predicted shape, whose
    mean is the placed centroid, or with ``output_cloud: fused`` the measured and predicted-hidden points."""
    placement: geometry.Placement
    box_centre: np.ndarray
    """(3,) metres, optical frame: centre of the shape's bounding box, whose axes are ``placement.rotation``'s."""
    box_size_m: np.ndarray
    """(3,) full extents of that box."""
    fit_rms_m: float = float('nan')
    """Trimmed RMS distance of the measured surface to the fitted shape; NaN when the shape was not fitted."""
    visible_points: int = 0
    """Measured surface points the fit used (0: not fitted)."""


class ReconstructionPipeline:
    """Crops, batches, infers and places; construct once per model, call :meth:`process` per frame."""

    def __init__(self, backend: Backend, contract: ModelContract, settings: PipelineSettings) -> None:
        names = set(contract.class_names)
        unknown_targets = sorted(set(settings.class_map.values()) - names)
        if unknown_targets:
            raise ValueError(f'class_map maps to {unknown_targets}, which the model does not know; model classes: '
                             f'{sorted(names)}')
        padding = contract.crop_padding if settings.crop_padding is None else settings.crop_padding
        if padding < 0:
            raise ValueError(f'crop_padding must be >= 0, got {padding}')
        self.backend = backend
        self.contract = contract
        self.settings = settings
        self.padding = padding
        if settings.max_objects < 1:
            raise ValueError(f'max_objects must be >= 1, got {settings.max_objects}')
        # A fused object holds up to max_pixels measured points beside its (fewer) predicted hidden ones.
        self._points_per_object = contract.num_points + (settings.surface.max_pixels
                                                         if settings.output_cloud == 'fused' else 0)
        self.max_objects = output_guard.objects_that_fit(self._points_per_object, settings.max_objects)
        """``settings.max_objects``, or fewer when that many clouds would not fit the transport."""
        self._depth_window = dataclasses.replace(
            settings.depth, min_depth_m=max(settings.depth.min_depth_m, MIN_DEPTH_READING_M))
        self._overlap = ThreadPoolExecutor(max_workers=1, thread_name_prefix='visible_surface')
        self._classes = {entry.name: entry for entry in contract.classes}
        self._embeddings = {entry.name: np.asarray(entry.embedding, dtype=np.float32)
                            for entry in (*contract.classes, contract.generic_class)}

    def close(self) -> None:
        """Stop the thread that cuts out the visible surfaces (the backend is its creator's to close)."""
        self._overlap.shutdown(wait=True)

    def limitations(self) -> list[str]:
        """Say what this model and these settings cannot do as asked (the node logs each line at configure)."""
        notes = []
        if self.contract.output_frame == 'canonical':
            notes.append(f'model {self.contract.name} predicts shapes in a canonical object frame: their orientation '
                         f'in the camera frame is unknown, so objects are placed by centre and scale only (axes = '
                         f'optical axes)')
        if self.max_objects < self.settings.max_objects:
            notes.append(f'max_objects {self.settings.max_objects} lowered to {self.max_objects}: more clouds of '
                         f'up to {self._points_per_object} points would exceed the '
                         f'{output_guard.MAX_CLOUD_BYTES // 2**20} MiB a published cloud may hold')
        return notes

    def process(self, image_rgb: np.ndarray, boxes: np.ndarray, class_names: list[str], scores: np.ndarray,
                K: np.ndarray, depth: np.ndarray | None = None) -> tuple[list[ObjectCloud], list[Issue]]:
        """
        Reconstruct every usable detection of one frame: ``(objects, issues)``.

        image_rgb (H, W, 3) uint8 RGB; boxes (K, 4) float (x0, y0, x1, y1) pixels; class_names K detector class ids;
        scores (K,); K (3, 3) intrinsics of this image; depth (H, W) float32 z-depth in metres aligned with the
        image (NaN or 0 = no reading) or None; a depth image of another size is not registered to the image: it is
        ignored and reported (``depth_size_mismatch``). Problems of single detections and of the depth come back as
        ``issues``. Raises ValueError only for inconsistent arrays (a caller bug), naming the sizes.
        ``K`` is trusted to be a plausible camera (``intrinsics_check``); the output guard still catches the rest.
        """
        height, width = self._check_inputs(image_rgb, boxes, class_names, scores, K)
        issues: list[Issue] = []
        if depth is not None and depth.shape != (height, width):
            issues.append(Issue('depth_size_mismatch', f'depth is {depth.shape[1]}x{depth.shape[0]}, image '
                                f'{width}x{height}: depth ignored (not registered to the image?)', -1))
            depth = None
        # Extreme but valid inputs overflow in places whose results the guard rejects; warnings would only leak to
        # stderr, outside the node's bounded log.
        with np.errstate(all='ignore'):
            return self._process(image_rgb, boxes, class_names, scores, K, depth, issues, width, height), issues

    def _process(self, image_rgb: np.ndarray, boxes: np.ndarray, class_names: list[str], scores: np.ndarray,
                 K: np.ndarray, depth: np.ndarray | None, issues: list[Issue], width: int,
                 height: int) -> list[ObjectCloud]:
        selected = []  # (index, clipped box, detector class, model class entry, zero_shot)
        for index, (box, detector_class, score) in enumerate(zip(boxes, class_names, scores)):
            if not 0.0 <= score <= 1.0:  # NaN compares False: dropped too
                issues.append(Issue('bad_score', f'score {float(score)!r} is not a probability in [0, 1]', index))
                continue
            if score < self.settings.min_score:
                continue
            x0, y0, x1, y1 = box
            if not (np.isfinite(box).all() and x1 - x0 >= 1.0 and y1 - y0 >= 1.0):
                issues.append(Issue('box_degenerate', f'box {np.round(box, 1).tolist()} is not finite or is '
                                    f'narrower than a pixel', index))
                continue
            clipped = preprocess.clip_box(box, width, height)
            if clipped is None:
                issues.append(Issue('box_off_image', f'box {np.round(box, 1).tolist()} has no area inside the '
                                    f'{width}x{height} image', index))
                continue
            if (clipped != box).any():  # clip_box keeps a coordinate inside the image exactly
                issues.append(Issue('box_clipped', f'box {np.round(box, 1).tolist()} clipped to the image', index))
            entry = self._model_class(detector_class)
            if entry is None:
                action = 'using the generic class (zero-shot)' if self.settings.unknown_class == 'zero_shot' \
                    else 'skipped'
                issues.append(Issue('unknown_class', f'class {printable(detector_class)!r} is not a model class and '
                                    f'not in class_map; {action}', index))
                if self.settings.unknown_class == 'skip':
                    continue
                selected.append((index, clipped, detector_class, self.contract.generic_class, True))
            else:
                selected.append((index, clipped, detector_class, entry, False))
        if len(selected) > self.max_objects:
            # Bounded work per frame: the most confident detections first, the order of the input kept.
            ranked = sorted(range(len(selected)), key=lambda i: -float(scores[selected[i][0]]))
            kept = set(ranked[:self.max_objects])
            for i in ranked[self.max_objects:]:
                issues.append(Issue('too_many_objects', f'more than max_objects = {self.max_objects} detections; '
                                    f'this one scores lower than those reconstructed', selected[i][0]))
            selected = [item for i, item in enumerate(selected) if i in kept]
        if not selected:
            return []
        try:  # the crops' virtual cameras, for all boxes at once
            views = geometry.box_views(K, np.array([item[1] for item in selected]))
        except (ValueError, np.linalg.LinAlgError) as exc:  # intrinsics the node refuses (intrinsics_check)
            issues.extend(Issue('placement_failed', f'no object of this frame can be placed with K '
                                f'{np.round(K, 3).tolist()}: {exc}', index) for index, *_ in selected)
            return []

        use_depth = depth is not None and self.settings.placement != 'size_prior'
        fitting = use_depth and self.settings.depth_fit
        # The visible surfaces need only the depth and the boxes: they are cut out on the second core while the
        # crops are made and the backend runs (OpenCV and ONNX Runtime release the GIL; docs/benchmarks.md §Shape
        # fit).
        surfaces = self._overlap.submit(self._surfaces, depth, K, np.array([item[1] for item in selected])) \
            if fitting else None
        size = self.contract.image_size
        crops = np.stack([preprocess.crop_and_resize(image_rgb, preprocess.square_window(box, self.padding), size)
                          for _, box, _, _, _ in selected])  # (B, S, S, 3) uint8 RGB
        embeddings = np.stack([self._embeddings[entry.name] for _, _, _, entry, _ in selected])  # (B, D) float32
        shapes = self.backend.run(preprocess.to_model_input(crops), embeddings)  # (B, N, 3) shape frame
        surfaces = surfaces.result() if surfaces is not None else []
        units = geometry.normalise_shape(shapes)  # (B, N, 3) unit ball, shape frame
        orientation_known = self.contract.output_frame == 'viewer'
        if orientation_known:  # a canonical-frame shape's x and y are not the image's
            units = geometry.match_box_aspect(units, np.array([view.half_extents for view in views]),
                                              self.settings.box_aspect_weight)
        lows, highs = geometry.shape_bounds(units)  # (B, 3) each: the shapes' boxes, shape frame

        if depth is None and self.settings.placement == 'depth':
            issues.append(Issue('depth_missing', 'placement is "depth" but the frame has no depth image; '
                                'using the size prior', -1))
        objects = []
        for position, ((index, box, detector_class, entry, zero_shot), unit, view, low, high) in enumerate(
                zip(selected, units, views, lows, highs)):
            fit = None
            try:
                if fitting:
                    placement, fit = self._fitted(unit, surfaces[position], depth, K, box, view, entry.size_m,
                                                  orientation_known, index, issues)
                else:
                    placement = self._box_placement(depth if use_depth else None, box, view, entry.size_m,
                                                    orientation_known, index, issues)
            except (ValueError, np.linalg.LinAlgError) as exc:  # geometry refuses inputs it cannot place
                issues.append(Issue('placement_failed', f'box {np.round(box, 1).tolist()} cannot be placed: {exc}',
                                    index))
                continue
            points = placement.transform(unit)  # (N, 3) float32 metres, optical frame
            if fit is not None and self.settings.output_cloud == 'fused':
                hidden = points[fit.hidden]  # (H, 3): the predicted side the camera does not see...
                hidden = hidden[~seen_through(hidden, depth, K, self.settings.free_space_margin)]  # ...or sees past
                # The measured side: every reading of the object's visible surface, not only those near the fitted
                # shape (a residual cut drops true readings where the prediction is wrong; validation scenes,
                # scripts/shape_fit_tuning.py: F@1cm 0.383 → 0.393, placed CD-L1 3.62 → 3.00 cm).
                points = np.concatenate([surfaces[position].all_points.astype(np.float32), hidden])  # (R + H', 3)
            obj = ObjectCloud(
                detection_index=index, detector_class=detector_class, model_class=entry.name, zero_shot=zero_shot,
                score=float(scores[index]), points=points, placement=placement,
                box_centre=placement.centre + placement.radius_m * placement.rotation @ ((low + high) / 2),
                box_size_m=(high - low) * placement.radius_m,
                fit_rms_m=fit.rms_m if fit is not None else float('nan'),
                visible_points=fit.visible_points if fit is not None else 0)
            problem = output_guard.object_problem(obj.points, placement.centre, obj.box_centre, obj.box_size_m)
            if problem is not None:
                cause, detail = problem
                issues.append(Issue(cause, f'box {np.round(box, 1).tolist()} dropped: {detail}', index))
                continue
            objects.append(obj)
        return objects

    def _box_placement(self, depth: np.ndarray | None, box: np.ndarray, view: geometry.BoxView, size_m: float,
                       orientation_known: bool, index: int, issues: list[Issue]) -> geometry.Placement:
        """Placement from the box and the median depth of its centre, or the size prior (no or invalid depth)."""
        surface = geometry.surface_distance(depth, box, view, self._depth_window) if depth is not None else None
        if depth is not None and surface is None:
            issues.append(Issue('depth_invalid', f'too few valid depth readings in the centre of box '
                                f'{np.round(box, 1).tolist()}; using the size prior', index))
        return geometry.place(view, size_m, surface, orientation_known, self.settings.prior)

    def _surfaces(self, depth: np.ndarray, K: np.ndarray, boxes: np.ndarray) -> list[VisibleSurface | None]:
        """
        Every (clipped) box's visible surface, without the pixels of the other detections in front of it.

        Each box's surface is cut out alone first; a box that other detections' boxes overlap at its surface's depth
        or nearer (``visible_surface.occluding_boxes``) is cut again without their pixels, and keeps that surface
        when one remains.
        """
        def cut(box: np.ndarray, exclude: np.ndarray | None = None) -> VisibleSurface | None:
            return visible_surface(depth, K, box, self._depth_window, self.settings.prior.box_fill,
                                   self.settings.surface, exclude)

        with np.errstate(all='ignore'):  # as in process(): numpy's error state is per thread, and this runs in another
            alone = [cut(box) for box in boxes]
            surfaces = []
            for position, (box, surface) in enumerate(zip(boxes, alone)):
                exclude = occluding_boxes(boxes, alone, position, self.settings.surface)
                unoccluded = cut(box, exclude) if surface is not None and len(exclude) else None
                surfaces.append(surface if unoccluded is None else unoccluded)
        return surfaces

    def _fitted(self, unit: np.ndarray, surface: VisibleSurface | None, depth: np.ndarray, K: np.ndarray,
                box: np.ndarray, view: geometry.BoxView, size_m: float, orientation_known: bool, index: int,
                issues: list[Issue]) -> tuple[geometry.Placement, ShapeFit | None]:
        """Fit the shape to its visible surface; fall back to the box placement (and an issue) when that fails."""
        if surface is None:
            issues.append(Issue('fit_no_surface', f'too few usable depth readings of the object in box '
                                f'{np.round(box, 1).tolist()} to fit its shape; placing it from the box', index))
            return self._box_placement(depth, box, view, size_m, orientation_known, index, issues), None
        ray = view.ray  # finite and in front of the camera (box_views)
        # The box placement at the measured front depth (z-depth → distance along the ray) gives the initial scale.
        front_m = surface.front_depth_m / float(ray[2])
        start = geometry.place(view, size_m, front_m, orientation_known, self.settings.prior)
        q = unit @ start.rotation.T  # (N, 3) unit scale, optical-frame axes
        fit = fit_shape(q, surface.points, start.radius_m, ray, K, box, self.settings.fit)
        if not fit.accepted:
            # The box placement at the visible surface's front, not at the box centre's median depth: that sees
            # the background through a frame-like object (measured on validation scenes: 1-2 m too far).
            issues.append(Issue('fit_rejected', f'shape fit in box {np.round(box, 1).tolist()} rejected '
                                f'({fit.reason}); placing it from the box at its visible front', index))
            return start, None
        return geometry.Placement(centre=fit.centre, radius_m=fit.radius_m, rotation=start.rotation, mode='fit'), fit

    def _model_class(self, detector_class: str) -> ClassEntry | None:
        name = self.settings.class_map.get(detector_class, detector_class)
        return self._classes.get(name)

    def _check_inputs(self, image_rgb: np.ndarray, boxes: np.ndarray, class_names: list[str], scores: np.ndarray,
                      K: np.ndarray) -> tuple[int, int]:
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f'image must be (H, W, 3) uint8 RGB, got {image_rgb.shape} {image_rgb.dtype}')
        height, width = image_rgb.shape[:2]
        if boxes.ndim != 2 or boxes.shape[1] != 4 or len(class_names) != boxes.shape[0] \
                or np.shape(scores) != (boxes.shape[0],):
            raise ValueError(f'need (K, 4) boxes with K class names and K scores, got boxes {boxes.shape}, '
                             f'{len(class_names)} class names, scores {np.shape(scores)}')
        if np.shape(K) != (3, 3):
            raise ValueError(f'K must be 3x3, got shape {np.shape(K)}')
        return height, width
