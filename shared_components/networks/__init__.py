"""Networks MONAI lacks (e.g. MedFormer) and factories for configuring MONAI networks."""
