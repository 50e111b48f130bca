"""Shipping bundles: self-contained Model Zoo exports (vendored code, TorchScript/ONNX), the zoo's checks run
offline in an environment without this package, and the MONAI Label check."""
