"""Console entry points. Each is a thin layer over the library; user mistakes exit with one line, no traceback.

Arguments are checked before any work starts (ranges, devices, output paths), so a mistake costs nothing and
leaves nothing behind.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import functools
import itertools
import logging
import math
import os
import re
import signal
import sys
import threading
import unicodedata
from pathlib import Path


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one ``error: ...`` line (no usage block) and exit status 2, naming the option
    meant where an unknown one is near one; options are spelled in full (no prefixes: ``mfvideo-sample --frames 24``
    would otherwise be ``--frames-per-window 24``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        """An unknown option is named before anything else (argparse would first say that a required one is
        missing, where the unknown one is usually that one misspelt)."""
        words = list(sys.argv[1:] if args is None else args)
        words = words[: words.index("--")] if "--" in words else words
        unknown = [w for w in words if w.startswith("--") and w.split("=")[0] not in self._long_options()]
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}")
        return super().parse_known_args(args, namespace)

    def _long_options(self) -> list[str]:
        return [o for action in self._actions for o in action.option_strings if o.startswith("--")]

    def error(self, message):
        unknown = re.match(r"unrecognized arguments: (.*)", message)
        known = self._long_options()
        for name in [w.split("=")[0] for w in unknown.group(1).split() if w.startswith("--")] if unknown else []:
            meant = difflib.get_close_matches(name, known, n=1, cutoff=0.6) or [o for o in known if o.startswith(name)]
            if meant:
                message += f" (did you mean {meant[0]}?)"
                break
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        sys.exit(2)


CHECKPOINT_HELP = ("pipeline or checkpoint folder, or a training run's (its newest checkpoint); default: the bundled "
                   "moving-digits model")

def _whole_at_least(low: int):
    """An argparse type: a whole number >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def _finite_above(low: float, strict: bool):
    """An argparse type: a finite number > ``low`` (``strict``) or >= ``low``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (math.isfinite(value) and (value > low if strict else value >= low)):
            raise argparse.ArgumentTypeError(f"must be a finite number {'>' if strict else '>='} {low:g}, got {text}")
        return value

    return parse


positive_int, non_negative_int = _whole_at_least(1), _whole_at_least(0)
positive_float, non_negative_float = _finite_above(0, strict=True), _finite_above(0, strict=False)


def add_motion_copy_args(p: argparse.ArgumentParser) -> None:
    """``--motion-copy R`` and ``--motion-copy-tol T`` (``MFVideoPipeline.extend`` / ``generate``; default: the
    model's ``sample.motion_copy``)."""
    p.add_argument("--motion-copy", type=non_negative_int, default=None, metavar="R",
                   help="every new frame that the frame before it, moved by up to R whole latent pixels, explains "
                        "(RMS difference <= --motion-copy-tol) becomes that moved frame, what left the frame "
                        "remembered: content kept sharp where the network only moved it; a clip made from noise is "
                        "copied outwards from the frame its other frames are best explained by (default: the model's "
                        "sample.motion_copy, 4 for the bundled model; 0: the network's own frames)")
    p.add_argument("--motion-copy-tol", type=non_negative_float, default=None, metavar="T",
                   help="latent RMS difference up to which a moved frame explains a new one (default: the "
                        "pipeline's, 0.4)")


def motion_copy_note(pipe, args) -> str:
    """What a command tells of a copy it made by the model's default (``--motion-copy`` not given,
    ``sample.motion_copy`` > 0): the output is partly copied frames, and how to have the network's own."""
    if args.motion_copy is not None or not pipe.cfg.sample.motion_copy:
        return ""
    return (f"; motion copy at radius {pipe.cfg.sample.motion_copy}, the model's default (--motion-copy 0: the "
            "network's own frames)")


def add_class_args(p: argparse.ArgumentParser, given: str) -> None:
    """``--class`` / ``--infer-class`` of commands that continue given frames (``given`` names them: ``mfvideo-extend``,
    ``mfvideo-interpolate``); ``check_class_args`` and ``class_labels_of`` read them."""
    p.add_argument("--class", dest="class_id", default=None,
                   help=f"class id or name (the model's id2label) of the clip (default: none; the model's context "
                        f"reader, if it has one, reads it off {given})")
    p.add_argument("--infer-class", action="store_true",
                   help=f"read the class off {given} with the model itself, then condition on it")


def add_sampler_args(p: argparse.ArgumentParser) -> None:
    """``--steps``, ``--sampler`` and ``--temperature`` of the sampling commands."""
    p.add_argument("--steps", type=positive_int, default=None,
                   help="network evaluations per window (default: 1 for MeanFlow, 2 for --sampler consistency, 50 "
                        "for euler)")
    p.add_argument("--sampler", choices=["meanflow", "euler", "consistency"], default=None,
                   help="default: euler for a model trained as flow matching (ratio_r_neq_t=0), else meanflow; "
                        "consistency: the one-step jump, then per further step noised back and jumped again")
    p.add_argument("--temperature", type=positive_float, default=None, metavar="T",
                   help="the noise's scale, a share of the prior's, for every window (default: the model's "
                        "sample.one_step_temperature for windows of one call, 1 for more; below 1 the one-step jump "
                        "draws fewer broken frames, with less variety)")


def check_class_args(args) -> None:
    """``--class`` and ``--infer-class`` exclude each other (checked before the model loads)."""
    if args.infer_class and args.class_id is not None:
        raise ValueError("give --class or --infer-class, not both")


def class_labels_of(pipe, args) -> list[int] | None:
    """``--class`` as the pipeline's ``class_labels`` (a name -> its id; unknown: one line, nothing written)."""
    return None if args.class_id is None else [int(pipe.check_labels(args.class_id)[0])]


def device(text: str) -> str:
    """A torch device that exists on this machine."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown device {text!r} (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text}: MPS is not available on this machine")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"unsupported device {text!r} (use cpu, cuda or cuda:N)")
    return text


DTYPES = ("float32", "bfloat16")


def weights_choice(text: str) -> str:
    """An argparse type: which weights of a training checkpoint (``ema``, ``ema_<decay>``, ``model``)."""
    import re

    if text in ("ema", "model") or re.fullmatch(r"ema_\d*\.?\d+(e-?\d+)?", text):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: expected ema, ema_<decay> (e.g. ema_0.9999) or model")


WEIGHTS_HELP = ("a training checkpoint's weights: its run's first EMA (default), another by its decay (ema_0.9999), "
                "or the raw ones (model)")


def add_device_args(p: argparse.ArgumentParser) -> None:
    """``--device``, ``--dtype`` and ``--weights`` of the sampling commands (``MFVideoPipeline.from_pretrained``)."""
    p.add_argument("--device", type=device, default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="the weights' dtype: bfloat16 halves a GPU's memory and time for frames within bf16 rounding "
                        "of float32's (default: float32)")
    p.add_argument("--weights", type=weights_choice, default="ema", metavar="ema|ema_<decay>|model", help=WEIGHTS_HELP)


def load_pipeline(args):
    """The pipeline of ``--checkpoint`` (default: the bundled model) on ``--device`` in ``--dtype``."""
    import torch

    from ..pipeline import MFVideoPipeline

    return MFVideoPipeline.from_pretrained(args.checkpoint, device=args.device, dtype=getattr(torch, args.dtype),
                                           weights=args.weights)


def _writable_parent(path: Path, what: str) -> None:
    """The nearest existing ancestor of ``path`` must be a writable folder (so ``path`` can be created)."""
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{what} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path}: {parent} is not writable")


def check_output_path(path: str | Path, what: str = "output") -> Path:
    """A file we may write at the end of a long run, checked before it starts: not a folder, in a writable place."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder; give a file name in it")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{what} {path} is not writable")
    _writable_parent(path, what)
    return path


def check_output_file(path: str | Path, inputs: tuple = ()) -> Path:
    """An output video we may write: not a folder, a video's suffix (``io.video_format``), in a writable place, and
    never one of the inputs."""
    from ..io import video_format

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"output {path} is a folder; give a file name such as {path / 'out.mp4'}")
    video_format(path)
    for src in inputs:
        src = Path(src)
        same = path.exists() and src.exists() and os.path.samefile(path, src)
        if same or path.resolve() == src.resolve():
            raise ValueError(f"output {path} is the input file: refusing to overwrite it")
    check_output_path(path)  # writable where it is to go
    return path


def numbered_outputs(path: str | Path, count: int, inputs: tuple = ()) -> list[Path]:
    """``--out PATH`` for ``count`` clips: PATH itself for one, else PATH's name numbered (out_0.mp4, out_1.mp4, ...),
    each checked as ``check_output_file`` checks one."""
    path = Path(path)
    paths = [path] if count == 1 else [path.with_name(f"{path.stem}_{i}{path.suffix}") for i in range(count)]
    return [check_output_file(p, inputs=inputs) for p in paths]


def outputs_named(paths: list[Path]) -> str:
    """``numbered_outputs``' files as a command's last line names them: "to out.mp4", or "each to out_0.mp4 ..
    out_2.mp4" (``wrote N frames each to ...``)."""
    return f"to {paths[0]}" if len(paths) == 1 else f"each to {paths[0]} .. {paths[-1].name}"


def check_output_dir(path: str | Path) -> Path:
    """An output folder we may create or write into."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"output folder {path} is a file")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"output folder {path} is not writable")
    else:
        _writable_parent(path, "output folder")
    return path


def progress(chunks, total: int | None, what: str):
    """Chunks (B, n, H, W, 3) passed through as they come, counted in frames per clip on a progress bar when stderr is
    a terminal (a long extension or clip on a large model takes minutes); nothing is printed otherwise."""
    if not sys.stderr.isatty():
        yield from chunks
        return
    chunks = iter(chunks)
    first = next(chunks, None)  # the bar opens with the first chunk (after any bar of the frames' making)
    if first is None:
        return
    with _frames_tqdm(total, what) as bar:
        for chunk in itertools.chain([first], chunks):
            bar.update(chunk.shape[1])
            yield chunk


def frame_bar(total: int, what: str):
    """A progress bar in frames on a terminal, fed by calls with the frames just made (it closes at ``total``); a
    no-op otherwise. For frames made before any is written (``FrameStream.on_made``)."""
    if not sys.stderr.isatty():
        return lambda n: None
    bar = _frames_tqdm(total, what)

    def update(n: int) -> None:
        bar.update(n)
        if bar.n >= total:
            bar.close()

    return update


def _frames_tqdm(total: int | None, what: str):
    """The commands' progress bar: frames per clip, cleared when done."""
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc=what, leave=False, dynamic_ncols=True)


def class_name(pipe, class_id: int) -> str:
    """``class3``, or ``class3_cat`` where the model names class 3 (``id2label``): part of a file name. Letters of
    any script stay (``éléphant``, not ``l-phant``), composed (NFC: a macOS folder name is decomposed); whatever is not
    a letter, digit, ``.``, ``_`` or ``-`` (spaces, ``/``, ``:``, ``?``) becomes ``-``."""
    name = unicodedata.normalize("NFC", pipe.labels.get(str(int(class_id)), ""))
    safe = re.sub(r"[^\w.-]+", "-", name).strip("-.")[:40]
    return f"class{int(class_id)}" + (f"_{safe}" if safe and safe != str(int(class_id)) else "")


def add_pipeline_stage_args(p: argparse.ArgumentParser) -> None:
    """SOURCE and --out of a stage that writes a new pipeline folder from a trained one (``check_pipeline_output``)."""
    p.add_argument("source", nargs="?", default=None, help="pipeline folder or training checkpoint (default: bundled)")
    p.add_argument("--out", required=True, help="output pipeline folder")


def one_process(path: str | Path) -> None:
    """The stages that write one pipeline folder are not distributed: under torchrun each process ran the whole stage
    and wrote the same folder. A launch of several (``train.dist.launched_processes``) is refused before any work."""
    from ..train.dist import launched_processes

    world = launched_processes()
    if world > 1:
        raise ValueError(f"this command runs in one process and was launched as {world} (torchrun / accelerate "
                         f"launch), each of which would write {path}: run it as a plain command")


def check_pipeline_output(path: str | Path, source: str | Path | None) -> Path:
    """An output pipeline folder written from ``source`` (None: the bundled model) by one process (``one_process``):
    new, empty, or a pipeline folder, and not the source itself."""
    one_process(path)
    out = check_output_dir(path)
    if out.is_dir() and any(out.iterdir()) and not (out / "model_index.json").is_file():
        raise ValueError(f"output folder {out} is not empty and not a pipeline folder: refusing to write into it")
    if source is not None and Path(source).resolve() == out.resolve():
        raise ValueError("--out is the source folder itself")
    return out


class Terminated(BaseException):
    """SIGTERM (``kill``, ``timeout``, a scheduler) raised as an exception, as Ctrl-C is, so that every ``with`` block
    on the way out runs: an output being written is dropped with its temporary file (the default action ended the
    process where it stood and left the hidden temporary file behind)."""


@contextlib.contextmanager
def _sigterm_unwinds():
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(num, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def user_errors(main):
    """Turn the library's user-facing errors into one line on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(argv=None):
        from ..config import ConfigError
        from ..train.checkpoint import CheckpointError
        from ..train.loop import TrainingError

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        # Bad input (configs, checkpoints, videos, arguments) raises ValueError subclasses; a full disk or a
        # permission problem is an OSError. MFVIDEO_DEBUG=1 shows the traceback.
        known = (ConfigError, CheckpointError, TrainingError, OSError, ValueError, NotImplementedError)
        try:
            with _sigterm_unwinds():
                return main(argv)
        except known as e:
            if os.environ.get("MFVIDEO_DEBUG"):
                raise
            print(f"error: {_one_line(e)}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        except Terminated:
            print("terminated", file=sys.stderr)
            sys.exit(143)

    return wrapper


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror and e.filename:
        return f"{e.filename}: {e.strerror}"
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
