"""A map split into submaps by region: regions from camera centres, submaps that hold exactly
their keyframes' observations of the same landmarks, and queries routed to their submaps that
localize as they do on the whole map, in one process and on Ray workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from reloc import api
from reloc.datasets import load_dataset
from reloc.errors import PipelineError
from reloc.geometry.errors import pose_error
from reloc.localization.routing import query_only_nodes, routed_features, submap_votes
from reloc.mapping.store import read_sparse_map
from reloc.mapping.submaps import SPLIT_FILE, SplitConfig, region_members
from reloc.pipeline.executors import ExecutorConfig
from reloc.pipeline.runner import load_map_pipeline, localize

from .scenes import mapped_room


def test_regions_follow_the_camera_clusters_and_overlap_at_their_borders():
    rng = np.random.default_rng(0)
    clusters = [np.array([0.0, 0, 0]), np.array([10.0, 0, 0]), np.array([0.0, 10, 0])]
    centres = np.concatenate([centre + rng.normal(0, 0.5, (20, 3)) for centre in clusters])
    regions = region_members(centres, SplitConfig(parts=3, overlap=0.0))
    assert sorted(tuple(region) for region in regions) == [tuple(range(i, i + 20)) for i in (0, 20, 40)]
    border = np.concatenate([centres, [[5.0, 0, 0]]])  # halfway between the first two clusters
    regions = region_members(border, SplitConfig(parts=3, overlap=0.25))
    assert sum(60 in region for region in regions) == 2
    with pytest.raises(PipelineError, match="cannot split 61 keyframes into 62 submaps"):
        region_members(border, SplitConfig(parts=62))


def test_submaps_are_ranked_by_the_reciprocal_rank_of_their_keyframes():
    submap_of = [[0], [1], [1], [0, 1], [2]]
    assert submap_votes([3, 0, 1], submap_of, 3) == [0, 1]  # 1 + 1/2 for submap 0, 1 + 1/3 for submap 1
    assert submap_votes([4], submap_of, 3) == [2]


@pytest.fixture(scope="module")
def split_scene(module_folder) -> tuple[Path, Path, Path]:
    """The synthetic room (seed 8, 6 queries), its default map and that map split in 2 submaps."""
    scene, map_dir = mapped_room(module_folder, query_frames=6)
    api.split_map(map_dir, module_folder / "split", SplitConfig(parts=2, overlap=0.25))
    return scene, map_dir, module_folder / "split"


@pytest.mark.slow
def test_each_submap_keeps_its_keyframes_observations_of_the_same_landmarks(split_scene):
    _, map_dir, split_dir = split_scene
    split = yaml.safe_load((split_dir / SPLIT_FILE).read_text())
    whole = read_sparse_map(map_dir)
    names = [name for entry in split["submaps"] for name in entry["keyframes"]]
    assert set(names) == set(whole.cameras) and len(names) > len(whole.cameras)  # all, some in both
    for entry in split["submaps"]:
        part = read_sparse_map(split_dir / entry["folder"])
        assert set(part.cameras) == set(entry["keyframes"]) and len(part.points) == entry["landmarks"]
        assert len(part.points) < len(whole.points)
        for name in entry["keyframes"][:5]:
            mine, theirs = part.observations(name), whole.observations(name)
            np.testing.assert_array_equal(mine.keypoints, theirs.keypoints)
            np.testing.assert_array_equal(part.points[mine.point_ids], whole.points[theirs.point_ids])
            np.testing.assert_array_equal(mine.descriptors, theirs.descriptors)


@pytest.mark.slow
def test_the_router_runs_the_query_features_and_routes_by_the_retrieval_they_feed(split_scene):
    pipeline = load_map_pipeline(split_scene[2])
    front = query_only_nodes(pipeline)
    assert front == ["features"] and routed_features(pipeline, front) == "features.features"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["local", "ray"])
def test_routed_queries_localize_as_on_the_whole_map(split_scene, kind):
    scene, map_dir, split_dir = split_scene
    if kind == "ray":
        ray = pytest.importorskip("ray")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        queries = load_dataset("7scenes", scene).frames("test")
        whole = localize(map_dir, queries)
        routed = localize(split_dir, queries, executor=ExecutorConfig(kind, workers=2))
    finally:
        if kind == "ray":
            ray.shutdown()
    assert [result.name for result in routed] == [frame.name for frame in queries]
    truth = load_dataset("7scenes", scene).ground_truth()

    def correct(results) -> set[str]:
        """Queries localized within 5 cm and 2° of the ground truth."""
        errors = {r.name: pose_error(r.pose, truth[r.name].pose) for r in results if r.pose is not None}
        return {name for name, (dt, dr) in errors.items() if dt < 0.05 and dr < 2.0}

    assert len(correct(whole)) >= 4 and len(correct(routed) & correct(whole)) >= len(correct(whole)) - 1
    for result in routed:
        if result.pose is not None:
            assert {"features", "routing", "retrieval", "matching", "pnp"} <= set(result.timings)
            assert result.record.extra["submap"].startswith("submap-")
        else:
            assert result.reason


@pytest.mark.slow
def test_a_split_map_with_a_missing_submap_is_refused_by_name(split_scene, tmp_path):
    scene, _, split_dir = split_scene
    damaged = tmp_path / "split"
    damaged.mkdir()
    content = yaml.safe_load((split_dir / SPLIT_FILE).read_text())
    (damaged / SPLIT_FILE).write_text(yaml.safe_dump(content))
    queries = load_dataset("7scenes", scene).frames("test")
    with pytest.raises(PipelineError, match="submap-00: submap listed in split.yaml is missing"):
        localize(damaged, queries)
    with pytest.raises(PipelineError, match="exists and is not empty"):
        api.split_map(split_scene[1], split_dir)
