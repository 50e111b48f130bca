"""Post-processing for evaluation: predictions back in each case's original geometry, next to its reference
label read again from disk, so metrics are measured where researchers expect them (the voxels of the files they
gave), whatever resampling, reorientation or cropping the preprocessing did."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.transforms import AsDiscreted, Compose, CopyItemsd, LoadImage, MapTransform

from shared_components.transforms.chains import LABEL, PRED, inverted_prediction, regions_to_label_map, save_label_map
from shared_components.transforms.labels import LabelToRegionsd, RemapLabelsd

SEG = "pred_seg"
SAVED = "prediction_file"


class LoadReferenced(MapTransform):
    """Replace ``label`` (preprocessed) by the reference label file it was loaded from, in its original geometry,
    with the same label mapping / regions as training (``label_map``, ``regions``)."""

    def __init__(
        self,
        keys: str = LABEL,
        label_map: Mapping[int, int] | None = None,
        regions: Mapping[str, Sequence[int]] | None = None,
    ):
        super().__init__(keys)
        self.loader = LoadImage(image_only=True, ensure_channel_first=True)
        self.remap = RemapLabelsd(keys, label_map) if label_map else None
        self.regions = LabelToRegionsd(keys, regions) if regions else None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            meta = getattr(d[key], "meta", {})
            path = meta.get("filename_or_obj")
            if not path:
                raise ValueError(f"'{key}' carries no source file name, so its reference cannot be reloaded.")
            ref = self.loader(path)
            if self.remap is not None:
                ref = self.remap({key: ref})[key]
            else:
                ref = MetaTensor(torch.round(ref.as_tensor()).to(torch.uint8), meta=ref.meta)
            if self.regions is not None:
                ref = self.regions({key: ref})[key]
            d[key] = ref
        return d


class SavedPathd(MapTransform):
    """Record where ``SaveImaged(savepath_in_metadict=True)`` wrote ``key`` as the string ``prediction_file``,
    then drop ``key`` when it was only a copy made for saving."""

    def __init__(self, key: str, delete: bool = False):
        super().__init__(key)
        self.delete = delete

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[SAVED] = str(d[key].meta.get("saved_to", ""))
            if self.delete:
                del d[key]
        return d


class CheckSameGeometryd(MapTransform):
    """Fail with a clear message when a prediction and its reference are not on the same voxel grid."""

    def __init__(self, keys: Sequence[str] = (PRED, LABEL)):
        super().__init__(keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        p, r = (data[k] for k in self.keys)
        if p.shape[1:] != r.shape[1:]:
            src = getattr(r, "meta", {}).get("filename_or_obj", "the reference")
            raise ValueError(
                f"the prediction in original geometry has shape {tuple(p.shape[1:])} but the reference {src} has "
                f"{tuple(r.shape[1:])}: image and label files of a case must share one voxel grid."
            )
        return dict(data)


def evaluation_postprocessing(
    num_classes: int,
    multilabel: bool = False,
    preprocessing: Compose | None = None,
    preprocessing_args: Mapping[str, Any] | None = None,
    output_dir: str | None = None,
    save_predictions: bool = False,
    output_postfix: str = "seg",
) -> Compose:
    """Evaluation post-processing: probabilities inverted through ``preprocessing`` to the original geometry,
    discretised, optionally written as a label map to ``output_dir``, and the reference label reloaded from its
    file; ``pred`` and ``label`` come out as one-hot (or region) channels on the original voxel grid."""
    if preprocessing is None:
        raise ValueError("evaluation_postprocessing needs the validation preprocessing to invert.")
    args = dict(preprocessing_args or {})
    regions = args.get("regions")
    t = inverted_prediction(preprocessing, multilabel)
    if save_predictions:
        if not output_dir:
            raise ValueError("save_predictions needs an output_dir.")
        if multilabel:
            t += [CopyItemsd(PRED, names=SEG), regions_to_label_map(SEG, num_classes, regions)]
        save_key = SEG if multilabel else PRED
        t.append(save_label_map(save_key, output_dir, output_postfix, savepath_in_metadict=True))
        t.append(SavedPathd(save_key, delete=multilabel))
    t.append(LoadReferenced(LABEL, args.get("label_map"), regions))
    if not multilabel:
        t.append(AsDiscreted([PRED, LABEL], to_onehot=[num_classes, num_classes]))
    t.append(CheckSameGeometryd((PRED, LABEL)))
    return Compose(t)
