"""Before any work: check the output path, and create, reuse or refuse the work folder.

The rules (formats/SPEC.md section 7 and README): nothing appears under the output name until it
is complete; an interrupted build is continued only with ``--resume`` and only if its plan is the
same; ``--force`` starts over; a complete output is never silently replaced.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

from ..errors import MismatchError, OutputExistsError
from ..format.writer import check_output_folder, output_exists_error
from .plan import BuildPlan
from .workstore import PLAN_FILE, WorkStore, all_chunks_done, read_plan, work_folder

READY, ALREADY_DONE = "go", "done"


def prepare_output(out: Path, plan: BuildPlan, *, force: bool, resume: bool, say: Callable[[str], None]) -> str:
    """Check ``out`` and its work folder; create or reuse the work folder.

    Returns:
        ``ALREADY_DONE`` if ``out`` is complete and was built with ``plan`` (``--resume``),
        else ``READY``.

    Raises:
        FpkitFileNotFoundError, FpkitPermissionError: the output folder is missing or read-only.
        OutputExistsError: ``out`` or an interrupted build of it exists and neither flag says what to do.
        MismatchError: ``--resume`` of an interrupted build with other settings.
    """
    work = work_folder(out)
    check_output_folder(out)
    for stale in out.parent.glob(f".{out.name}.writing-*"):
        stale.unlink(missing_ok=True)
    if out.exists() and not force:
        if resume:
            _check_complete_output(out, plan)
            if work.exists():
                _leftover_work(out, work, plan)
            shutil.rmtree(work.parent / (work.name + ".new"), ignore_errors=True)
            say(f"[fpkit build] {out} is already complete; nothing to resume")
            return ALREADY_DONE
        raise output_exists_error(out)
    if work.exists():
        if force:
            shutil.rmtree(work)
        elif resume:
            if _readable(work):
                old = read_plan(work)
                changes = (
                    plan.changes_from(old)
                    if old is not None
                    else ["the work folder's settings could not be compared (made by another fpkit version?)"]
                )
                if changes:
                    raise MismatchError(
                        f"the interrupted build in {work} used other settings: {'; '.join(changes)}; "
                        "repeat its exact options, or pass --force to start over"
                    )
                return READY
            say(f"[fpkit build] the interrupted build in {work} is unreadable; starting over")
            shutil.rmtree(work)
        else:
            raise OutputExistsError(
                f"an interrupted build of {out} exists in {work}; pass --resume to continue it or --force to start over"
            )
    WorkStore.create(work, plan)
    return READY


def _readable(work: Path) -> bool:
    """The work folder's plan file parses as JSON (whatever its version)."""
    try:
        json.loads((work / PLAN_FILE).read_text())
    except (OSError, ValueError):
        return False
    return True


def _check_complete_output(out: Path, plan: BuildPlan) -> None:
    """--resume found a complete output: it must be what ``plan`` would build."""
    from ..format import open_fingerprints

    m = open_fingerprints(out, verify=False, load_views=False).metadata
    got = {
        "teacher": m.teacher.weights_sha256,
        "dataset": [m.dataset.name, m.dataset.split, m.dataset.num_samples],
        "layers": [[lay.name, lay.pooling, lay.d, lay.projection.r, lay.projection.seed] for lay in m.layers],
        "views": [m.views.count, m.views.per_sample, m.views.seed, m.views.replay],
    }
    redacted = any(lay[4] is None for lay in got["layers"])
    want = {
        "teacher": plan.teacher_sha256,
        "dataset": [plan.dataset["name"], plan.dataset["split"], plan.num_samples],
        "layers": [[lay.name, lay.pooling, lay.d, lay.r, None if redacted else lay.seed] for lay in plan.layers],
        "views": [plan.views.count, plan.views.per_sample, plan.views.seed, plan.views.replay],
    }
    diff = [key for key in want if want[key] != got[key]]
    if diff:
        raise OutputExistsError(
            f"{out} exists but was built with other settings ({', '.join(diff)}); "
            "pass --force to rebuild it or choose another -o path"
        )


def _leftover_work(out: Path, work: Path, plan: BuildPlan) -> None:
    """A work folder next to a complete output: remove it if it is the finished work of ``plan``
    (a build killed between renaming the file into place and removing its work folder); refuse
    if it is an unfinished or different build, which --resume must not silently ignore."""
    old = read_plan(work)
    if old is not None and old.same_work(plan) and all_chunks_done(work, plan.num_chunks):
        shutil.rmtree(work, ignore_errors=True)
        return
    raise OutputExistsError(
        f"{out} exists and an unfinished build of it is in {work}; pass --force to "
        f"rebuild from scratch, or delete {out} and rerun with --resume to continue that build"
    )
