"""Loaders against the real files in ../shared/data and against layouts written here."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from reloc.datasets import load_dataset, read_depth_mm, read_image
from reloc.datasets.cambridge import Cambridge
from reloc.datasets.folder import ImageFolder
from reloc.datasets.pairs import read_pairs_with_gt
from reloc.errors import DatasetError
from reloc.rotation import axis_angle_to_rotmat
from reloc.types import Camera, Pose

from .layouts import write_cambridge, write_sevenscenes

# ---------------------------------------------------------------- real data


def test_sevenscenes_sample_splits_and_poses(sevenscenes_stairs):
    dataset = load_dataset("7scenes", sevenscenes_stairs)
    train, test = dataset.frames("train"), dataset.frames("test")
    assert len(train) == 6 and len(test) == 6
    assert {f.name.split("/")[0] for f in train} == {"seq-02", "seq-03"}
    assert {f.name.split("/")[0] for f in test} == {"seq-01", "seq-04"}
    frame = test[0]
    assert frame.name == "seq-01/frame-000000.color.jpg"
    assert frame.camera.K.tolist() == [[585, 0, 320], [0, 585, 240], [0, 0, 1]]
    cam_to_world = np.loadtxt(sevenscenes_stairs / "seq-01" / "frame-000000.pose.txt")
    np.testing.assert_allclose(frame.pose.inverse().matrix, cam_to_world, atol=2e-4)  # file is orthonormal to ~1e-4
    np.testing.assert_allclose(frame.pose.center, cam_to_world[:3, 3], atol=1e-6)
    depth = read_depth_mm(frame.depth_path)
    assert depth.shape == (480, 640) and 0.3 < np.nanmedian(depth) < 5.0
    assert read_image(frame.image_path).shape == (480, 640, 3)


def test_strecha_poses_agree_with_independent_relative_poses(strecha_fountain):
    """pairs_with_gt.txt stores cam1_from_cam0 computed separately from the calibration; our
    loader's poses (centre + world-to-camera quaternion) must compose to the same transforms."""
    dataset = load_dataset("cambridge", strecha_fountain)
    frames = {f.name: f for split in ("train", "test") for f in dataset.frames(split)}
    assert len(frames) == 11
    pairs = read_pairs_with_gt(strecha_fountain / "pairs_with_gt.txt")
    assert len(pairs) > 10
    for pair in pairs:
        f0, f1 = frames[pair.name0], frames[pair.name1]
        np.testing.assert_allclose((f1.pose @ f0.pose.inverse()).matrix, pair.cam1_from_cam0.matrix, atol=1e-4)
        np.testing.assert_allclose(f0.camera.K, pair.K0, atol=1e-6)
    first = frames["seq1/0000.jpg"]
    assert (first.camera.width, first.camera.height) == (1536, 1024)
    assert first.camera.params == (1380.91, 768.0, 512.0)


# ---------------------------------------------------------------- 7-Scenes layout written here


def test_sevenscenes_sequence_numbering_and_inversion(tmp_path):
    poses = write_sevenscenes(tmp_path)
    dataset = load_dataset("7scenes", tmp_path)
    names = [f.name for f in dataset.frames("train")]
    assert names == [
        "seq-01/frame-000000.color.png",
        "seq-01/frame-000001.color.png",
        "seq-10/frame-000000.color.png",
        "seq-10/frame-000001.color.png",
    ]
    for frame in dataset.frames("train") + dataset.frames("test"):
        np.testing.assert_allclose(frame.pose.matrix, poses[frame.name].matrix, atol=1e-9)
    depth = read_depth_mm(dataset.frames("test")[0].depth_path)
    assert np.allclose(depth, 1.5)


def test_sevenscenes_depth_invalid_values_become_nan(tmp_path):
    depth = np.array([[0, 1000], [65535, 2500]], np.uint16)
    Image.fromarray(depth).save(tmp_path / "d.png")
    loaded = read_depth_mm(tmp_path / "d.png")
    assert np.isnan(loaded[0, 0]) and np.isnan(loaded[1, 0]) and loaded[1, 1] == pytest.approx(2.5)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (
            lambda root: (root / "seq-01" / "frame-000001.pose.txt").unlink(),
            r"frame-000001.pose.txt: missing 7-Scenes pose file",
        ),
        (
            lambda root: (root / "seq-01" / "frame-000000.pose.txt").write_text("nan 0 0 0\n" * 4),
            r"frame-000000.pose.txt: pose contains NaN",
        ),
        (
            lambda root: (root / "seq-01" / "frame-000000.pose.txt").write_text("1 2 3\n4 5 6\n"),
            r"expected a 4x4 matrix",
        ),
        (lambda root: (root / "seq-01" / "frame-000000.pose.txt").write_text("2 2 2 2\n" * 4), r"not a rotation"),
        (lambda root: (root / "TrainSplit.txt").write_text("seq1\n"), r"TrainSplit.txt:1: expected a line 'sequenceN'"),
        (
            lambda root: (root / "TrainSplit.txt").write_text("sequence7\n"),
            r"seq-07: sequence folder listed in the split file does not exist",
        ),
        (lambda root: (root / "TrainSplit.txt").unlink(), r"TrainSplit.txt: missing 7-Scenes split file"),
    ],
)
def test_sevenscenes_bad_input_messages(tmp_path, corrupt, message):
    write_sevenscenes(tmp_path)
    corrupt(tmp_path)
    with pytest.raises(DatasetError, match=message):
        load_dataset("7scenes", tmp_path).frames("train")


# ---------------------------------------------------------------- Cambridge layout written here


def test_cambridge_layout_per_image_size_and_focal(tmp_path):
    poses = write_cambridge(tmp_path)
    dataset = Cambridge(tmp_path)
    (train,), (test,) = dataset.frames("train"), dataset.frames("test")
    assert train.camera == Camera("SIMPLE_PINHOLE", 1920, 1080, (1000, 960, 540))
    assert test.camera == Camera("SIMPLE_PINHOLE", 480, 270, (1001, 240, 135))
    for frame in (train, test):
        np.testing.assert_allclose(frame.pose.matrix, poses[frame.name].matrix, atol=1e-7)


def test_cambridge_bad_input_messages(tmp_path):
    write_cambridge(tmp_path)
    nvm = tmp_path / "reconstruction.nvm"
    nvm.write_text(nvm.read_text().replace("seq1/frame00001.jpg", "seq1/other.jpg"))
    with pytest.raises(
        DatasetError, match=r"dataset_test.txt:4: image seq1/frame00001.png has no camera in .*reconstruction.nvm"
    ):
        Cambridge(tmp_path).frames("test")
    (tmp_path / "dataset_train.txt").write_text("a\nb\nc\nseq1/frame00000.png 1 2 nan 1 0 0 0\n")
    with pytest.raises(DatasetError, match=r"dataset_train.txt:4: pose of seq1/frame00000.png contains NaN"):
        Cambridge(tmp_path).frames("train")
    (tmp_path / "seq1" / "frame00000.png").write_bytes(b"not an image")
    (tmp_path / "dataset_train.txt").write_text("a\nb\nc\nseq1/frame00000.png 1 2 3 1 0 0 0\n")
    with pytest.raises(DatasetError, match=r"frame00000.png: not a readable image"):
        Cambridge(tmp_path).frames("train")
    nvm.write_text("garbage\n")
    with pytest.raises(DatasetError, match=r"reconstruction.nvm: not an NVM_V3 file"):
        Cambridge(tmp_path).frames("train")


# ---------------------------------------------------------------- COLMAP model


@pytest.mark.parametrize("binary", [True, False])
def test_colmap_model_with_query_list(tmp_path, binary, rng):
    import pycolmap

    reconstruction = pycolmap.Reconstruction()
    camera = Camera("SIMPLE_RADIAL", 64, 48, (50, 32, 24, 0.01))
    reconstruction.add_camera_with_trivial_rig(camera.to_pycolmap(camera_id=1))
    (tmp_path / "images").mkdir()
    poses = {}
    for image_id, name in enumerate(["a.png", "b.png", "c.png"], start=1):
        pose = Pose(axis_angle_to_rotmat(rng.normal(size=3), 0.3), rng.normal(size=3))
        reconstruction.add_image_with_trivial_frame(
            pycolmap.Image(name=name, camera_id=1, image_id=image_id), pose.to_pycolmap()
        )
        Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / "images" / name)
        poses[name] = pose
    model = tmp_path / "sparse" / "0"
    model.mkdir(parents=True)
    (reconstruction.write_binary if binary else reconstruction.write_text)(str(model))
    (tmp_path / "queries.txt").write_text("b.png SIMPLE_RADIAL 64 48 50 32 24 0.01\n")
    dataset = load_dataset("colmap", tmp_path, queries=tmp_path / "queries.txt")
    assert [f.name for f in dataset.frames("train")] == ["a.png", "c.png"]
    (query,) = dataset.frames("test")
    assert query.camera == camera
    np.testing.assert_allclose(query.pose.matrix, poses["b.png"].matrix, atol=1e-9)
    with pytest.raises(DatasetError, match="no query list given"):
        load_dataset("colmap", tmp_path).frames("test")
    (tmp_path / "queries.txt").write_text("zzz.png\n")
    with pytest.raises(DatasetError, match=r"queries.txt: 1 query names are not in the model, e.g. zzz.png"):
        load_dataset("colmap", tmp_path, queries=tmp_path / "queries.txt")


def test_colmap_missing_model_message(tmp_path):
    with pytest.raises(DatasetError, match="no COLMAP model"):
        load_dataset("colmap", tmp_path)


# ---------------------------------------------------------------- image folder


def save_jpeg(path, width=400, height=300, exif=None):
    image = Image.fromarray(np.zeros((height, width, 3), np.uint8))
    image.save(path, exif=exif) if exif is not None else image.save(path)


def test_folder_intrinsics_from_focal_camera_file_and_exif(tmp_path):
    save_jpeg(tmp_path / "a.jpg")
    (tmp_path / "sub").mkdir()
    save_jpeg(tmp_path / "sub" / "b.jpg")
    frames = ImageFolder(tmp_path, focal=500).frames("test")
    assert [f.name for f in frames] == ["a.jpg", "sub/b.jpg"]
    assert frames[0].camera == Camera("SIMPLE_PINHOLE", 400, 300, (500, 200, 150)) and frames[0].pose is None

    (tmp_path / "one.txt").write_text("# COLMAP cameras.txt line\n1 PINHOLE 400 300 410 420 199 151\n")
    assert ImageFolder(tmp_path, camera_file=tmp_path / "one.txt").frames("test")[1].camera.params == (
        410,
        420,
        199,
        151,
    )
    (tmp_path / "each.txt").write_text(
        "a.jpg SIMPLE_PINHOLE 400 300 300 200 150\nsub/b.jpg SIMPLE_PINHOLE 400 300 310 200 150\n"
    )
    cameras = [f.camera.params[0] for f in ImageFolder(tmp_path, camera_file=tmp_path / "each.txt").frames("test")]
    assert cameras == [300, 310]

    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 36  # 36 mm equivalent: focal = long side
    save_jpeg(tmp_path / "sub" / "b.jpg", exif=exif)
    (tmp_path / "a.jpg").unlink()
    (frame,) = ImageFolder(tmp_path).frames("test")
    assert frame.camera.params == (400, 200, 150)


def test_folder_bad_input_messages(tmp_path):
    save_jpeg(tmp_path / "a.jpg")
    with pytest.raises(
        DatasetError, match=r"a.jpg: intrinsics unknown: no EXIF focal length; pass --focal PIXELS or --camera FILE"
    ):
        ImageFolder(tmp_path).frames("test")
    (tmp_path / "cam.txt").write_text("PINHOLE 640 480 1 1 1 1\n")
    with pytest.raises(DatasetError, match=r"a.jpg: image is 400x300 but its camera is 640x480"):
        ImageFolder(tmp_path, camera_file=tmp_path / "cam.txt").frames("test")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DatasetError, match=r"broken.png: not a readable image"):
        ImageFolder(tmp_path, focal=100).frames("test")
    with pytest.raises(DatasetError, match="no mapping split"):
        ImageFolder(tmp_path, focal=100).frames("train")
    with pytest.raises(DatasetError, match=r"missing.jpg: no such image file or folder"):
        ImageFolder(tmp_path, focal=100, images=[tmp_path / "missing.jpg"]).frames("test")


@pytest.mark.parametrize(
    "header", ["Visual Landmark Dataset V1\nImageFile, Camera Position [X Y Z W P Q R]\n\n", "", "# my poses\n"]
)
def test_cambridge_split_rows_are_read_with_any_header_or_none(tmp_path, header):
    """A split file without the release's three header lines loses no row (it used to lose 3)."""
    poses = write_cambridge(tmp_path, sizes=[(64, 48)] * 5)
    rows = (tmp_path / "dataset_test.txt").read_text().splitlines()[3:]
    (tmp_path / "dataset_test.txt").write_text(header + "\n".join(rows) + "\n")
    frames = Cambridge(tmp_path).frames("test")
    assert [f.name for f in frames] == [f"seq1/frame{i:05d}.png" for i in range(1, 5)]
    assert all(np.allclose(f.pose.matrix, poses[f.name].matrix, atol=1e-9) for f in frames)


def test_cambridge_split_refuses_a_malformed_row_even_first(tmp_path):
    write_cambridge(tmp_path, sizes=[(64, 48)] * 3)
    rows = (tmp_path / "dataset_test.txt").read_text().splitlines()[3:]
    (tmp_path / "dataset_test.txt").write_text("seq1/frame00001.png 1 2 3\n" + "\n".join(rows) + "\n")
    with pytest.raises(DatasetError, match=r"dataset_test.txt:1: expected 'name X Y Z W P Q R', got 4 fields"):
        Cambridge(tmp_path).frames("test")
    (tmp_path / "dataset_test.txt").write_text("\n".join([rows[0], "ImageFile, Camera Position", rows[1]]) + "\n")
    with pytest.raises(DatasetError, match=r"dataset_test.txt:2: expected 'name X Y Z W P Q R', got 3 fields"):
        Cambridge(tmp_path).frames("test")


def test_a_truncated_jpeg_is_an_error_naming_the_file(tmp_path):
    """OpenCV would decode it half grey with only a warning."""
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "x.jpg")
    data = (tmp_path / "x.jpg").read_bytes()
    assert read_image(tmp_path / "x.jpg").shape == (48, 64, 3)
    (tmp_path / "x.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"x.jpg: truncated JPEG \(no end-of-image marker\): the file is incomplete"):
        read_image(tmp_path / "x.jpg")


def test_folder_queries_with_one_file_name_in_two_folders_stay_two_queries(tmp_path):
    """a/x.jpg and b/x.jpg used to share the name x.jpg (both got b's pose); the same file twice is an error."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        save_jpeg(tmp_path / folder / "x.jpg")
    frames = ImageFolder(tmp_path, focal=500, images=[tmp_path / "a" / "x.jpg", tmp_path / "b"]).frames("test")
    assert [f.name for f in frames] == ["a/x.jpg", "b/x.jpg"]
    outside = ImageFolder(tmp_path / "a", focal=500, images=[tmp_path / "b" / "x.jpg"]).frames("test")
    assert [f.name for f in outside] == [(tmp_path / "b" / "x.jpg").resolve().as_posix()]  # not below the root
    with pytest.raises(DatasetError, match=r"x.jpg: given twice \(also as .*a/x.jpg\); each query image once"):
        ImageFolder(tmp_path, focal=500, images=[tmp_path / "a" / "x.jpg", tmp_path / "a"]).frames("test")


@pytest.mark.parametrize("focal", [float("nan"), float("inf"), 0.0, -5.0])
def test_folder_refuses_a_focal_that_is_not_a_positive_number(tmp_path, focal):
    save_jpeg(tmp_path / "a.jpg")
    with pytest.raises(DatasetError, match=r"--focal must be a positive, finite number of pixels"):
        ImageFolder(tmp_path, focal=focal)


def test_folder_names_an_exif_focal_stored_as_text(tmp_path):
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x920A] = "fifty"  # FocalLength
    save_jpeg(tmp_path / "a.jpg", exif=exif)
    with pytest.raises(DatasetError, match=r"a.jpg: EXIF tag 37386 holds 'fifty', not a focal number; pass --focal"):
        ImageFolder(tmp_path).frames("test")


def pair_line(rotation: np.ndarray, decimals: int, bottom=(0, 0, 0, 1)) -> str:
    K = "500 0 320 0 500 240 0 0 1"
    T = np.eye(4)
    T[:3, :3], T[:3, 3], T[3] = rotation, [0.1, -0.2, 0.3], bottom
    return f"a.jpg b.jpg 0 0 {K} {K} " + " ".join(f"{v:.{decimals}f}" for v in T.ravel())


def test_pairs_printed_to_five_decimals_read_and_non_rotations_are_refused(tmp_path):
    """The SuperGlue / LoFTR files print rotations to 5 decimals; reloc used to refuse them."""
    rotation = axis_angle_to_rotmat(np.array([0.3, -0.5, 0.8]), 0.7)
    (tmp_path / "p.txt").write_text(pair_line(rotation, 5) + "\n")
    (pair,) = read_pairs_with_gt(tmp_path / "p.txt")
    assert 0 < pair.rotation_deviation < 1e-4 and np.abs(pair.cam1_from_cam0.R - rotation).max() < 1e-5
    for bad, message in [
        (pair_line(1.01 * rotation, 5), r"p.txt:1: T_0to1's upper-left 3x3 is not a rotation \(off by 0.017"),
        (pair_line(np.diag([1.0, 1.0, -1.0]), 5), r"p.txt:1: T_0to1's upper-left 3x3 is not a rotation"),
        (pair_line(rotation, 5, bottom=(0, 0, 1, 1)), r"p.txt:1: T_0to1's last row is \[0.0, 0.0, 1.0, 1.0\]"),
        (pair_line(rotation, 5).replace("0.10000", "nan", 1), r"p.txt:1: T_0to1 contains NaN"),
    ]:
        (tmp_path / "p.txt").write_text(bad + "\n")
        with pytest.raises(DatasetError, match=message):
            read_pairs_with_gt(tmp_path / "p.txt")


def test_a_row_or_sequence_listed_twice_is_refused_by_line(tmp_path):
    write_cambridge(tmp_path / "cam", sizes=[(64, 48)] * 3)
    split = tmp_path / "cam" / "dataset_test.txt"
    lines = split.read_text().splitlines()
    split.write_text("\n".join([*lines, lines[3]]) + "\n")
    with pytest.raises(
        DatasetError, match=r"dataset_test.txt:6: seq1/frame00001.png is listed twice \(first on line 4\)"
    ):
        Cambridge(tmp_path / "cam").frames("test")
    write_sevenscenes(tmp_path / "7s")
    (tmp_path / "7s" / "TrainSplit.txt").write_text("sequence1\nsequence1\n")
    with pytest.raises(DatasetError, match=r"TrainSplit.txt:2: sequence1 is listed twice \(first on line 1\)"):
        load_dataset("7scenes", tmp_path / "7s").frames("train")
