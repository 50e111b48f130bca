"""Networks MONAI lacks (MedFormer) and factories that configure MONAI networks (nnU-Net-style DynUNet)."""

from typing import TYPE_CHECKING

from shared_components.lazy import lazy_exports

if TYPE_CHECKING:  # imported on first use, see shared_components.lazy
    from shared_components.networks.dynunet import nnunet_dynunet, plan_dynunet
    from shared_components.networks.medformer import MedFormer

__all__ = ["MedFormer", "nnunet_dynunet", "plan_dynunet"]

lazy_exports(__name__)
