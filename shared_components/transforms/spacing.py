"""Resampling to a target spacing that also runs inside MONAI Label."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.transforms import Spacingd as MonaiSpacingd


class Spacingd(MonaiSpacingd):
    """MONAI's ``Spacingd``, which treats every ``<key>_*`` entry of the data as that key's metadata dict and updates
    it; entries of that name that are not dicts (MONAI Label adds ``image_path``, a string, to every request, so
    MONAI's transform fails with "'str' object has no attribute 'update'") are set aside for the call and put back."""

    def __call__(self, data: Mapping[Hashable, Any], lazy: bool | None = None) -> dict[Hashable, Any]:
        prefixes = tuple(f"{key}_" for key in self.keys)
        names = [
            k for k, v in data.items() if isinstance(k, str) and k.startswith(prefixes) and not isinstance(v, dict)
        ]
        d = dict(data)
        aside = {k: d.pop(k) for k in names}
        out = super().__call__(d, lazy=lazy)
        out.update(aside)
        return out
