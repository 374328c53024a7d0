"""The hash-grid backend of FaVoR: the torch hash encoding against a direct implementation of
Instant-NGP's formulas (in tiny-cuda-nn's conventions), its gradients, its tiny-cuda-nn schema
checks, training on one landmark, and favor.pt files of the other backend or format."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

from reloc.configs import config_path
from reloc.errors import PipelineError, RelocError
from reloc.favor.hashgrid import HashEncoding, HashGridField, HashGridSpec, MlpSpec, tinycudann_available
from reloc.favor.model import LandmarkFields
from reloc.favor.render import RenderConfig, render_field_rays
from reloc.favor.train import HashGridTrainConfig, TrainConfig, TrainingRays, train_hash_field
from reloc.pipeline.spec import load_pipeline

from .test_favor import SIDE, camera_rays, landmark_rays, viewpoints

# 6 levels of 4 .. 76 vertices per axis, 1024 entries: levels 0-1 dense, 2-5 hashed
SPEC = HashGridSpec(n_levels=6, n_features_per_level=2, log2_hashmap_size=10, base_resolution=4, per_level_scale=1.8)


def reference_encoding(point: np.ndarray, table: np.ndarray, spec: HashGridSpec) -> tuple[np.ndarray, list]:
    """The encoding of one point (3,) in [0, 1], written out from the formulas with Python
    integers: features (n_levels * F,) and per level the 8 (table row, weight) pairs."""
    features, taps, offset = [], [], 0
    for level in range(spec.n_levels):
        scale = spec.base_resolution * spec.per_level_scale**level - 1
        resolution = math.ceil(scale) + 1
        size = min(2**spec.log2_hashmap_size, -(-(resolution**3) // 8) * 8)
        position = point * scale + 0.5
        lower = np.floor(position).astype(int)
        fraction = position - lower
        value = np.zeros(spec.n_features_per_level)
        for corner in range(8):
            bits = [(corner >> axis) & 1 for axis in range(3)]
            x, y, z = (int(lower[axis]) + bits[axis] for axis in range(3))
            if resolution**3 <= size:
                index = x + y * resolution + z * resolution**2
            else:
                index = ((x * 1) & 0xFFFFFFFF) ^ ((y * 2654435761) & 0xFFFFFFFF) ^ ((z * 805459861) & 0xFFFFFFFF)
            row = offset + index % size
            weight = np.prod([fraction[a] if bits[a] else 1 - fraction[a] for a in range(3)])
            value += weight * table[row]
            taps.append((row, weight))
        features.append(value)
        offset += size
    return np.concatenate(features), taps


def random_encoding(seed: int = 0) -> HashEncoding:
    encoding = HashEncoding(SPEC)
    with torch.no_grad():
        encoding.table.uniform_(-1, 1, generator=torch.Generator().manual_seed(seed))
    return encoding


def test_level_resolutions_and_sizes_follow_the_growth_factor():
    assert SPEC.level_resolutions().tolist() == [4, 8, 13, 24, 42, 76]
    assert SPEC.level_sizes().tolist() == [64, 512, 1024, 1024, 1024, 1024]
    ngp = HashGridSpec(n_levels=16, log2_hashmap_size=19, base_resolution=16, per_level_scale=1.3819)
    finest = ngp.level_resolutions()[-1]
    assert finest == math.ceil(16 * 1.3819**15 - 1) + 1 and 2000 < finest < 2100  # Instant-NGP's 2048


def test_hash_encoding_matches_the_formulas():
    encoding = random_encoding()
    points = np.random.default_rng(1).uniform(0, 1, (200, 3))
    ours = encoding(torch.from_numpy(points).float()).detach().numpy()
    table = encoding.table.detach().double().numpy()
    reference = np.stack([reference_encoding(point.astype(np.float32), table, SPEC)[0] for point in points])
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_hash_encoding_gradients_match_the_interpolation_weights():
    encoding = random_encoding()
    points = np.random.default_rng(2).uniform(0, 1, (50, 3)).astype(np.float32)
    upstream = torch.from_numpy(np.random.default_rng(3).normal(size=(50, SPEC.output_dim))).float()
    (encoding(torch.from_numpy(points)) * upstream).sum().backward()
    expected = np.zeros(tuple(encoding.table.shape))
    table = encoding.table.detach().double().numpy()
    for point, gradient in zip(points, upstream.numpy()):
        _, taps = reference_encoding(point, table, SPEC)
        for tap, (row, weight) in enumerate(taps):
            level = tap // 8
            expected[row] += weight * gradient[level * 2 : level * 2 + 2]
    np.testing.assert_allclose(encoding.table.grad.numpy(), expected, atol=1e-5)


def test_hash_encoding_input_gradient_matches_finite_differences():
    encoding = random_encoding()
    points = torch.from_numpy(np.random.default_rng(4).uniform(0.1, 0.9, (20, 3))).float().requires_grad_(True)
    upstream = torch.from_numpy(np.random.default_rng(5).normal(size=(20, SPEC.output_dim))).float()
    (encoding(points) * upstream).sum().backward()
    step = 1e-4
    for axis in range(3):
        shift = torch.zeros(3)
        shift[axis] = step
        with torch.no_grad():
            ahead = (encoding(points + shift) * upstream).sum(dim=1)
            behind = (encoding(points - shift) * upstream).sum(dim=1)
        numeric = ((ahead - behind) / (2 * step)).numpy()
        # a point within a step of a cell boundary of any level has a kink there: compare the rest
        agree = np.isclose(points.grad[:, axis].numpy(), numeric, rtol=1e-2, atol=1e-2)
        assert agree.mean() > 0.8, (points.grad[:, axis], numeric)


@pytest.mark.parametrize(
    "schema, message",
    [
        ({"otype": "HashGrid", "n_level": 8}, "unknown key 'n_level'"),
        ({"otype": "HashGrid", "n_features_per_level": 3}, "n_features_per_level must be 1, 2, 4 or 8"),
        ({"otype": "HashGrid", "log2_hashmap_size": 40}, "log2_hashmap_size must be 4 .. 28"),
        ({"otype": "HashGrid", "per_level_scale": 0.5}, "per_level_scale must be >= 1"),
        ({"otype": "HashGrid", "n_levels": "eight"}, "n_levels must be int"),
        ({"otype": "DenseGrid"}, "otype must be 'HashGrid'"),
        ({"otype": "HashGrid", "hash": "Reversed"}, "hash: only 'CoherentPrime' is implemented"),
    ],
)
def test_hash_grid_schema_errors_name_the_key(schema, message):
    with pytest.raises(ValueError, match=message):
        HashGridSpec.from_schema(schema)


def test_mlp_schema_errors_name_the_key():
    with pytest.raises(ValueError, match="n_neurons must be one of"):
        MlpSpec.from_schema({"otype": "FullyFusedMLP", "n_neurons": 100})
    with pytest.raises(ValueError, match="unknown key 'bias'"):
        MlpSpec.from_schema({"otype": "FullyFusedMLP", "bias": True})


def test_pipeline_with_a_bad_hash_grid_key_fails_at_load(tmp_path):
    content = yaml.safe_load(config_path("favor-hashgrid").read_text())
    content["mapping"]["nodes"]["fields"]["with"]["hashgrid"]["encoding"]["n_level"] = 4
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(PipelineError, match=r"node 'fields'.*hashgrid.encoding: unknown key 'n_level'"):
        load_pipeline(path)


def one_landmark_training(seed: int, steps: int):
    origins, directions, targets, basis = landmark_rays(seed, np.zeros(3))
    rays = TrainingRays(origins, directions, targets, torch.tensor([0]), torch.tensor([len(origins)]))
    config = TrainConfig(backend="hashgrid", steps=steps, rays_per_step=256)
    return train_hash_field(torch.zeros(1, 3), torch.tensor([SIDE]), rays, np.array([seed]), config), basis, config


def held_out_field_error(field: HashGridField, basis: torch.Tensor, config: TrainConfig) -> float:
    held_out = viewpoints([12, 28], [30, 90, 150, 210, 270, 330])
    origins, directions, targets = camera_rays(held_out, 500, basis, np.random.default_rng(1))
    with torch.no_grad():
        rendering = render_field_rays(
            field, torch.zeros(1, 3), torch.tensor([SIDE]), origins[None], directions[None], config.render
        )
    return float(1 - (rendering.descriptors[0] * targets).sum(dim=-1).mean())


@pytest.mark.slow
def test_hash_field_trained_on_one_landmark_renders_closer_to_the_targets():
    """Held-out viewing directions, as the voxel test: 1 - cosine at initialisation (a random
    head; measured 0.67) against after 150 steps (measured 0.013, training PSNR 35.9 dB)."""
    trained, basis, config = one_landmark_training(0, steps=150)
    initial = config.hashgrid.field(trained.field.lower, trained.field.upper, 16, config.seed)
    start, error = held_out_field_error(initial, basis, config), held_out_field_error(trained.field, basis, config)
    assert error < 0.1 * start, (error, start)
    assert trained.losses[-1] < 0.5 * trained.losses[0]


def fields_file(tmp_path, backend: str):
    common = ("xfeat", np.array([3]), torch.zeros(1, 3), torch.tensor([SIDE]), torch.tensor([20.0]))
    if backend == "voxel":
        fields = LandmarkFields(*common, grids=torch.zeros(1, 17, 3, 3, 3))
    else:
        config = HashGridTrainConfig()
        fields = LandmarkFields(*common, hash_field=config.field(torch.full((3,), -1.0), torch.ones(3), 16, 0))
    path = tmp_path / f"{backend}.pt"
    fields.save(path)
    return path, fields


def test_hash_field_file_round_trips(tmp_path):
    path, fields = fields_file(tmp_path, "hashgrid")
    loaded = LandmarkFields.load(path, "hashgrid")
    rays = torch.nn.functional.normalize(torch.tensor([[[0.3, 0.2, 1.0]]]), dim=-1)
    origins = -rays * 2
    with torch.no_grad():
        ours = fields.render(np.array([0]), origins, rays, RenderConfig()).descriptors
        theirs = loaded.render(np.array([0]), origins, rays, RenderConfig()).descriptors
    torch.testing.assert_close(ours, theirs, atol=2e-3, rtol=0)  # stored in half precision
    assert loaded.backend == "hashgrid" and loaded.descriptor_dim == 16


def test_favor_file_of_the_other_backend_or_format_fails_clearly(tmp_path):
    voxel_path, _ = fields_file(tmp_path, "voxel")
    hash_path, _ = fields_file(tmp_path, "hashgrid")
    with pytest.raises(RelocError, match=r"voxel.pt: FaVoR fields of the voxel backend, but the localization expects"):
        LandmarkFields.load(voxel_path, "hashgrid")
    with pytest.raises(RelocError, match=r"hashgrid.pt: FaVoR fields of the hashgrid backend.*expects voxel"):
        LandmarkFields.load(hash_path, "voxel")
    old = torch.load(voxel_path, weights_only=True)
    del old["format"]
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(RelocError, match=r"old.pt: FaVoR fields of format version 1; this reloc reads version 2"):
        LandmarkFields.load(tmp_path / "old.pt")


@pytest.mark.skipif(not tinycudann_available(), reason="needs tinycudann and CUDA (optional extra 'tcnn')")
def test_tinycudann_encoding_equals_the_torch_encoding():
    import tinycudann

    encoding = random_encoding()
    fused = tinycudann.Encoding(3, SPEC.schema(), dtype=torch.float32).cuda()
    with torch.no_grad():
        fused.params.copy_(encoding.table.detach().flatten().cuda())
    points = torch.rand(4096, 3, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(fused(points.cuda()).float().cpu(), encoding(points).detach(), atol=1e-4, rtol=1e-4)
