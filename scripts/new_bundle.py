"""Create a bundle from a dataset and a model spec, or keep every bundle's configs equal to what its specs and the
template generate (the train.yaml header included: declare a per-bundle difference under ``bundles:`` in the
dataset spec, with a ``reason``, instead of editing the header; see ``shared_components/bundle/scaffold.py``).

python scripts/new_bundle.py create spleen_ct segresnet    # bundles/spleen_ct_segresnet/ from the two specs
python scripts/new_bundle.py create all medformer          # every dataset with a model (existing bundles are kept)
python scripts/new_bundle.py sync                          # rewrite the derived configs (headers too) of every bundle
python scripts/new_bundle.py check                         # list drifted files (exit 1 if any)
python scripts/new_bundle.py ship hippocampus_mri_segresnet results/hippocampus_mri/runs/hippocampus_mri_segresnet/fold_0
                                                           # ship a finished benchmark run (weights, numbers, card)
"""

from shared_components.cli import script

if __name__ == "__main__":
    script("new-bundle")
