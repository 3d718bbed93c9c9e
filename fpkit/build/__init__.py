"""``fpkit build``: run a teacher once over a dataset split and write its fingerprint file.

The steps live in one module each (see :mod:`fpkit.build.run` for the map); this package's
public surface is :func:`build` with :class:`BuildOptions` in and :class:`BuildResult` out.
"""

from .options import BuildOptions, check_options, default_output, option_warnings
from .plan import BuildPlan, LayerPlan, StoragePlan, ViewPlan
from .run import BuildInterrupted, BuildResult, build

__all__ = [
    "BuildInterrupted",
    "BuildOptions",
    "BuildPlan",
    "BuildResult",
    "LayerPlan",
    "StoragePlan",
    "ViewPlan",
    "build",
    "check_options",
    "default_output",
    "option_warnings",
]
