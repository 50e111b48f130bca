"""Label-space transforms MONAI lacks: overlapping regions from a label map (BraTS TC/WT/ET) and back."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform


class LabelToRegionsd(MapTransform):
    """Turn a 1-channel label map into one binary channel per region; a region is a set of label values.

    ``regions={"TC": [1, 3, 4], "WT": [1, 2, 3, 4], "ET": [4]}`` gives the BraTS tumour core, whole tumour and
    enhancing tumour for the BraTS 2013-2015 labels (1 necrosis, 2 oedema, 3 non-enhancing, 4 enhancing).
    """

    def __init__(self, keys: KeysCollection, regions: Mapping[str, Sequence[int]], allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.regions = {k: [int(v) for v in vals] for k, vals in regions.items()}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            channels = [torch.isin(label[0], torch.as_tensor(v, device=label.device)) for v in self.regions.values()]
            d[key] = torch.stack(channels).to(torch.float32)  # a MetaTensor keeps the label's meta
        return d


class RegionsToLabeld(MapTransform):
    """Collapse binary region channels back into one label map, later regions painted over earlier ones.

    ``values`` gives the label written for each channel, e.g. ``[2, 1, 4]`` for channels ``WT, TC, ET`` after
    re-ordering, so nested regions come out as the conventional BraTS label map.
    """

    def __init__(
        self,
        keys: KeysCollection,
        values: Sequence[int],
        order: Sequence[int] | None = None,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.values = [int(v) for v in values]
        self.order = list(order) if order is not None else list(range(len(self.values)))

    @classmethod
    def from_regions(cls, keys: KeysCollection, regions: Mapping[str, Sequence[int]]) -> RegionsToLabeld:
        """Inverse of :class:`LabelToRegionsd` for nested regions: paint the largest region first, each with the
        smallest label value that no smaller region claims (TC/WT/ET of ``{1,3,4}/{1,2,3,4}/{4}`` give 1/2/4)."""
        sets = [{int(v) for v in vals} for vals in regions.values()]
        order = sorted(range(len(sets)), key=lambda i: -len(sets[i]))
        values = []
        for i, s in enumerate(sets):
            inner = set().union(*(o for j, o in enumerate(sets) if j != i and o < s))
            values.append(min(s - inner) if s - inner else min(s))
        return cls(keys, values=values, order=order)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            regions = d[key]
            out = torch.zeros_like(regions[:1], dtype=torch.uint8)
            for c in self.order:
                out[0][regions[c] > 0] = self.values[c]
            d[key] = out
        return d


class TakeFirstOutputd(MapTransform):
    """Keep the full-resolution output of a deep-supervision stack (``[N, C, ...]`` -> ``[C, ...]``)."""

    def __init__(self, keys: KeysCollection, spatial_dims: int = 3, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.spatial_dims = spatial_dims

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if d[key].ndim == self.spatial_dims + 2:
                d[key] = d[key][0]
        return d


class RemapLabelsd(MapTransform):
    """Map raw label values to training classes through a lookup table; values not listed become ``default``.

    Unlike ``MapLabelValued`` (which keeps unlisted values), this turns e.g. a 117-organ map into
    ``{1: 1, 5: 2}`` (spleen, liver) with every other organ as background.
    """

    def __init__(
        self, keys: KeysCollection, mapping: Mapping[int, int], default: int = 0, allow_missing_keys: bool = False
    ):
        super().__init__(keys, allow_missing_keys)
        self.mapping = {int(k): int(v) for k, v in mapping.items()}
        self.default = int(default)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            values = torch.round(torch.as_tensor(label)).long().clamp(min=0)
            lut = torch.full((max(int(values.max()) + 1, max(self.mapping) + 1),), self.default, dtype=torch.long)
            for k, v in self.mapping.items():
                lut[k] = v
            out = lut.to(values.device)[values].to(torch.uint8)
            d[key] = (
                MetaTensor(out, meta=label.meta, applied_operations=label.applied_operations)
                if isinstance(label, MetaTensor)
                else out
            )
        return d
