"""Synthetic scenes: round trips through the real loaders, determinism, appearance, training pairs."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
from typer.testing import CliRunner

from reloc.cli import app
from reloc.datasets import load_dataset, read_depth_mm, read_image
from reloc.datasets.synthetic.appearance import Appearance, apply_appearance, parse_appearance
from reloc.datasets.synthetic.generate import LAYOUTS, SynthConfig, build_scene, generate, plan_frames
from reloc.datasets.synthetic.pairs import PairSampler
from reloc.datasets.synthetic.render import Renderer, pixel_centres
from reloc.errors import RelocError
from reloc.geometry.projection import backproject_depth, project_points


@pytest.fixture(scope="module")
def sevenscenes_scene(module_folder):
    root = module_folder / "synth7"
    generate(
        SynthConfig("7scenes", seed=3, mapping_frames=4, query_frames=2, mapping_sequences=2, query_sequences=1), root
    )
    return root


@pytest.fixture(scope="module")
def cambridge_scene(module_folder):
    root = module_folder / "synthcam"
    generate(
        SynthConfig("cambridge", seed=5, mapping_frames=6, query_frames=2, mapping_sequences=2, query_sequences=1), root
    )
    return root


def rerendered_fraction(renderer: Renderer, frame) -> float:
    """Fraction of pixels of the written image that the generator's renderer gives back, within
    one grey level, from the pose and camera the loader read (plain appearance: the written image
    is the rendering rounded to uint8). Measured: 1.0 for loaded poses (the text files round them
    to 7-9 digits); 0.61-0.99 for a pose 1 mm or 0.02 degrees off or a focal length 0.2 % off."""
    written = read_image(frame.image_path).astype(int)
    rendered = apply_appearance(
        renderer.render(frame.pose, frame.camera).rgb, Appearance(), np.random.default_rng(0)
    ).astype(int)
    return float(np.mean(np.abs(rendered - written).max(axis=2) <= 1))


def test_sevenscenes_loaded_poses_rerender_the_written_images_and_depth(sevenscenes_scene):
    dataset = load_dataset("7scenes", sevenscenes_scene)
    train, test = dataset.frames("train"), dataset.frames("test")
    assert [f.name.split("/")[0] for f in train] == ["seq-01"] * 2 + ["seq-02"] * 2
    assert [f.name for f in test] == ["seq-03/frame-000000.color.png", "seq-03/frame-000001.color.png"]
    renderer = Renderer(build_scene("room", 3))
    for frame in train + test:
        assert frame.camera.K.tolist() == [[585, 0, 320], [0, 585, 240], [0, 0, 1]]
        assert read_image(frame.image_path).shape == (480, 640, 3)
        assert rerendered_fraction(renderer, frame) > 0.999, frame.name
        raycast = renderer.cast(frame.pose, frame.camera, pixel_centres(640, 480)).depth.reshape(480, 640)
        loaded = read_depth_mm(frame.depth_path)
        valid = np.isfinite(loaded)
        assert valid.mean() > 0.99  # a closed room: every ray hits something
        assert np.abs(loaded[valid] - raycast[valid]).max() <= 0.001


def test_cambridge_loaded_poses_rerender_the_written_images_focal_and_nvm_points(cambridge_scene):
    dataset = load_dataset("cambridge", cambridge_scene)
    frames = dataset.frames("train") + dataset.frames("test")
    assert len(frames) == 8 and frames[0].name == "seq1/frame00001.png"
    assert len({f.camera.params[0] for f in frames}) == 3  # a focal length per sequence, read per image from the NVM
    renderer = Renderer(build_scene("courtyard", 5))
    assert all(rerendered_fraction(renderer, frame) > 0.999 for frame in frames)

    lines = (cambridge_scene / "reconstruction.nvm").read_text().splitlines()
    num_cameras = int(lines[2])
    nvm_names = [line.split()[0] for line in lines[3 : 3 + num_cameras]]
    assert nvm_names[0] == "seq1/frame00001.jpg"  # .jpg in the NVM for .png files, as in the real release
    by_nvm_index = {i: next(f for f in frames if f.name[:-4] == name[:-4]) for i, name in enumerate(nvm_names)}
    num_points = int(lines[4 + num_cameras])
    assert num_points > 50
    for line in lines[5 + num_cameras : 5 + num_cameras + num_points : 10]:
        tokens = line.split()
        point = np.array([float(v) for v in tokens[:3]])
        for k in range(int(tokens[6])):
            image_index, _, x, y = tokens[7 + 4 * k : 11 + 4 * k]
            frame = by_nvm_index[int(image_index)]
            pixel, _ = project_points(point[None], frame.pose, frame.camera)
            np.testing.assert_allclose(pixel[0] - frame.camera.principal_point, [float(x), float(y)], atol=0.01)


def file_digests(root) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_identical_bytes_other_seed_differs(tmp_path):
    config = dict(
        layout="7scenes",
        mapping_frames=2,
        query_frames=1,
        mapping_sequences=1,
        query_sequences=1,
        appearance=parse_appearance("harsh"),
    )
    generate(SynthConfig(seed=11, **config), tmp_path / "a")
    generate(SynthConfig(seed=11, **config), tmp_path / "b")
    generate(SynthConfig(seed=12, **config), tmp_path / "c")
    a, b, c = file_digests(tmp_path / "a"), file_digests(tmp_path / "b"), file_digests(tmp_path / "c")
    assert a == b and len(a) == 3 * 3 + 3  # three frames of three files, two splits, synthetic.yaml
    differing = [name for name in a if name.endswith((".color.png", ".pose.txt")) and a[name] != c[name]]
    assert len(differing) == 6


def test_appearance_options_change_images_as_named(rng):
    image = np.random.default_rng(0).uniform(0.2, 0.8, (48, 64, 3)).astype(np.float32)
    plain = apply_appearance(image, Appearance(), rng)
    np.testing.assert_array_equal(plain, (image * 255 + 0.5).astype(np.uint8))
    mean = plain.mean()
    assert apply_appearance(image, Appearance(exposure=0.5), rng).mean() < 0.6 * mean
    assert apply_appearance(image, Appearance(gamma=2.2), rng).mean() < 0.7 * mean
    warm = apply_appearance(image, Appearance(white_balance=(1.2, 1.0, 0.7)), rng).reshape(-1, 3).mean(0)
    assert warm[0] > plain[..., 0].mean() and warm[2] < 0.8 * plain[..., 2].mean()
    noisy = apply_appearance(image, Appearance(noise=0.05), rng).astype(float)
    assert 10 < (noisy - plain).std() < 15  # 0.05 * 255 = 12.75
    blurred = apply_appearance(image, Appearance(motion_blur=7), rng).astype(float)
    assert np.abs(np.diff(blurred, axis=1)).mean() + np.abs(np.diff(blurred, axis=0)).mean() < 0.7 * (
        np.abs(np.diff(plain.astype(float), axis=1)).mean() + np.abs(np.diff(plain.astype(float), axis=0)).mean()
    )
    jpeg = apply_appearance(image, Appearance(jpeg_quality=40), rng)
    assert 0 < np.abs(jpeg.astype(float) - plain).mean() < 40
    assert parse_appearance("gamma=2.2,white_balance=1.1:1:0.8") == Appearance(gamma=2.2, white_balance=(1.1, 1.0, 0.8))
    with pytest.raises(RelocError, match="appearance option 'gama' is unknown"):
        parse_appearance("gama=2")
    with pytest.raises(RelocError, match="white_balance='1:2'"):
        parse_appearance("white_balance=1:2")


def test_training_pairs_have_consistent_dense_correspondences():
    sampler = PairSampler("room", seed=2, width=160, height=120)
    pair = sampler.sample(np.random.default_rng(0))
    assert pair.image0.shape == (120, 160, 3) and pair.flow0.shape == (120, 160, 2)
    assert pair.covisible0.mean() >= 0.3
    np.testing.assert_allclose(pair.cam1_from_cam0.matrix, (pair.pose1 @ pair.pose0.inverse()).matrix)
    rows, cols = np.nonzero(pair.covisible0)
    pixels0 = np.stack([cols, rows], 1) + 0.5
    points0 = backproject_depth(pixels0, pair.depth0[rows, cols], pair.pose0, pair.camera0)
    flow = pair.flow0[rows, cols].astype(np.float64)
    # The depth of image 1 at the flow target (nearest pixel, so up to ~0.7 px away) sees the same point.
    cols1, rows1 = flow.astype(int).T
    points1 = backproject_depth(np.stack([cols1, rows1], 1) + 0.5, pair.depth1[rows1, cols1], pair.pose1, pair.camera1)
    footprint = pair.depth1[rows1, cols1] / pair.camera1.focal_length[0]  # metres per pixel there
    assert np.median(np.linalg.norm(points0 - points1, axis=1) / footprint) < 1.0
    # Round trip 0 -> 1 -> 0 lands back within a pixel for pixels covisible both ways.
    back = pair.flow1[rows1, cols1]
    both = pair.covisible1[rows1, cols1]
    assert both.mean() > 0.95
    assert np.percentile(np.linalg.norm(back[both] - pixels0[both], axis=1), 95) < 1.5


def test_synth_cli_writes_a_loadable_scene(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "synth",
            "--layout",
            "cambridge",
            "--out",
            str(tmp_path / "s"),
            "--seed",
            "1",
            "--frames",
            "3,1",
            "--sequences",
            "1,1",
            "--appearance",
            "noise=0.01",
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(load_dataset("cambridge", tmp_path / "s").frames("test")) == 1
    result = CliRunner().invoke(app, ["synth", "--layout", "7scenes", "--out", str(tmp_path / "t"), "--frames", "3"])
    assert result.exit_code != 0 and "expected MAPPING,QUERIES frame counts" in result.output


@pytest.mark.parametrize("layout", ["7scenes", "cambridge"])
def test_off_trajectory_queries_move_sideways_and_aim_at_what_the_mapping_camera_saw(layout):
    plain = SynthConfig(layout, seed=4, mapping_frames=40, query_frames=6, mapping_sequences=2, query_sequences=2)
    moved = dataclasses.replace(plain, query_offset_m=0.5)
    spec = LAYOUTS[layout]
    scene = build_scene(spec.scene, 4)
    planned = plan_frames(moved, scene)
    mapping = [frame for frame in planned if frame.split == "train"]
    assert [frame.pose.t.tolist() for frame in mapping] == [
        frame.pose.t.tolist() for frame in plan_frames(plain, scene) if frame.split == "train"
    ]
    distances = []
    for query in (frame for frame in planned if frame.split == "test"):
        followed = [frame.pose for frame in mapping if frame.sequence == query.sequence - 2]  # queries 3, 4 follow 1, 2
        source = followed[np.linspace(0, len(followed) - 1, 3).round().astype(int)[query.index]]
        distance = np.linalg.norm(query.pose.center - source.center)
        if distance > 0.5 - 1e-9:  # not clipped to the camera region: moved exactly sideways
            assert abs((query.pose.center - source.center) @ source.R[2]) < 1e-9
        assert query.pose.center[2] == pytest.approx(source.center[2])
        distances.append(distance)
        target = query.pose.transform((source.center + spec.look_at_m * source.R[2])[None])
        assert target[0, 2] > 0
        np.testing.assert_allclose(
            query.camera.project(target)[0], [query.camera.width / 2, query.camera.height / 2], atol=1e-6
        )
    assert max(distances) <= 0.5 + 1e-9 and np.isclose(distances, 0.5).sum() >= 3, distances
    with pytest.raises(RelocError, match="query offset must be a finite distance"):
        SynthConfig(layout, query_offset_m=-1.0)
