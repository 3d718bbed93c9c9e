"""The TEACHER and DATASET arguments of a build, checked before anything heavy happens.

No torch here: the command line calls :func:`check_inputs` before importing it, so that a missing
file is reported at once, and :func:`fpkit.build.build` calls it before it opens (or downloads)
a dataset, so that a build with a missing teacher touches nothing.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError, FpkitFileNotFoundError, OptionError

EMBEDDED = "embedded"
_DATASET_WORDS = ("cifar10", "cifar100", "fashionmnist")
_DATASET_PREFIXES = ("imagefolder:", "synthetic:")


def looks_like_dataset(arg: str) -> bool:
    """Whether ``arg`` is a dataset name (cifar10, imagefolder:PATH, synthetic...) rather than a file."""
    key = arg.lower()
    return key in _DATASET_WORDS or key == "synthetic" or key.startswith(_DATASET_PREFIXES)


def check_teacher(teacher: str, checkpoint_key: str | None = None) -> None:
    """Check that the TEACHER file exists (or is ``embedded``, then without ``checkpoint_key``).

    Raises:
        FpkitFileNotFoundError: no such file.  ConfigError: a folder.
        OptionError: ``checkpoint_key`` with the embedded teacher.
    """
    if teacher == EMBEDDED:
        if checkpoint_key is not None:
            raise OptionError("--checkpoint-key picks weights in a TEACHER file; the embedded teacher has one set")
    elif not Path(teacher).exists():
        raise FpkitFileNotFoundError(f"teacher file {teacher} does not exist; check the path")
    elif Path(teacher).is_dir():
        raise ConfigError(f"teacher path {teacher} is a folder; pass the checkpoint file inside it")


def check_inputs(teacher: str, dataset: str | None, checkpoint_key: str | None = None) -> str:
    """Check that TEACHER exists and that DATASET was given; return the dataset to build on.

    Only the embedded teacher defaults to the embedded sample: a user's teacher without a
    dataset is an error (it would fingerprint 500 CIFAR-10 test images without a word).

    Raises:
        ConfigError: no dataset for a user's teacher; a dataset given in the teacher's place.
        OptionError: ``checkpoint_key`` with the embedded teacher.
        FpkitFileNotFoundError: the teacher file or the image folder does not exist.
    """
    if teacher != EMBEDDED and dataset is None and looks_like_dataset(teacher) and not Path(teacher).exists():
        raise ConfigError(
            f"TEACHER is missing: {teacher!r} is a dataset, given in the teacher's place; give both, "
            f"as in `fpkit build TEACHER.pt {teacher}` (or `fpkit build embedded {teacher}` for the embedded teacher)"
        )
    check_teacher(teacher, checkpoint_key)
    if dataset is None:
        if teacher != EMBEDDED:
            raise ConfigError(
                f"no DATASET given for teacher {teacher}: name the data to fingerprint, as in "
                f"`fpkit build {teacher} cifar10` (or imagefolder:PATH, cifar100, fashionmnist); only the "
                "embedded teacher defaults to the embedded sample (give `embedded` to use its 500 CIFAR-10 test images)"
            )
        dataset = EMBEDDED
    if dataset.lower().startswith("imagefolder:"):
        folder = Path(dataset.split(":", 1)[1])
        if not folder.is_dir():
            raise FpkitFileNotFoundError(
                f"image folder {folder} does not exist; give imagefolder:PATH with "
                "PATH/<class>/<image> or PATH/<split>/<class>/<image>"
            )
    return dataset
