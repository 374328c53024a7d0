"""``neumap.pt``: a NeuMap map's voxel table and kept codes (float16), the digest of the decoder
the codes were optimised for, and how the optimisation went. Pruned codes are not stored: the
map's size is its kept codes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import RelocError
from .model import DecoderConfig, SceneCodes, code_bytes
from .voxels import VoxelTable

FORMAT = 1


@dataclass
class NeumapMap:
    table: VoxelTable
    codes: SceneCodes  # pruned codes are zero, with weight 0
    kept: torch.Tensor  # (V, L, K) bool
    decoder_digest: str
    decoder_config: DecoderConfig
    extractor: str
    record: dict  # optimisation steps, seconds, stopping reason, prune threshold
    points: np.ndarray  # (P, 3) float32 world: a sample of the labelled points, for the viewer

    def pruned(self, threshold: float) -> NeumapMap:
        """The map without the codes whose |weight| is under ``threshold`` (those pruned already stay pruned)."""
        kept = self.kept & self.codes.kept(threshold)
        codes = SceneCodes(self.codes.codes * kept[..., None], self.codes.weights * kept)
        record = {**self.record, "prune_threshold": threshold, "kept_codes": int(kept.sum())}
        record["code_bytes"] = code_bytes(kept, self.decoder_config.dim)
        config = self.decoder_config
        return NeumapMap(self.table, codes, kept, self.decoder_digest, config, self.extractor, record, self.points)

    def save(self, path: Path) -> None:
        kept = self.kept.numpy()
        torch.save(
            {
                "format": FORMAT,
                "decoder_digest": self.decoder_digest,
                "decoder_config": vars(self.decoder_config),
                "extractor": self.extractor,
                "voxels": {
                    "size": self.table.size,
                    "origin": self.table.origin.tolist(),
                    "cells": torch.from_numpy(self.table.cells),
                    "median": torch.from_numpy(self.table.median),
                    "low": torch.from_numpy(self.table.low),
                    "high": torch.from_numpy(self.table.high),
                },
                "kept_shape": list(kept.shape),
                "kept_bits": torch.from_numpy(np.packbits(kept.reshape(-1))),
                "codes": self.codes.codes[self.kept].to(torch.float16),
                "weights": self.codes.weights[self.kept].to(torch.float16),
                "record": self.record,
                "points": torch.from_numpy(self.points.astype(np.float16)),
            },
            path,
        )

    @classmethod
    def load(cls, path: Path) -> NeumapMap:
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise RelocError(f"{path}: not a readable NeuMap map ({error}); rebuild the map") from None
        if not isinstance(saved, dict) or saved.get("format") != FORMAT:
            found = saved.get("format") if isinstance(saved, dict) else None
            raise RelocError(
                f"{path}: NeuMap map format {found}, but this reloc reads format {FORMAT}; rebuild the map"
            )
        config = DecoderConfig(**saved["decoder_config"])
        shape = saved["kept_shape"]
        kept = np.unpackbits(saved["kept_bits"].numpy(), count=int(np.prod(shape))).reshape(shape).astype(bool)
        kept = torch.from_numpy(kept)
        codes = torch.zeros(*shape, config.dim)
        weights = torch.zeros(*shape)
        codes[kept] = saved["codes"].float()
        weights[kept] = saved["weights"].float()
        voxels = saved["voxels"]
        table = VoxelTable(
            float(voxels["size"]),
            np.asarray(voxels["origin"], np.float64),
            voxels["cells"].numpy(),
            voxels["median"].numpy(),
            voxels["low"].numpy(),
            voxels["high"].numpy(),
        )
        return cls(
            table,
            SceneCodes(codes, weights),
            kept,
            saved["decoder_digest"],
            config,
            saved["extractor"],
            saved["record"],
            saved["points"].numpy().astype(np.float32),
        )
