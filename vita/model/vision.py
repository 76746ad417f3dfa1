"""VISION_TOWERS: pixel tiles [N, 3, S, S] -> features [N, T, C].

Each factory takes shape overrides and returns a :class:`VisionTower` that carries its image
settings (``image_size``, ``image_mean``, ``image_std``) for the data pipeline, says how many
tokens a tile gives (``num_tokens``) and can make a dummy tile (``dummy_inputs``).

- ``internvit`` (InternViT-300M-448px shapes, VITA-1.5's tower): last layer, CLS dropped, x0.5,
  then 2x2 pixel shuffle -> 256 tokens x 4096 per 448-px tile (``vita-1.5.md`` §2.2).
  :func:`load_vision_weights` reads transformers' InternVL layout and the original OpenGVLab
  layout (``vita.model.internvit_keys``).
- ``siglip`` (so400m-patch14-384 shapes; layer -2, optional S2 multi-scale wrapper, §2.5) and
  ``clip`` (ViT-L/14-336 shapes; layer -2, CLS dropped), on transformers' classes.
- ``tiny-*``: 2-layer, 32-wide versions of each for CPU tests.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionConfig, InternVLVisionConfig, SiglipVisionConfig  # the models: imported on use

from vita.registry import VISION_TOWERS

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def pixel_shuffle(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """[n, h*w, c] row-major grid -> [n, (h/f)*(w/f), c*f*f], folding each f x f block into channels.

    Channel order of an output token: row offset, then column offset, then the input channel
    (the layout InternVL checkpoints were trained with).
    """
    n, t, c = x.shape
    h = int(t**0.5)
    x = x.reshape(n, h // factor, factor, h // factor, factor, c)  # [n, i, m, j, k, c]
    return x.permute(0, 1, 3, 2, 4, 5).reshape(n, (h // factor) ** 2, c * factor * factor)


class VisionTower(nn.Module):
    """A transformers vision model plus VITA's feature selection."""

    def __init__(self, model: nn.Module, *, image_size: int, patch_size: int, hidden: int, select_layer: int,
                 drop_cls: bool, shuffle: bool, mean: tuple, std: tuple) -> None:
        super().__init__()
        self.model = model
        self.image_size, self.patch_size = image_size, patch_size
        self.select_layer, self.drop_cls, self.shuffle = select_layer, drop_cls, shuffle
        self.image_mean, self.image_std = tuple(mean), tuple(std)
        self.hidden_size = hidden * 4 if shuffle else hidden

    def num_tokens(self, image_size: int | None = None) -> int:
        """Tokens per tile of side ``image_size`` (default: the tower's own)."""
        n = ((image_size or self.image_size) // self.patch_size) ** 2
        return n // 4 if self.shuffle else n

    def dummy_inputs(self) -> torch.Tensor:
        """One all-zero tile, for ranks whose batch has no image or video."""
        p = next(self.parameters())
        return torch.zeros(1, 3, self.image_size, self.image_size, device=p.device, dtype=p.dtype)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixel_values.to(next(self.parameters()).dtype), output_hidden_states=True)
        x = out.hidden_states[self.select_layer]
        if self.drop_cls:
            x = x[:, 1:]
        if self.shuffle:
            x = pixel_shuffle(x * 0.5)  # the x0.5 before the shuffle is in VITA's released weights
        return x


class S2Tower(nn.Module):
    """SigLIP at several scales: each scale cut into base-size tiles, encoded, merged, pooled to the
    base grid and concatenated along channels (hidden = base hidden x number of scales)."""

    def __init__(self, tower: VisionTower, scales: list[int]) -> None:
        super().__init__()
        self.tower, self.scales = tower, sorted(scales)
        self.image_size = self.scales[-1]
        self.patch_size = tower.patch_size
        self.image_mean, self.image_std = tower.image_mean, tower.image_std
        self.hidden_size = tower.hidden_size * len(scales)

    def num_tokens(self, image_size: int | None = None) -> int:
        return self.tower.num_tokens()

    def dummy_inputs(self) -> torch.Tensor:
        p = next(self.parameters())
        return torch.zeros(1, 3, self.image_size, self.image_size, device=p.device, dtype=p.dtype)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        base = self.scales[0]
        g = base // self.tower.patch_size
        feats = []
        for s in self.scales:
            img = F.interpolate(pixel_values, size=(s, s), mode="bicubic", align_corners=False) if s != pixel_values.shape[-1] else pixel_values
            k = s // base
            tiles = img.reshape(img.shape[0], 3, k, base, k, base).permute(2, 4, 0, 1, 3, 5).reshape(-1, 3, base, base)
            f = self.tower(tiles)  # [k*k*n, g*g, c]
            c = f.shape[-1]
            f = f.reshape(k, k, -1, g, g, c).permute(2, 5, 0, 3, 1, 4).reshape(-1, c, k * g, k * g)
            if k > 1:
                f = F.interpolate(f, size=(g, g), mode="area")
            feats.append(f.flatten(2).transpose(1, 2))
        return torch.cat(feats, dim=-1)


def _internvit(cfg: dict, select_layer: int) -> VisionTower:
    from transformers import InternVLVisionModel

    config = InternVLVisionConfig(**cfg)
    size, patch = config.image_size[0], config.patch_size[0]
    return VisionTower(InternVLVisionModel(config), image_size=size, patch_size=patch, hidden=config.hidden_size,
                       select_layer=select_layer, drop_cls=True, shuffle=True, mean=IMAGENET_MEAN, std=IMAGENET_STD)


INTERNVIT_300M = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                      image_size=448, patch_size=14, attention_bias=True, layer_norm_eps=1e-6, use_mean_pooling=True,
                      drop_path_rate=0.0)
TINY_VIT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


@VISION_TOWERS.register("internvit")
def internvit(select_layer: int = -1, **overrides: Any) -> VisionTower:
    """InternViT-300M-448px: 24 x 1024, patch 14, 448 px -> 256 tokens x 4096 per tile (~304 M)."""
    return _internvit({**INTERNVIT_300M, **overrides}, select_layer)


@VISION_TOWERS.register("tiny-internvit")
def tiny_internvit(select_layer: int = -1, **overrides: Any) -> VisionTower:
    """2 x 32, patch 14, 56 px -> 4 tokens x 128 per tile."""
    return _internvit({**INTERNVIT_300M, **TINY_VIT, "image_size": 56, **overrides}, select_layer)


SIGLIP_SO400M = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                     image_size=384, patch_size=14)


def _siglip(cfg: dict, select_layer: int, use_s2: bool, s2_scales: list[int] | None) -> nn.Module:
    from transformers import SiglipVisionModel

    config = SiglipVisionConfig(**{"vision_use_head": False, **cfg})
    tower = VisionTower(SiglipVisionModel(config), image_size=config.image_size, patch_size=config.patch_size,
                        hidden=config.hidden_size, select_layer=select_layer, drop_cls=False, shuffle=False,
                        mean=SIGLIP_MEAN, std=SIGLIP_STD)
    if use_s2:
        base = config.image_size
        return S2Tower(tower, list(s2_scales or [base, 2 * base, 3 * base]))
    return tower


@VISION_TOWERS.register("siglip")
def siglip(select_layer: int = -2, use_s2: bool = False, s2_scales: list[int] | None = None, **overrides: Any) -> nn.Module:
    """SigLIP so400m-patch14-384 (27 x 1152); ``use_s2`` adds the multi-scale wrapper (scales 384, 768, 1152)."""
    return _siglip({**SIGLIP_SO400M, **overrides}, select_layer, use_s2, s2_scales)


@VISION_TOWERS.register("tiny-siglip")
def tiny_siglip(select_layer: int = -2, use_s2: bool = False, s2_scales: list[int] | None = None,
                **overrides: Any) -> nn.Module:
    """2 x 32, patch 14, 56 px -> 16 tokens x 32 per tile (also the vision tower of ``smol_omni``)."""
    return _siglip({**SIGLIP_SO400M, **TINY_VIT, "image_size": 56, **overrides}, select_layer, use_s2, s2_scales)


CLIP_L_336 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  image_size=336, patch_size=14, projection_dim=768)


def _clip(cfg: dict, select_layer: int) -> VisionTower:
    from transformers import CLIPVisionModel

    config = CLIPVisionConfig(**cfg)
    return VisionTower(CLIPVisionModel(config), image_size=config.image_size, patch_size=config.patch_size,
                       hidden=config.hidden_size, select_layer=select_layer, drop_cls=True, shuffle=False,
                       mean=CLIP_MEAN, std=CLIP_STD)


@VISION_TOWERS.register("clip")
def clip(select_layer: int = -2, **overrides: Any) -> VisionTower:
    """CLIP ViT-L/14-336 (24 x 1024) -> 576 tokens x 1024 per tile."""
    return _clip({**CLIP_L_336, **overrides}, select_layer)


@VISION_TOWERS.register("tiny-clip")
def tiny_clip(select_layer: int = -2, **overrides: Any) -> VisionTower:
    """2 x 32, patch 14, 56 px -> 16 tokens x 32 per tile."""
    return _clip({**CLIP_L_336, **TINY_VIT, "image_size": 56, **overrides}, select_layer)
