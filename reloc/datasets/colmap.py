"""A COLMAP model (cameras/images/points3D, binary or text) with its images.

Images listed in an optional query list (one name per line; anything after the name is ignored,
so hloc's ``queries_with_intrinsics.txt`` works) form the test split; the other registered images
form the mapping split.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from ..types import Camera, Frame, Pose
from .base import Dataset, read_lines, require_file

MODEL_FILES = ("cameras", "images", "points3D")


def find_model_folder(root: Path) -> Path:
    """The folder holding the model files: ``root``, ``root/sparse/0`` or ``root/sparse``."""
    for candidate in (root, root / "sparse" / "0", root / "sparse"):
        if all((candidate / f"{name}.bin").is_file() or (candidate / f"{name}.txt").is_file() for name in MODEL_FILES):
            return candidate
    raise DatasetError(
        f"{root}: no COLMAP model (cameras, images, points3D as .bin or .txt) in it, in sparse/0 or in sparse"
    )


def read_query_list(path: Path) -> list[str]:
    lines = read_lines(path, "query list")
    return [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]


class ColmapModel(Dataset):
    """A COLMAP reconstruction folder; ``images`` defaults to ``root/images``."""

    kind = "colmap"

    def __init__(self, root: str | Path, images: str | Path | None = None, queries: str | Path | None = None):
        super().__init__(root)
        import pycolmap

        self.model_folder = find_model_folder(self.root)
        self.images = Path(images) if images is not None else self.root / "images"
        if not self.images.is_dir():
            raise DatasetError(f"{self.images}: image folder of the COLMAP model does not exist (pass --images)")
        try:
            self.reconstruction = pycolmap.Reconstruction(str(self.model_folder))
        except Exception as error:  # pycolmap raises plain RuntimeError/ValueError on corrupt files
            raise DatasetError(f"{self.model_folder}: cannot read the COLMAP model ({error})") from None
        self.query_names = set(read_query_list(Path(queries))) if queries is not None else None
        if self.query_names is not None:
            known = {image.name for image in self.reconstruction.images.values()}
            unknown = sorted(self.query_names - known)
            if unknown:
                raise DatasetError(f"{queries}: {len(unknown)} query names are not in the model, e.g. {unknown[0]}")

    def _frame(self, image) -> Frame:
        path = self.images / image.name
        return Frame(
            name=image.name,
            image_path=require_file(path, f"image of COLMAP image {image.image_id}"),
            camera=Camera.from_pycolmap(image.camera),
            pose=Pose.from_pycolmap(image.cam_from_world()) if image.has_pose else None,
        )

    def frames(self, split: str) -> list[Frame]:
        self._check_split(split)
        if split == "test" and self.query_names is None:
            raise DatasetError(
                f"{self.root}: no query list given, so the COLMAP model has no test split (pass --queries)"
            )
        images = sorted(self.reconstruction.images.values(), key=lambda image: image.name)
        is_query = (lambda name: name in self.query_names) if self.query_names is not None else (lambda name: False)
        selected = [image for image in images if is_query(image.name) == (split == "test")]
        if split == "train":
            selected = [image for image in selected if image.has_pose]
        return [self._frame(image) for image in selected]
