"""The student side of teacher-once distillation: project tapped features into fingerprints."""

from __future__ import annotations

import torch
from torch import nn

from fpkit.errors import ConfigError, MismatchError
from fpkit.features import POOLINGS, pool_features, project_features


def _check_R(R: torch.Tensor) -> None:
    fix = "load R from the fingerprint file"
    if not isinstance(R, torch.Tensor):
        raise ConfigError(f"R must be a torch.Tensor [d, r], got {type(R).__name__}; {fix}")
    if R.ndim != 2 or R.shape[0] < 1 or R.shape[1] < 1:
        raise ConfigError(f"R must be a non-empty 2-D [d, r] matrix, got shape {list(R.shape)}; {fix}")
    if not R.is_floating_point():
        raise ConfigError(f"R must be a floating-point matrix, got dtype {R.dtype}; {fix}")
    if not bool(torch.isfinite(R).all()):
        raise ConfigError(f"R holds NaN or infinite values; {fix} (and check its digest)")


class FingerprintHead(nn.Module):
    """phi_S = normalize(pool(features) [@ adapter]) @ R.

    ``R`` (``[d, r]``) is a frozen float32 buffer: it is saved in ``state_dict`` and follows
    ``.to(device)``, but it is not a parameter and never receives a gradient.

    If ``in_dim`` is given and differs from ``d``, a learnable ``nn.Linear(in_dim, d,
    bias=False)`` adapter maps the pooled student feature to the teacher's width before
    normalisation.  It is trained together with the student (include ``head.parameters()`` in
    the optimiser) and initialised (semi-)orthogonally, so it starts out norm-preserving.
    With ``in_dim`` None or equal to ``d`` there is no adapter and the head has no parameters.

    Normalisation and projection are done by :func:`fpkit.features.project_features`, exactly as
    on the teacher side, so identical features give bitwise-identical fingerprints.
    """

    def __init__(self, R: torch.Tensor, in_dim: int | None = None, pooling: str = "auto"):
        """
        Args:
            R: ``[d, r]`` projection matrix of the fingerprint file (stored as float32).
            in_dim: width of the student's pooled feature; None means ``d``.
            pooling: how to pool the tapped output (see :func:`fpkit.features.pool_features`);
                use the pooling recorded in the fingerprint file.

        Raises:
            ConfigError: ``R`` not a finite 2-D float matrix, ``in_dim`` < 1, unknown pooling.
        """
        super().__init__()
        _check_R(R)
        if pooling != "auto" and pooling not in POOLINGS:
            raise ConfigError(f"unknown pooling {pooling!r}; use one of: auto, {', '.join(POOLINGS)}")
        d, r = R.shape
        if in_dim is not None and (isinstance(in_dim, bool) or not isinstance(in_dim, int) or in_dim < 1):
            raise ConfigError(
                f"in_dim must be a positive int or None, got {in_dim!r}; "
                "pass the channel count of the student's tapped layer"
            )
        self.d, self.r = int(d), int(r)
        self.in_dim = self.d if in_dim is None else int(in_dim)
        self.pooling = pooling
        self.register_buffer("R", R.detach().to(torch.float32).clone())
        self.adapter: nn.Linear | None = None
        if self.in_dim != self.d:
            self.adapter = nn.Linear(self.in_dim, self.d, bias=False)
            nn.init.orthogonal_(self.adapter.weight)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Fingerprint of a tapped student output.

        Args:
            features: raw layer output ``[B, C, H, W]``, ``[B, T, D]`` or ``[B, D]`` whose
                pooled width is ``in_dim``.

        Returns:
            float32 ``[B, r]``.

        Raises:
            ConfigError: the pooling does not fit the rank of ``features``.
            MismatchError: the pooled width is not ``in_dim``.
        """
        pooled = pool_features(features, self.pooling)
        if pooled.shape[1] != self.in_dim:
            raise MismatchError(
                f"student features pool to shape {list(pooled.shape)} but the head expects width "
                f"{self.in_dim} (R is {self.d}x{self.r}); pass in_dim={pooled.shape[1]} to add an "
                "adapter, or tap the layer the head was built for"
            )
        if self.adapter is not None:
            pooled = self.adapter(pooled)
        return project_features(pooled, self.R)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, d={self.d}, r={self.r}, pooling={self.pooling!r}"


__all__ = ["FingerprintHead"]
