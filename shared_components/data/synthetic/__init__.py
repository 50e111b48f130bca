"""Synthetic but realistic data written in official dataset layouts, for the demo and for tests.

Writers (each returns the dataset root it wrote): the hippocampus phantom in ``hippocampus``, the CT ones in ``ct``
(MSD spleen/liver, LiTS, AbdomenCT-1K), the MRI ones in ``mri`` (MSD brain tumour, BraTS 2021, GaNDLF CSV,
multi-centre amygdala folders) and the TOF-MRA aneurysm ones in ``mra`` (ADAM, Lausanne), built from the pieces in
``shapes``; :data:`WRITERS` names them all for ``scripts/synthetic.py``.
"""

from shared_components.data.synthetic.ct import (
    abdomen_ct_phantom,
    write_abdomenct1k,
    write_lits,
    write_msd_liver,
    write_msd_spleen,
)
from shared_components.data.synthetic.hippocampus import hippocampus_phantom, write_msd_hippocampus
from shared_components.data.synthetic.mra import tof_mra_phantom, write_adam, write_lausanne
from shared_components.data.synthetic.mri import (
    amygdala_phantom,
    brain_tumour_phantom,
    write_amygdala_folders,
    write_brats,
    write_gandlf_csv,
    write_msd_brain_tumour,
)

WRITERS = {
    "msd_hippocampus": write_msd_hippocampus,
    "msd_spleen": write_msd_spleen,
    "msd_liver": write_msd_liver,
    "msd_brain_tumour": write_msd_brain_tumour,
    "lits": write_lits,
    "abdomenct1k": write_abdomenct1k,
    "brats": write_brats,
    "amygdala_folders": write_amygdala_folders,
    "gandlf_csv": write_gandlf_csv,
    "adam": write_adam,
    "lausanne": write_lausanne,
}

__all__ = [
    "WRITERS",
    "abdomen_ct_phantom",
    "amygdala_phantom",
    "brain_tumour_phantom",
    "hippocampus_phantom",
    "tof_mra_phantom",
    "write_abdomenct1k",
    "write_adam",
    "write_amygdala_folders",
    "write_brats",
    "write_gandlf_csv",
    "write_lausanne",
    "write_lits",
    "write_msd_brain_tumour",
    "write_msd_hippocampus",
    "write_msd_liver",
    "write_msd_spleen",
]
