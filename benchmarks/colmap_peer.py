"""COLMAP's own pipeline as the peer on the Strecha scenes: pycolmap SIFT extraction and
exhaustive matching, triangulation with the known poses, pycolmap absolute pose per query.
Every image keeps its own known intrinsics (the NVM focal), so queries may differ in size from
the mapping images. ``benchmarks/strecha.py --peer`` runs it in the same run as reloc's configs.

    python benchmarks/colmap_peer.py --data ../shared/data/strecha --out runs/colmap_peer

Prints median errors and ms per query (extraction of one image, matching of the query against
every mapping image as a share of the exhaustive matching time, PnP).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import pycolmap

from reloc.datasets.cambridge import Cambridge
from reloc.geometry.errors import pose_error
from reloc.types import Pose

SCENES = ("fountain-P11", "Herz-Jesus-P8", "castle-P19")


def set_known_cameras(database_path: Path, cameras: dict) -> None:
    """Replace the intrinsics COLMAP guessed for each image by the known ones."""
    database = pycolmap.Database.open(database_path)
    for image in database.read_all_images():
        database.update_camera(cameras[image.name].to_pycolmap(camera_id=image.camera_id))
    database.close()


def run_scene(root: Path, work: Path) -> str:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    dataset = Cambridge(root)
    train, test = dataset.frames("train"), dataset.frames("test")
    database_path = work / "database.db"
    start = time.perf_counter()
    pycolmap.extract_features(
        database_path,
        root,
        image_names=[f.name for f in train + test],
        camera_mode=pycolmap.CameraMode.PER_IMAGE,
        device=pycolmap.Device.cpu,
    )
    extraction_s = (time.perf_counter() - start) / (len(train) + len(test))
    set_known_cameras(database_path, {frame.name: frame.camera for frame in train + test})
    start = time.perf_counter()
    pycolmap.match_exhaustive(database_path, device=pycolmap.Device.cpu)
    images = len(train) + len(test)
    matching_per_pair_s = (time.perf_counter() - start) / (images * (images - 1) / 2)

    database = pycolmap.Database.open(database_path)
    reconstruction = pycolmap.Reconstruction()
    for camera in database.read_all_cameras():
        reconstruction.add_camera_with_trivial_rig(camera)
    poses = {f.name: f.pose for f in train}
    ids = {image.name: image.image_id for image in database.read_all_images()}
    for image in database.read_all_images():
        if image.name in poses:
            keypoints = database.read_keypoints(image.image_id)[:, :2].astype(np.float64)
            entry = pycolmap.Image(
                name=image.name, keypoints=keypoints, camera_id=image.camera_id, image_id=image.image_id
            )
            reconstruction.add_image_with_trivial_frame(entry, poses[image.name].to_pycolmap())
    database.close()
    reconstruction = pycolmap.triangulate_points(reconstruction, database_path, root, work / "triangulated")

    database = pycolmap.Database.open(database_path)
    errors, pnp_s = [], []
    for query in test:
        query_id = ids[query.name]
        keypoints = database.read_keypoints(query_id)[:, :2].astype(np.float64)
        points2d, points3d = [], []
        for name in poses:
            geometry = database.read_two_view_geometry(query_id, ids[name])
            image = reconstruction.image(ids[name])
            for query_index, train_index in geometry.inlier_matches:
                point2d = image.point2D(int(train_index))
                if point2d.has_point3D():
                    points2d.append(keypoints[query_index])
                    points3d.append(reconstruction.point3D(point2d.point3D_id).xyz)
        start = time.perf_counter()
        result = (
            pycolmap.estimate_and_refine_absolute_pose(
                np.array(points2d), np.array(points3d), query.camera.to_pycolmap()
            )
            if len(points2d) >= 4
            else None
        )
        pnp_s.append(time.perf_counter() - start)
        errors.append(
            pose_error(Pose.from_pycolmap(result["cam_from_world"]), query.pose) if result else (np.inf, np.inf)
        )
    database.close()
    t_cm = np.median([100 * e[0] for e in errors])
    r_deg = np.median([e[1] for e in errors])
    per_query_ms = 1000 * (extraction_s + matching_per_pair_s * len(train) + np.median(pnp_s))
    failed = sum(not np.isfinite(e[0]) for e in errors)
    return (
        f"| colmap (pycolmap) | {root.name} | {failed}/{len(test)} | {t_cm:.2f} | {r_deg:.2f} | "
        f"{per_query_ms:.0f} ({1000 * extraction_s:.0f} + {1000 * matching_per_pair_s * len(train):.0f} + "
        f"{1000 * np.median(pnp_s):.0f}) |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print("| pipeline | scene | failed | median t (cm) | median R (deg) | ms/query (extraction + matching + pnp) |")
    print("|---|---|---:|---:|---:|---|")
    for scene in SCENES:
        print(run_scene(args.data / scene, args.out / scene), flush=True)


if __name__ == "__main__":
    main()
