"""Load a teacher network safely, and identify it by a digest of its weights.

The safe path is *architecture by name + weights*: a ``state_dict`` read with
``torch.load(weights_only=True)`` or from a ``.safetensors`` file, loaded strictly into a model
built from a known name (a CIFAR ResNet, a torchvision model) or from ``package.module:callable``
the user names.  Files that can only be loaded by running code from them (a pickled whole
``nn.Module``, a TorchScript archive, a ``torch.export`` archive) are refused with
:class:`~fpkit.errors.UntrustedCodeError` unless ``trust_code=True``; the refusal happens before
anything from the file is unpickled or executed.

Modules: :mod:`~fpkit.teachers.load` (``load_teacher``, the :class:`Teacher` it returns),
:mod:`~fpkit.teachers.sniff` (a file's kind from its bytes), :mod:`~fpkit.teachers.read` (reading
behind the trust gate), :mod:`~fpkit.teachers.checkpoint` (the weights in other trainers' checkpoint
layouts: Lightning, timm's EMA copies, DataParallel/DDP and torch.compile key prefixes; strict
loading), :mod:`~fpkit.teachers.architectures` (models by name), :mod:`~fpkit.teachers.export`
(torch.export programs), :mod:`~fpkit.teachers.digest` (the weights digest).
"""

from __future__ import annotations

from fpkit.teachers.architectures import resolve_arch
from fpkit.teachers.digest import weights_sha256
from fpkit.teachers.load import SOURCE_KINDS, Teacher, load_embedded_teacher, load_teacher

__all__ = [
    "SOURCE_KINDS",
    "Teacher",
    "load_embedded_teacher",
    "load_teacher",
    "resolve_arch",
    "weights_sha256",
]
