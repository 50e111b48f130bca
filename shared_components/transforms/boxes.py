"""Boxes for the anchor-based detector (``bundles/aneurysm_mra_retinanet``): bounding boxes of the label map's
connected components, the detector's transform chains, its batches, and detections written as files.

Boxes are MONAI detection's standard mode ``xyzxyz`` in image coordinates of the preprocessed grid (the far corner
exclusive, as ``monai.apps.detection`` derives them from masks), one class (0, aneurysm). The deterministic part of
every chain is the segmentation bundles' :func:`~shared_components.transforms.chains.preprocessing` (load, reorient,
resample, map labels, normalise), so detector and segmentation models see identical voxels.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.apps.detection.transforms.dictionary import RandCropBoxByPosNegLabeld, RandFlipBoxd, RandRotateBox90d
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    SpatialPadd,
)

from shared_components.transforms.chains import IMAGE, LABEL, preprocessing

# the keys of the zoo's lung_nodule_ct_detection bundle, which MONAI Label's DetectionWriter reads: the mask under
# ``label`` is replaced by the box classes
BOX, BOX_LABEL, SCORE = "box", "label", "label_scores"


def label_to_boxes(label: np.ndarray | torch.Tensor, min_voxels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(boxes [N, 6] float32, classes [N] int64)``: the boxes of the 26-connected components of ``label > 0``
    (``[1, X, Y, Z]`` or ``[X, Y, Z]``) with at least ``min_voxels`` voxels, class 0."""
    from scipy import ndimage

    arr = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    arr = arr[0] if arr.ndim == 4 else arr
    components, n = ndimage.label(arr > 0, structure=np.ones((3, 3, 3), bool))
    boxes = []
    for k, sl in enumerate(ndimage.find_objects(components), start=1):
        if sl is None or (components[sl] == k).sum() < min_voxels:
            continue
        boxes.append([s.start for s in sl] + [s.stop for s in sl])
    out = np.asarray(boxes, dtype=np.float32).reshape(-1, 6)
    return out, np.zeros(len(out), dtype=np.int64)


class LabelToBoxesd(MapTransform):
    """Boxes (``box``, ``[N, 6]``) and their classes (``label``, ``[N]``, all 0) from the connected components of the
    label map ``label`` (see :func:`label_to_boxes`), which they replace; with another ``box_label_key`` the map is
    kept unless ``delete_label``."""

    def __init__(
        self,
        keys: KeysCollection = LABEL,
        box_key: str = BOX,
        box_label_key: str = BOX_LABEL,
        min_voxels: int = 1,
        delete_label: bool = True,
    ):
        super().__init__(keys)
        self.box_key, self.box_label_key = box_key, box_label_key
        self.min_voxels = min_voxels
        self.delete_label = delete_label

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            boxes, classes = label_to_boxes(d[key], self.min_voxels)
            if self.delete_label and key != self.box_label_key:
                del d[key]
            d[self.box_key] = torch.as_tensor(boxes)
            d[self.box_label_key] = torch.as_tensor(classes)
        return d


def detection_transforms(
    stage: str,
    patch_size: Sequence[int] | None = None,
    preprocessing_args: Mapping[str, Any] | None = None,
    augmentation_args: Mapping[str, Any] | None = None,
) -> Compose:
    """The detector's chains: ``train`` (preprocessing, padding to the patch, boxes of the label, patches centred on
    a whole box / on background with ratio ``pos_neg``, box-aware flips along ``flip_axes`` and 90-degree rotations
    in the first two axes when the patch is square there, intensity scale/shift and noise), ``val`` (preprocessing,
    boxes) and ``infer`` (preprocessing of the image).

    ``preprocessing_args``: ``pixdim``, ``orientation``, ``intensity``, ``label_map`` as for the segmentation chains
    (other keys are ignored); ``augmentation_args``: ``num_samples``, ``pos_neg``, ``flip_axes``, ``augmentation``
    (``false`` turns the random flips, rotations and intensity changes off)."""
    args = dict(preprocessing_args or {})
    pixdim, orientation, intensity = args.get("pixdim"), args.get("orientation", "RAS"), args.get("intensity", "zscore")
    label_map = args.get("label_map")
    aug = dict(augmentation_args or {})
    num_samples, pos_neg = int(aug.get("num_samples", 1)), aug.get("pos_neg", (1.0, 1.0))
    flip_axes, augmentation = aug.get("flip_axes", (0, 1, 2)), bool(aug.get("augmentation", True))
    if stage == "infer":
        return Compose(preprocessing(pixdim, orientation, intensity, with_label=False))
    t = preprocessing(pixdim, orientation, intensity, label_map, with_label=True)
    if stage == "val":
        return Compose(
            [*t, LabelToBoxesd(), EnsureTyped(BOX, dtype=torch.float32), EnsureTyped(BOX_LABEL, dtype=torch.long)]
        )
    if stage != "train":
        raise ValueError(f"stage must be 'train', 'val' or 'infer', got {stage!r}.")
    if patch_size is None:
        raise ValueError("the training chain needs the patch_size.")
    size = [int(p) for p in patch_size]
    t += [SpatialPadd([IMAGE, LABEL], spatial_size=size), LabelToBoxesd()]
    t.append(
        RandCropBoxByPosNegLabeld(
            image_keys=IMAGE,
            box_keys=BOX,
            label_keys=BOX_LABEL,
            spatial_size=size,
            whole_box=True,
            num_samples=num_samples,
            pos=pos_neg[0],
            neg=pos_neg[1],
        )
    )
    if augmentation:
        for axis in flip_axes or ():
            t.append(RandFlipBoxd(IMAGE, BOX, box_ref_image_keys=IMAGE, prob=0.5, spatial_axis=axis))
        if size[0] == size[1]:
            t.append(RandRotateBox90d(IMAGE, BOX, box_ref_image_keys=IMAGE, prob=0.5, max_k=3, spatial_axes=(0, 1)))
        t += [
            RandScaleIntensityd(IMAGE, factors=0.1, prob=0.5),
            RandShiftIntensityd(IMAGE, offsets=0.1, prob=0.5),
            RandGaussianNoised(IMAGE, prob=0.15, std=0.1),
        ]
    t += [EnsureTyped(IMAGE, dtype=torch.float32), EnsureTyped(BOX, dtype=torch.float32)]
    t.append(EnsureTyped(BOX_LABEL, dtype=torch.long))
    return Compose(t)


def _items(batch: Any) -> list[dict[str, Any]]:
    """The samples of a ``no_collation`` batch (a list of items, each a dict or a list of sampled patches)."""
    out: list[dict[str, Any]] = []
    for item in batch if isinstance(batch, list | tuple) else [batch]:
        out.extend(_items(item) if isinstance(item, list | tuple) else [item])
    return out


class DetectionBatch:
    """``prepare_batch`` of the detector's engines (MONAI ``SupervisedTrainer``/``SupervisedEvaluator``): images and
    box targets of a ``no_collation`` batch on the device, passed to ``RetinaNetDetector.forward`` as
    ``targets=`` (training) or ``use_inferer=True`` (evaluation: sliding-window inference)."""

    def __init__(self, training: bool = True, box_key: str = BOX, label_key: str = BOX_LABEL):
        self.training = training
        self.box_key, self.label_key = box_key, label_key

    def __call__(
        self, batchdata: Any, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any
    ) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]] | None, tuple, dict[str, Any]]:
        items = _items(batchdata)
        images = [d[IMAGE].to(device, non_blocking=non_blocking) for d in items]
        targets = None
        if all(self.box_key in d for d in items):
            targets = [
                {
                    self.box_key: d[self.box_key].to(device, non_blocking=non_blocking),
                    self.label_key: d[self.label_key].to(device, non_blocking=non_blocking),
                }
                for d in items
            ]
        if self.training:
            if targets is None:
                raise ValueError(f"training batches need '{self.box_key}' and '{self.label_key}' (LabelToBoxesd).")
            return images, targets, (), {"targets": targets}
        return images, targets, (), {"use_inferer": True}


def detection_loss(losses: Mapping[str, torch.Tensor], targets: Any = None) -> torch.Tensor:
    """The detector's training loss: the sum of the losses ``RetinaNetDetector`` returns in training mode
    (classification focal/BCE and box regression)."""
    return sum(losses.values())  # type: ignore[return-value]


class SaveDetections:
    """Inference handler: each image's detections written to ``output_dir/<case>_detections.json`` (boxes, centres
    in world mm and in voxel coordinates of the input file, scores; the ADAM ``result.txt`` format is the voxel
    centres) for every detection scoring at least ``score_threshold``."""

    def __init__(self, output_dir: str, score_threshold: float = 0.0, box_key: str = BOX, score_key: str = SCORE):
        self.output_dir = Path(output_dir)
        self.score_threshold = score_threshold
        self.box_key, self.score_key = box_key, score_key

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        from shared_components.data.image_files import strip_suffix
        from shared_components.files import write_text_atomic

        out = engine.state.output
        preds = out["pred"] if isinstance(out, Mapping) else [o["pred"] for o in out]
        for pred, item in zip(preds, _items(engine.state.batch), strict=True):
            image = item[IMAGE]
            meta = getattr(image, "meta", {})
            affine = np.asarray(meta.get("affine", np.eye(4)), dtype=np.float64)
            original = np.asarray(meta.get("original_affine", affine), dtype=np.float64)
            boxes = pred[self.box_key].detach().cpu().numpy().reshape(-1, 6)
            scores = pred[self.score_key].detach().cpu().numpy().ravel()
            keep = scores >= self.score_threshold
            boxes, scores = boxes[keep], scores[keep]
            centres = (boxes[:, :3] + boxes[:, 3:]) / 2 - 0.5
            world = centres @ affine[:3, :3].T + affine[:3, 3]
            voxel = (world - original[:3, 3]) @ np.linalg.inv(original[:3, :3]).T
            source = str(meta.get("filename_or_obj", "image"))
            name = strip_suffix(Path(source).name)
            rows = [
                {"score": float(s), "box": [float(v) for v in b], "center_mm": w.tolist(), "center_voxel": v.tolist()}
                for s, b, w, v in zip(scores, boxes, world, voxel, strict=True)
            ]
            payload = {"image": source, "box_mode": "xyzxyz (preprocessed grid)", "detections": rows}
            self.output_dir.mkdir(parents=True, exist_ok=True)
            stem = name if name not in ("TOF", "image") else f"{Path(source).parent.parent.name}_{name}"
            write_text_atomic(self.output_dir / f"{stem}_detections.json", json.dumps(payload, indent=2) + "\n")


__all__ = [
    "BOX",
    "BOX_LABEL",
    "DetectionBatch",
    "LabelToBoxesd",
    "SaveDetections",
    "detection_loss",
    "detection_transforms",
    "label_to_boxes",
]
