"""Headers and voxels of image files: NIfTI through nibabel (headers without reading voxels), other formats
(``.mha``, ``.nrrd``, ...) through ITK, loaded only when such a file turns up."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class ImageHeader:
    """What a header says about an image: spatial ``shape`` (3 axes), ``channels`` (product of any further axes),
    voxel-to-world ``affine`` (RAS, as nibabel gives it) and voxel ``dtype``."""

    shape: tuple[int, ...]
    channels: int
    affine: np.ndarray
    dtype: str

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))


def strip_suffix(name: str) -> str:
    """File name without its image extension (``case_01.nii.gz`` -> ``case_01``)."""
    for ext in IMAGE_SUFFIXES:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def is_image_file(path: str | os.PathLike) -> bool:
    name = os.path.basename(str(path))
    return name.endswith(IMAGE_SUFFIXES) and not name.startswith(".")


def _is_nifti(path: str) -> bool:
    return path.endswith(NIFTI_SUFFIXES)


def read_header(path: str | os.PathLike) -> ImageHeader:
    """Read only the header. Raises ``ValueError`` (naming the file) when it is not a readable image, and for an
    uncompressed NIfTI whose file is shorter than its header promises (a truncated copy)."""
    path = str(path)
    if _is_nifti(path):
        import nibabel as nib

        try:
            img = nib.load(path)
        except Exception as e:  # nibabel raises several types for garbage files
            raise ValueError(f"not a readable NIfTI file ({type(e).__name__}: {e})") from e
        shape = tuple(int(s) for s in img.shape)
        if path.endswith(".nii"):
            hdr = img.header
            offset = int(getattr(img.dataobj, "offset", max(int(hdr["vox_offset"]), 352)))
            expected = offset + int(np.prod(shape)) * hdr.get_data_dtype().itemsize
            size = os.path.getsize(path)
            if size < expected:
                raise ValueError(f"file is truncated ({size} bytes, the header needs {expected})")
        return ImageHeader(
            shape=(shape + (1, 1, 1))[:3],
            channels=int(np.prod(shape[3:])) if len(shape) > 3 else 1,
            affine=np.asarray(img.affine, dtype=np.float64),
            dtype=str(img.get_data_dtype()),
        )
    return _itk_header(path)


def _itk_header(path: str) -> ImageHeader:
    import itk

    io = itk.ImageIOFactory.CreateImageIO(path, itk.CommonEnums.IOFileMode_ReadMode)
    if io is None:
        raise ValueError("no ITK reader recognises this file")
    io.SetFileName(path)
    try:
        io.ReadImageInformation()
    except Exception as e:
        raise ValueError(f"not a readable image ({e})") from e
    ndim = io.GetNumberOfDimensions()
    dims = [int(io.GetDimensions(i)) for i in range(ndim)]
    spatial = min(ndim, 3)
    direction = np.array([[io.GetDirection(j)[i] for j in range(spatial)] for i in range(spatial)])
    spacing = np.array([io.GetSpacing(i) for i in range(spatial)])
    origin = np.array([io.GetOrigin(i) for i in range(spatial)])
    affine = np.eye(4)
    affine[:spatial, :spatial] = direction * spacing
    affine[:spatial, 3] = origin
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # ITK's LPS world -> RAS, as nibabel reports it
    channels = int(np.prod(dims[3:])) * int(io.GetNumberOfComponents()) if ndim > 3 else io.GetNumberOfComponents()
    return ImageHeader(
        shape=tuple((dims + [1, 1, 1])[:3]),
        channels=int(channels),
        affine=affine,
        dtype=str(io.GetComponentTypeAsString(io.GetComponentType())),
    )


def read_array(path: str | os.PathLike) -> np.ndarray:
    """Voxel data (scaled as the header says). Raises ``ValueError`` when the data cannot be read in full."""
    path = str(path)
    try:
        if _is_nifti(path):
            import nibabel as nib

            return np.asanyarray(nib.load(path).dataobj)
        import itk

        return np.asarray(itk.array_view_from_image(itk.imread(path)))
    except MemoryError:
        raise
    except Exception as e:
        raise ValueError(f"voxel data cannot be read ({type(e).__name__}: {e})") from e


def relative_to(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """``path`` relative to ``root`` (POSIX separators) when it lies below ``root``, else absolute."""
    p, r = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    try:
        return p.relative_to(r).as_posix()
    except ValueError:
        return str(p)
