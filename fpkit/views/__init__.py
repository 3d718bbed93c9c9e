"""View policies (formats/SPEC.md, section 5): how a build makes K augmented views of an image.

* ``pad_crop_flip`` (:class:`fpkit.augment.ViewPolicy`): CIFAR-style zero padding, crop, flip;
  images of one size; view parameters (top, left, flip), int16.
* ``resized_crop_flip`` (:class:`.resized_crop.ResizedCropPolicy`, format 1.2): torchvision's
  RandomResizedCrop + RandomHorizontalFlip; any image sizes; (top, left, height, width, flip).
* ``center`` (:class:`.center.CenterPolicy`, format 1.2): Resize + CenterCrop, one view;
  (top, left, resized height, resized width, 0).

Every policy has ``name``, ``to_dict()``, ``views_for(indices, count, seed, sizes)`` and is cut
by :func:`cut_views`.  CLI names: ``pad-crop``, ``resized-crop``, ``center``.
"""

from __future__ import annotations

from typing import Any, Mapping, Union

import numpy as np
import torch

from ..augment import ViewPolicy, make_views
from ..errors import ConfigError
from .center import CenterPolicy, cut_center
from .resize import RESIZE_OP, as_images, crop_resize, resize_uint8
from .resized_crop import ResizedCropPolicy, cut_resized

Policy = Union[ViewPolicy, ResizedCropPolicy, CenterPolicy]
CLI_NAMES = {"pad-crop": "pad_crop_flip", "resized-crop": "resized_crop_flip", "center": "center"}


def policy_from_dict(d: Mapping[str, Any]) -> Policy:
    """The policy a file's ``views.policy`` object (or a plan's) describes."""
    name = d["name"]
    if name == "pad_crop_flip":
        return ViewPolicy(int(d["padding"]), bool(d["flip"]))
    if name == "resized_crop_flip":
        return ResizedCropPolicy(int(d["size"]), tuple(d["scale"]), tuple(d["ratio"]), bool(d["flip"]))
    if name == "center":
        return CenterPolicy(int(d["size"]), int(d["resize"]))
    raise ConfigError(f"unknown view policy {name!r}; this fpkit knows {', '.join(CLI_NAMES.values())}")


def image_sizes(images) -> np.ndarray:
    """int64 [B, 2] (H, W) of a uint8 batch [B, C, H, W] or a list of [C, H, W] images."""
    return np.asarray([tuple(im.shape[-2:]) for im in as_images(images)], dtype=np.int64).reshape(-1, 2)


def views_for(policy: Policy, indices: np.ndarray, count: int | str, seed: int, images) -> np.ndarray:
    """The view parameters [B, K, 3] (pad-crop, int16) or [B, K, 5] (int32) of these samples."""
    if isinstance(policy, ViewPolicy):
        return policy.views_for(indices, count, seed)
    return policy.views_for(indices, count, seed, image_sizes(images))


def cut_views(
    policy: Policy, images, params: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool = False
) -> torch.Tensor:
    """float32 [B*K, C, S, S]: the views ``params`` of ``images``, scaled and normalised."""
    if isinstance(policy, ViewPolicy):
        if not isinstance(images, torch.Tensor):
            images = torch.stack(list(images))
        return make_views(images, params, policy.padding, mean, std, channels_last)
    cut = cut_center if isinstance(policy, CenterPolicy) else cut_resized
    return cut(images, params, policy.size, mean, std, channels_last)


def replay_tensor(policy: Policy, image: torch.Tensor, params) -> torch.Tensor:
    """One recorded view of a uint8 [C, H, W] image as uint8 [C, S, S] (resized-crop, center)."""
    p = [int(v) for v in params]
    if isinstance(policy, CenterPolicy):
        top, left, rh, rw, _ = p
        return resize_uint8(image, rh, rw)[:, top : top + policy.size, left : left + policy.size]
    top, left, h, w, flip = p
    out = crop_resize(image, top, left, h, w, policy.size)
    return out.flip(-1) if flip else out


__all__ = [
    "CLI_NAMES",
    "CenterPolicy",
    "Policy",
    "RESIZE_OP",
    "ResizedCropPolicy",
    "ViewPolicy",
    "cut_views",
    "image_sizes",
    "policy_from_dict",
    "replay_tensor",
    "resize_uint8",
    "views_for",
]
