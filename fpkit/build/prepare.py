"""Before any work: check the output path, and create, reuse or refuse the work folder.

The rules (formats/SPEC.md section 7 and README): nothing appears under the output name until it
is complete; an interrupted build is continued only with ``--resume`` and only if its plan is the
same; ``--force`` starts over; a complete output is never silently replaced.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from ..errors import MismatchError, OutputExistsError
from ..format.reader import verify_fingerprints
from ..format.writer import check_output_folder, output_exists_error
from .plan import BuildPlan
from .workstore import WorkStore, plan_from_json, read_plan_json, work_folder

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
                say(f"[fpkit build] removed the leftover work folder {work} of the finished build")
            shutil.rmtree(work.parent / (work.name + ".new"), ignore_errors=True)
            say(f"[fpkit build] {out} is already complete; nothing to resume")
            return ALREADY_DONE
        if work.exists():
            raise _exists_with_leftover(out, work)
        raise output_exists_error(out)
    if work.exists():
        if force:
            shutil.rmtree(work)
        elif resume:
            raw = read_plan_json(work)
            if raw is not None:
                old = plan_from_json(raw)
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
    """A work folder next to a complete output that ``plan`` would build: remove it, or refuse.

    The writer renames only a complete file into place and the work folder is removed only after
    that rename, so a build killed in between leaves the finished file and its work folder, whole
    or half-removed (its plan file or chunk markers already gone).  Such a folder is finished
    work: removed when the output verifies.  A folder whose readable plan is another build's (an
    unfinished ``--force`` rebuild with other settings) is refused, not silently dropped; one of
    the same plan is dropped whatever its markers (rebuilding it would write this same file)."""
    raw = read_plan_json(work)
    old = plan_from_json(raw)
    other = raw is not None and (old is None or not old.same_work(plan))
    if not other:
        problems = verify_fingerprints(out)
        if not problems:
            shutil.rmtree(work, ignore_errors=True)
            return
        raise OutputExistsError(
            f"{out} exists but does not verify ({problems[0]}); a work folder {work} is next to it; "
            "pass --force to rebuild from scratch"
        )
    raise OutputExistsError(
        f"{out} exists and an unfinished build of it with other settings is in {work}; pass --force to "
        f"rebuild from scratch, or delete {out} and rerun with --resume and that build's options to continue it"
    )


def _exists_with_leftover(out: Path, work: Path) -> OutputExistsError:
    """A plain rebuild of an existing output with a work folder next to it: say which case it is."""
    if not verify_fingerprints(out):
        return OutputExistsError(
            f"{out} exists and is complete (it verifies); the work folder {work} next to it is left over "
            "from a build stopped during its clean-up and can be deleted (--resume with the same options "
            "removes it); pass --force to rebuild"
        )
    return OutputExistsError(
        f"{out} exists but does not verify, and an interrupted build of it is in {work}; "
        f"pass --force to rebuild from scratch"
    )
