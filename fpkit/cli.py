"""The ``fpkit`` command line: a thin layer over the library.

Exit codes: 0 success, 1 an error fpkit explains on stderr (one line, no traceback), 2 a usage
error (click), 130 interrupted.  Results go to stdout (``--json`` prints JSON only there);
progress and logs go to stderr.
"""

from __future__ import annotations

import json
import signal
import sys

import click

from ._text import printable
from ._version import __version__
from .errors import FpkitError, OptionError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as e:
            msg = str(e) if isinstance(e, FpkitError) else "interrupted"
            _say_error(f"fpkit: {msg}")
            ctx.exit(130)
        except FpkitError as e:
            _say_error(f"fpkit: error: {e}")
            ctx.exit(1)
        except OSError as e:
            _say_error(f"fpkit: error: {e}")
            ctx.exit(1)


def _say_error(line: str) -> None:
    """Print one line on stderr, escaped: messages quote names read from files, which must not
    reach the terminal as control or escape sequences, nor split the line (fpkit/_text.py)."""
    click.echo(printable(line), err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fpkit")
def main() -> None:
    """fpkit: run a teacher once, share its fingerprint file, train students from it."""


class _Views(click.ParamType):
    name = "K|all"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "all":
            return value
        try:
            k = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a positive integer nor 'all'", param, ctx)
        if k < 1:
            self.fail(f"{value!r} must be >= 1", param, ctx)
        return k


def _normalize(ctx, param, value: str | None) -> str | None:
    from .normalization import parse_normalize  # no torch: checked before anything is loaded

    if value is not None:
        try:
            parse_normalize(value)
        except OptionError as e:
            raise click.BadParameter(str(e)) from e
    return value


_CHECKPOINT_KEY = (
    "Which weights of a TEACHER checkpoint to load: an entry of the checkpoint dict, optionally followed by a key "
    "prefix inside it (state_dict: timm's plain weights instead of its EMA ones; state_dict.teacher: the teacher of a "
    "Lightning distillation checkpoint). Default: EMA weights if present, else model/state_dict/model_state_dict/net, "
    "with a trainer's key prefix (module., _orig_mod., model.) stripped when that makes the keys fit."
)


def _tables(ctx, param, value: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in value.split(",") if p.strip())
    bad = [p for p in parts if p not in ("sample", "class")]
    if bad or not parts:
        raise click.BadParameter(f"{value!r}: give a comma list of sample,class")
    return parts


def _pair(ctx, param, value: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give two numbers LO,HI, e.g. 0.08,1.0") from None
    return lo, hi


@main.command(short_help="Run TEACHER once over DATASET and write its fingerprint file.")
@click.argument("teacher", default="embedded")
@click.argument("dataset", default=None, required=False)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output .h5 (default: TEACHER-DATASET-SPLIT.h5).")
@click.option("--force", is_flag=True, help="Replace an existing output (and discard an interrupted build).")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an interrupted build from its last finished chunk (or, if the output is complete, "
    "remove a leftover work folder).",
)
@click.option(
    "--root",
    default="data",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder holding (or to receive) torchvision datasets.",
)
@click.option(
    "--split",
    type=click.Choice(["train", "test"]),
    default=None,
    help="Dataset split to fingerprint (default: train; test for the embedded sample). For imagefolder:PATH, "
    "PATH/SPLIT (default PATH/train if it exists, else PATH itself; imagefolder:PATH/test is split test).",
)
@click.option("--no-download", is_flag=True, help="Never try to download a missing dataset.")
@click.option(
    "--normalize",
    default=None,
    callback=_normalize,
    help="Input normalisation: cifar10, cifar100, fashionmnist, imagenet, none or 'm1,m2,m3:s1,s2,s3' "
    "(default: the mean/std the TEACHER checkpoint records, else the dataset's own; an image folder "
    "without either gets ImageNet's, with a warning). A value that differs from the checkpoint's is warned about.",
)
@click.option(
    "--arch",
    default=None,
    help="Architecture of a weights-only TEACHER: resnet56, torchvision:resnet18, "
    "package.module:callable (default: inferred for CIFAR ResNets).",
)
@click.option("--num-classes", type=int, default=None, help="Classifier width, if it cannot be read from the weights.")
@click.option("--checkpoint-key", default=None, metavar="ENTRY[.PREFIX]", help=_CHECKPOINT_KEY)
@click.option(
    "--layer",
    "layers",
    multiple=True,
    help="Module name to tap (repeatable; default: the feature that "
    "feeds the classifier, layer3 for CIFAR ResNets). List them with `fpkit layers TEACHER`.",
)
@click.option("--r", type=int, default=128, show_default=True, help="Projection width r.")
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Projection seed; layer i uses seed + i (default 0; with --redact a secret random seed).",
)
@click.option(
    "--views",
    type=_Views(),
    default=8,
    show_default=True,
    help="Augmented views per image: K seeded random views, or 'all' for the exact expectation.",
)
@click.option("--view-seed", type=int, default=None, help="Seed of the random views (default 0).")
@click.option("--padding", type=int, default=4, show_default=True, help="Zero padding of the random crop, pixels.")
@click.option("--no-flip", is_flag=True, help="Views without horizontal flips.")
@click.option(
    "--policy",
    type=click.Choice(["pad-crop", "resized-crop", "center"]),
    default="pad-crop",
    show_default=True,
    help="Views: pad-crop (CIFAR: zero padding, crop, flip; images of one size), resized-crop (ImageNet: "
    "RandomResizedCrop + flip, images of any size) or center (Resize + CenterCrop, one view).",
)
@click.option("--image-size", type=int, default=224, show_default=True, help="resized-crop, center: view size.")
@click.option("--resize", type=int, default=None, help="center: shorter side before the crop (default size*8/7).")
@click.option("--scale", default="0.08,1.0", show_default=True, callback=_pair, help="resized-crop: area range.")
@click.option("--ratio", default="0.75,1.3333333333333333", callback=_pair, help="resized-crop: aspect range.")
@click.option("--replay", is_flag=True, help="Also store every view's fingerprint and crop/flip for exact replay.")
@click.option(
    "--logits",
    default="none",
    show_default=True,
    metavar="none|mean|full|topk:K|sample:K[:T]",
    help="Also store the teacher's logits (format 1.3), from the same forward: mean over the views per "
    "sample, or per view (needs --replay): every logit, the top K, or K classes drawn from softmax(z/T).",
)
@click.option(
    "--tables",
    default="sample,class",
    show_default=True,
    callback=_tables,
    help="Which tables to store, comma-separated: sample, class, or sample,class for both.",
)
@click.option(
    "--dtype",
    type=click.Choice(["float16", "float32", "int8"]),
    default="float16",
    show_default=True,
    help="Storage dtype of the tables (int8 keeps one float32 scale per row).",
)
@click.option(
    "--codec",
    type=click.Choice(["none", "gzip", "zstd"]),
    default="none",
    show_default=True,
    help="Compression; zstd needs hdf5plugin in tools other than fpkit.",
)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help="Views (not images) per teacher forward pass (default: 64 on a CPU, 512 on CUDA; a --resume "
    "keeps the batch the build started with): each image gives --views views, so a batch holds "
    "batch-size / views images.",
)
@click.option("--num-workers", type=int, default=0, show_default=True, help="DataLoader workers decoding images.")
@click.option(
    "--autocast",
    type=click.Choice(["bfloat16", "float16"]),
    default=None,
    help="Run the teacher under autocast (recorded in the file).",
)
@click.option(
    "--pooling",
    type=click.Choice(["auto", "avg", "token_mean", "token_cls", "none"]),
    default="auto",
    show_default=True,
    help="How a layer's output becomes a vector (auto: the architecture's, e.g. token_cls for a torchvision "
    "ViT's encoder; else avg for maps, token mean for tokens).",
)
@click.option(
    "--redact",
    is_flag=True,
    help="Leave R and its seed out of the file (relational loss only); --logits tables are not hidden by it.",
)
@click.option(
    "--trust-teacher-code",
    is_flag=True,
    help="Allow a TEACHER that runs code when loaded (pickled module, TorchScript, torch.export).",
)
@click.option(
    "--chunk-size",
    type=int,
    default=None,
    help="Samples per resumable chunk (default: min(1024, ceil(N/8)), so that an interrupted build "
    "keeps its finished chunks even on a small dataset; --resume keeps the size the build started with).",
)
@click.option(
    "--samples",
    default=None,
    metavar="START:STOP",
    help="Fingerprint only samples START..STOP-1 of the split (e.g. 0:5000, :5000, 100:); recorded in "
    "the file, so that FingerprintDataset pairs it with the whole split or with exactly those samples.",
)
@click.option("--limit", type=int, default=None, metavar="N", help="The first N samples only: --samples 0:N.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def build(no_flip, no_download, quiet, as_json, **options):
    """Run TEACHER once over DATASET and write its fingerprint file.

    TEACHER: a state_dict / checkpoint (.pt, .pth) or .safetensors file, or 'embedded' (a small
    CIFAR-10 ResNet-8 shipped with fpkit; the default).  DATASET: cifar10, cifar100, fashionmnist,
    imagefolder:PATH, synthetic[:N[xC]] or 'embedded' (500 CIFAR-10 test images shipped with fpkit).
    DATASET is required with a TEACHER file; only the embedded teacher defaults to the embedded sample.
    """
    from .inputs import check_inputs

    try:
        check_inputs(options["teacher"], options["dataset"], options["checkpoint_key"])  # before torch is imported
        from .build import BuildOptions
        from .build import build as run_build

        signal.signal(signal.SIGTERM, _raise_interrupt)
        # every other option has the name of its BuildOptions field
        opts = BuildOptions(**options, flip=not no_flip, download=not no_download)
        res = run_build(opts, quiet=quiet)
    except OptionError as e:  # a bad option value is a usage error, as click's own (exit 2)
        raise click.UsageError(str(e)) from e
    if as_json:
        d = {k: (str(v) if k == "path" else v) for k, v in res.__dict__.items()}
        click.echo(json.dumps(d, indent=2))


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


@main.command(short_help="Summarise a fingerprint FILE: provenance, teacher, dataset, normalisation, layers, sizes.")
@click.argument("file", type=click.Path(dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout (nothing else there).")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write a picture in the format its suffix names (.png, .jpg, .svg, .pdf, ...): per-class "
    "cosine similarity (colours scaled to the file's range) and samples' cosine to their class.",
)
@click.option("--layer", default=None, help="Layer to plot (default: the first).")
def inspect(file, as_json, plot, layer):
    """Summarise a fingerprint FILE: provenance, teacher, dataset, layers, tables, sizes, fidelity."""
    from .format import open_fingerprints
    from .summary import format_summary, summarize

    if plot:  # check the picture's name (format, folder) before any work or output
        from .plot import plot_file, plot_format

        plot_format(plot)
    fp = open_fingerprints(file)
    if plot:
        fp.layer(layer)
    s = summarize(fp)
    click.echo(json.dumps(s, indent=2) if as_json else format_summary(s))
    if plot:
        plot_file(fp, plot, layer)
        click.echo(f"fpkit: wrote {plot}", err=True)


@main.command(short_help="Check FILE completely; exit 0 only if it is intact.")
@click.argument("file", type=click.Path(dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help='Print {"ok": ..., "problems": [...]} on stdout.')
def verify(file, as_json):
    """Check FILE completely (completion, schema, checksums, digests); exit 0 only if intact."""
    from .format import verify_fingerprints

    problems = verify_fingerprints(file)
    if as_json:
        click.echo(json.dumps({"path": file, "ok": not problems, "problems": problems}, indent=2))
    elif not problems:
        click.echo(printable(f"{file}: OK"))
    for p in problems:
        _say_error(f"fpkit: error: {p}")
    sys.exit(1 if problems else 0)


@main.command(short_help="Report what FILE reveals about the teacher's features.")
@click.argument("file", type=click.Path(dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="Print the audit as JSON on stdout.")
def audit(file, as_json):
    """Report what FILE reveals: per layer and table, d, r, whether R is stored or derivable, and how
    much of the teacher's features can be reconstructed from the fingerprints."""
    from .audit import audit_file, format_audit

    report = audit_file(file)
    click.echo(json.dumps(report, indent=2) if as_json else format_audit(report))


@main.command(short_help="List the module names of TEACHER that --layer can tap.")
@click.argument("teacher")
@click.option("--arch", default=None, help="Architecture of a weights-only TEACHER.")
@click.option("--num-classes", type=int, default=None, help="Classifier width, if it cannot be read from the weights.")
@click.option("--in-channels", type=int, default=3, show_default=True, help="Input channels (1 for Fashion-MNIST).")
@click.option("--trust-teacher-code", is_flag=True, help="Allow a TEACHER that runs code when loaded.")
@click.option("--checkpoint-key", default=None, metavar="ENTRY[.PREFIX]", help=_CHECKPOINT_KEY)
def layers(teacher, arch, num_classes, in_channels, trust_teacher_code, checkpoint_key):
    """List the module names of TEACHER that --layer can tap (the default is marked *, with its pooling where the
    architecture table names one).

    The architecture loaded (recognised from the weights, or --arch) and any notes on how the
    weights were read go to stderr; the list goes to stdout.
    """
    from .inputs import check_teacher

    try:
        check_teacher(teacher, checkpoint_key)  # before torch is imported
    except OptionError as e:
        raise click.UsageError(str(e)) from e
    from .errors import ConfigError
    from .features import default_layer, list_layers, tap_refusal
    from .teachers import load_embedded_teacher, load_teacher

    t = (
        load_embedded_teacher()
        if teacher == "embedded"
        else load_teacher(
            teacher,
            arch=arch,
            num_classes=num_classes,
            in_channels=in_channels,
            trust_code=trust_teacher_code,
            checkpoint_key=checkpoint_key,
        )
    )
    refusal = tap_refusal(t.model)
    if refusal:
        raise ConfigError(refusal)
    for note in t.notes:
        _say_error(f"fpkit: note: {note}")
    if arch:
        how = "as --arch names"
    elif t.source_kind in ("state_dict", "safetensors", "embedded"):
        how = "recognised from the checkpoint"
    else:
        how = f"a {t.source_kind.replace('_', ' ')}"
    _say_error(
        f"fpkit: teacher architecture {t.arch} ({how}), "
        f"{t.num_classes if t.num_classes is not None else '?'} classes, {t.num_params:,} parameters"
    )
    try:
        default = t.default_layer or default_layer(t.model)
    except ConfigError:  # no classifier to find: list the names, none marked, and say so
        default = None
        click.echo("fpkit: no default layer could be guessed (no final Linear); pass --layer to build", err=True)
    for name, kind in list_layers(t.model):
        mark = f"  (default, {t.default_pooling} pooling)" if name == default and t.default_pooling else ""
        click.echo(printable(f"{'*' if name == default else ' '} {name}  {kind}{mark}"))


if __name__ == "__main__":  # pragma: no cover
    main()
