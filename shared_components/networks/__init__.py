"""Networks MONAI lacks (MedFormer) and factories that configure MONAI networks (nnU-Net-style DynUNet)."""

from shared_components.networks.dynunet import nnunet_dynunet, plan_dynunet
from shared_components.networks.medformer import MedFormer

__all__ = ["MedFormer", "nnunet_dynunet", "plan_dynunet"]
