"""Bundle scaffolding (new bundles from dataset and model specs), syncing of the shared parts, and export."""
