import numpy as np
import pytest

from reloc.geometry.errors import pose_error
from reloc.geometry.projection import backproject_depth, project_points
from reloc.rotation import axis_angle_to_rotmat, qvec_to_rotmat, rotmat_to_qvec
from reloc.types import Camera, Pose


def random_pose(rng) -> Pose:
    return Pose(axis_angle_to_rotmat(rng.normal(size=3), rng.uniform(0, np.pi)), rng.normal(size=3))


def test_quaternion_round_trip_including_near_180_degrees(rng):
    for angle in [0.0, 0.3, np.pi - 1e-7, np.pi]:
        R = axis_angle_to_rotmat(rng.normal(size=3), angle)
        q = rotmat_to_qvec(R)
        assert q[0] >= 0 and np.isclose(np.linalg.norm(q), 1)
        np.testing.assert_allclose(qvec_to_rotmat(q), R, atol=1e-9)


def test_quaternion_convention_is_wxyz_hamilton():
    # 90 degrees about z maps the x axis onto the y axis.
    q = np.array([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)])
    np.testing.assert_allclose(qvec_to_rotmat(q) @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_pose_compose_inverse_centre(rng):
    a, b = random_pose(rng), random_pose(rng)
    points = rng.normal(size=(5, 3))
    np.testing.assert_allclose((a @ b).transform(points), a.transform(b.transform(points)), atol=1e-12)
    np.testing.assert_allclose((a @ a.inverse()).matrix, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(a.transform(a.center[None]), [[0, 0, 0]], atol=1e-12)
    np.testing.assert_allclose(Pose.from_rotation_center(a.R, a.center).t, a.t, atol=1e-12)


def test_pose_rejects_nan_and_non_rotations():
    with pytest.raises(ValueError, match="NaN"):
        Pose(np.eye(3), [0, np.nan, 0])
    with pytest.raises(ValueError, match="orthonormal"):
        Pose(np.diag([1.0, 1.0, -1.0]), np.zeros(3))


def test_pose_and_camera_pycolmap_round_trip(rng):
    pose = random_pose(rng)
    back = Pose.from_pycolmap(pose.to_pycolmap())
    np.testing.assert_allclose(back.matrix, pose.matrix, atol=1e-12)
    for camera in [
        Camera("SIMPLE_PINHOLE", 640, 480, (500, 320, 240)),
        Camera("PINHOLE", 640, 480, (500, 510, 321, 239)),
        Camera("SIMPLE_RADIAL", 640, 480, (500, 320, 240, -0.05)),
    ]:
        assert Camera.from_pycolmap(camera.to_pycolmap()) == camera


@pytest.mark.parametrize(
    "camera",
    [Camera("PINHOLE", 640, 480, (500, 510, 321, 239)), Camera("SIMPLE_RADIAL", 640, 480, (500, 320, 240, -0.08))],
)
def test_projection_matches_pycolmap_and_inverts(camera, rng):
    points_cam = np.c_[rng.uniform(-0.5, 0.5, size=(50, 2)), rng.uniform(1, 3, size=50)]
    pixels = camera.project(points_cam)
    np.testing.assert_allclose(pixels, camera.to_pycolmap().img_from_cam(points_cam), atol=1e-9)
    np.testing.assert_allclose(camera.unproject(pixels), points_cam[:, :2] / points_cam[:, 2:], atol=1e-9)


def test_project_and_backproject_depth(rng):
    camera, pose = Camera.simple_pinhole(640, 480, 585), random_pose(rng)
    points_cam = np.c_[rng.uniform(-0.3, 0.3, size=(20, 2)), rng.uniform(1, 3, size=20)]
    world = pose.inverse().transform(points_cam)
    pixels, visible = project_points(world, pose, camera)
    assert visible.all()
    np.testing.assert_allclose(backproject_depth(pixels, points_cam[:, 2], pose, camera), world, atol=1e-9)
    behind = pose.inverse().transform(np.array([[0.0, 0.0, -1.0]]))
    assert not project_points(behind, pose, camera)[1][0]


def test_pose_error_is_centre_distance_and_rotation_angle(rng):
    gt = random_pose(rng)
    delta = axis_angle_to_rotmat(rng.normal(size=3), np.radians(3.0))
    estimate = Pose.from_rotation_center(delta @ gt.R, gt.center + [0.0, 0.3, 0.4])
    dt, dr = pose_error(estimate, gt)
    assert dt == pytest.approx(0.5, abs=1e-12)
    assert dr == pytest.approx(3.0, abs=1e-9)


def test_camera_validation_messages():
    with pytest.raises(ValueError, match="not supported"):
        Camera("OPENCV_FISHEYE", 640, 480, (1, 2, 3, 4))
    with pytest.raises(ValueError, match="takes 3 parameters"):
        Camera("SIMPLE_PINHOLE", 640, 480, (1, 2))
    with pytest.raises(ValueError, match="positive focal"):
        Camera("SIMPLE_PINHOLE", 640, 480, (-5, 2, 3))
