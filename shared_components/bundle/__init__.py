"""Authoring bundles: dataset and model specs, the shared template, scaffolding and syncing, model cards, and
running a bundle through the stock MONAI CLI."""
