"""Property-based tests of the readers users feed files to: Cambridge and 7-Scenes split files,
7-Scenes pose files, reloc's results files and SuperGlue/LoFTR pairs files.

Random valid files read back to what was written; random corruptions that make a file invalid
(a token that is not a number, NaN or infinity, a missing or extra field, a row listed twice,
bytes that are not UTF-8) give a :class:`~reloc.errors.RelocError` naming the file, never
another exception and never a silently different result. A text file cut at a line boundary
or inside a number reads as a shorter or different valid file; no text format can tell, so
cutting is not among the corruptions (maps are protected by their recorded hashes instead).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reloc.datasets.cambridge import read_split as read_cambridge_split
from reloc.datasets.pairs import read_pairs_with_gt
from reloc.datasets.sevenscenes import read_camera_to_world
from reloc.datasets.sevenscenes import read_split as read_sevenscenes_split
from reloc.errors import RelocError
from reloc.io.results import read_results, write_results
from reloc.types import Pose, QueryResult

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

name_parts = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=8)
image_names = st.lists(name_parts, min_size=1, max_size=3).map(lambda parts: "/".join(parts) + ".png")
unit_quaternions = (
    st.lists(st.floats(-1, 1, allow_nan=False), min_size=4, max_size=4)
    .filter(lambda q: np.linalg.norm(q) > 0.1)
    .map(lambda q: np.array(q) / np.linalg.norm(q))
)
vectors = st.lists(st.floats(-100, 100, allow_nan=False), min_size=3, max_size=3).map(np.array)
poses = st.builds(lambda q, t: Pose.from_qvec_tvec(q, t), unit_quaternions, vectors)


def corruptions(lines: list[str], names: int = 0) -> st.SearchStrategy[tuple[list[str], str]]:
    """(corrupted lines, what was done) for a file of data ``lines`` (header lines excluded)
    whose lines start with ``names`` name tokens, then numbers (garbage goes into a number)."""

    def replace_token(line_index: int, token_index: int, garbage: str) -> tuple[list[str], str]:
        tokens = lines[line_index].split()
        tokens[names + token_index % (len(tokens) - names)] = garbage
        return [*lines[:line_index], " ".join(tokens), *lines[line_index + 1 :]], f"token -> {garbage!r}"

    def drop_token(line_index: int, token_index: int) -> tuple[list[str], str]:
        tokens = lines[line_index].split()
        del tokens[token_index % len(tokens)]
        return [*lines[:line_index], " ".join(tokens), *lines[line_index + 1 :]], "token dropped"

    def duplicate(line_index: int) -> tuple[list[str], str]:
        return [*lines, lines[line_index]], "line repeated"

    line_index = st.integers(0, len(lines) - 1)
    token_index = st.integers(0, 40)
    garbage = st.sampled_from(["nan", "inf", "-inf", "x1.5", "1,5", "--", "0x"])
    return st.one_of(
        st.builds(replace_token, line_index, token_index, garbage),
        st.builds(drop_token, line_index, token_index),
        st.builds(duplicate, line_index),
    )


def assert_refused_by_name(read, path: Path) -> None:
    with pytest.raises(RelocError) as error:
        read(path)
    assert str(path) in str(error.value)


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def cambridge_row(name: str, pose: Pose) -> str:
    center = pose.center
    return " ".join([name, *(f"{v:.17g}" for v in center), *(f"{v:.17g}" for v in pose.qvec)])


def same_pose(a: Pose, b: Pose, tolerance: float = 1e-9) -> bool:
    return np.allclose(a.R, b.R, atol=tolerance) and np.allclose(a.t, b.t, atol=tolerance * 100)


cambridge_rows = st.lists(st.tuples(image_names, poses), min_size=1, max_size=6, unique_by=lambda row: row[0])
headers = st.sampled_from(
    [[], ["Visual Landmark Dataset V1", "ImageFile, Camera Position [X Y Z W P Q R]", ""], ["name X Y Z W P Q R"]]
)


@SETTINGS
@given(rows=cambridge_rows, header=headers)
def test_cambridge_split_round_trips(rows, header):
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder) / "dataset_test.txt", [*header, *(cambridge_row(n, p) for n, p in rows)])
        read = read_cambridge_split(path)
    assert [name for name, _, _ in read] == [name for name, _ in rows]
    assert all(same_pose(pose, expected) for (_, pose, _), (_, expected) in zip(read, rows))


@SETTINGS
@given(data=st.data(), rows=cambridge_rows, header=headers)
def test_cambridge_split_corruption_is_refused_by_name(data, rows, header):
    lines = [cambridge_row(n, p) for n, p in rows]
    corrupted, what = data.draw(corruptions(lines, names=1))
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder) / "dataset_test.txt", [*header, *corrupted])
        assert_refused_by_name(read_cambridge_split, path)


@SETTINGS
@given(sequences=st.lists(st.integers(1, 99), min_size=1, max_size=8, unique=True))
def test_sevenscenes_split_round_trips_and_a_repeat_is_refused(sequences):
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder) / "TrainSplit.txt", [f"sequence{s}" for s in sequences])
        assert read_sevenscenes_split(path) == [f"seq-{s:02d}" for s in sequences]
        write(path, [f"sequence{s}" for s in [*sequences, sequences[0]]])
        assert_refused_by_name(read_sevenscenes_split, path)


def pose_file_lines(pose: Pose) -> list[str]:
    matrix = np.eye(4)
    camera_to_world = pose.inverse()
    matrix[:3, :3], matrix[:3, 3] = camera_to_world.R, camera_to_world.t
    return [" ".join(f"{v:.17g}" for v in row) for row in matrix]


@SETTINGS
@given(pose=poses)
def test_sevenscenes_pose_file_round_trips(pose):
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder) / "frame-000000.pose.txt", pose_file_lines(pose))
        assert same_pose(read_camera_to_world(path), pose)


@SETTINGS
@given(data=st.data(), pose=poses)
def test_sevenscenes_pose_file_corruption_is_refused_by_name(data, pose):
    corrupted, what = data.draw(corruptions(pose_file_lines(pose)).filter(lambda c: c[1] != "line repeated"))
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder) / "frame-000000.pose.txt", corrupted)
        assert_refused_by_name(read_camera_to_world, path)


result_names = st.lists(
    st.text(alphabet="abcdefghij0123456789_-./ ", min_size=1, max_size=12).filter(lambda n: n.strip() == n),
    min_size=1,
    max_size=6,
    unique=True,
)


@SETTINGS
@given(data=st.data(), names=result_names)
def test_results_round_trip_with_names_holding_spaces(data, names):
    results = []
    for name in names:
        if data.draw(st.booleans()):
            results.append(QueryResult(name, data.draw(poses)))
        else:
            results.append(QueryResult(name, None, data.draw(st.sampled_from(["too few inliers (3 < 20)", "x: y"]))))
    with tempfile.TemporaryDirectory() as folder:
        write_results(Path(folder) / "results.txt", results)
        read = read_results(Path(folder) / "results.txt")
    assert list(read) == names
    for result in results:
        again = read[result.name]
        assert again.reason == result.reason
        assert (again.pose is None) == (result.pose is None)
        if result.pose is not None:
            assert same_pose(again.pose, result.pose, 1e-7)


@SETTINGS
@given(data=st.data(), names=result_names.map(lambda names: [n.replace(" ", "_") for n in names]))
def test_results_corruption_is_refused_by_name(data, names):
    results = [QueryResult(name, data.draw(poses)) for name in dict.fromkeys(names)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "results.txt"
        write_results(path, results)
        header, *lines = path.read_text().splitlines()
        corrupted, what = data.draw(corruptions(lines, names=1).filter(lambda c: c[1] != "token dropped"))
        write(path, [header, *corrupted])
        assert_refused_by_name(read_results, path)


def pairs_line(name0: str, name1: str, pose: Pose, focal: float) -> str:
    K = np.array([[focal, 0, 320], [0, focal, 240], [0, 0, 1]])
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = pose.R, pose.t
    values = [*K.ravel(), *K.ravel(), *matrix.ravel()]
    return " ".join([name0, name1, "0", "0", *(f"{v:.5f}" for v in values)])


@SETTINGS
@given(pairs=st.lists(st.tuples(image_names, image_names, poses, st.floats(100, 2000)), min_size=1, max_size=5))
def test_pairs_printed_to_five_decimals_round_trip(pairs):
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder) / "pairs_with_gt.txt", [pairs_line(*pair) for pair in pairs])
        read = read_pairs_with_gt(path)
    assert [(p.name0, p.name1) for p in read] == [(a, b) for a, b, _, _ in pairs]
    for pair, (_, _, pose, focal) in zip(read, pairs):
        assert np.allclose(pair.cam1_from_cam0.R, pose.R, atol=2e-5) and np.allclose(pair.K0[0, 0], focal, atol=1e-5)


@SETTINGS
@given(data=st.data(), pairs=st.lists(st.tuples(image_names, image_names, poses), min_size=1, max_size=4))
def test_pairs_corruption_is_refused_by_name(data, pairs):
    lines = [pairs_line(a, b, pose, 500.0) for a, b, pose in pairs]
    corrupted, what = data.draw(corruptions(lines, names=2).filter(lambda c: c[1] != "line repeated"))
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder) / "pairs_with_gt.txt", corrupted)
        assert_refused_by_name(read_pairs_with_gt, path)


@pytest.mark.parametrize(
    "read, file_name, valid",
    [
        (read_cambridge_split, "dataset_test.txt", "a.png 0 0 0 1 0 0 0"),
        (read_sevenscenes_split, "TestSplit.txt", "sequence1"),
        (read_camera_to_world, "frame-000000.pose.txt", "1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1"),
        (read_results, "results.txt", "a.png 1 0 0 0 0 0 0"),
        (read_pairs_with_gt, "pairs_with_gt.txt", pairs_line("a.png", "b.png", Pose.identity(), 500.0)),
    ],
)
def test_bytes_that_are_not_utf8_are_refused_by_name(tmp_path, read, file_name, valid):
    path = tmp_path / file_name
    path.write_bytes(valid.encode() + b"\n\xff\xfe\x00garbage\n")
    assert_refused_by_name(read, path)


@SETTINGS
@given(data=st.data(), pose=poses)
def test_a_malformed_details_entry_is_refused_by_name(data, pose):
    """The results' sidecar: a value of the wrong type or a broken file names the file."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "results.txt"
        write_results(path, [QueryResult("a.png", pose, num_inliers=30)])
        sidecar = Path(folder) / "results.details.json"
        entry = json.loads(sidecar.read_text())["a.png"]
        key = data.draw(st.sampled_from(["num_inliers", "timings", "rounds", "inliers", "evidence"]))
        entry[key] = data.draw(st.sampled_from(["many", [1, "x"], {"x": "y"}, [[1, 2]]]))
        sidecar.write_text(json.dumps({"a.png": entry}))
        with pytest.raises(RelocError, match=f"{sidecar}: the entry of a.png is malformed"):
            read_results(path)
