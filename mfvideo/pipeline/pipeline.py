"""The 1-NFE generation pipeline: a diffusers ``DiffusionPipeline`` that generates, extends and conditions on frames.

Components: ``transformer`` (the STDiT) and ``vae`` (the latent codec's diffusers VAE; None in pixel space). The
resolved training config travels with the pipeline (``training_config`` in ``model_index.json``, ``config.yaml``
beside it) and decides the window, resolution, fps and codec. Every window costs one network evaluation
(``num_inference_steps=1``).

Two folder layouts load with ``MFVideoPipeline.from_pretrained``:
- diffusers' (``save_pretrained``): ``model_index.json``, ``transformer/``, ``vae/`` if any, ``config.yaml``; it also
  opens with ``DiffusionPipeline.from_pretrained(dir, custom_pipeline=dir, trust_remote_code=True)`` (README);
- a training checkpoint (``config.yaml``, ``model.safetensors``, ``ema_*.safetensors``): the EMA weights by default.

Outputs follow diffusers: ``output_type="np"`` gives float32 frames (B, T, H, W, 3) in [0, 1], so
``diffusers.utils.export_to_video(out.frames[0])`` and ``mfvideo.io.save_video`` write the same video; "uint8",
"pt" (B, T, 3, H, W) and "pil" are the others; ``"latent"`` gives the network's latents (B, C, T, h, w) undecoded
(``decode_latents`` decodes them). ``latents=`` gives ``generate`` / ``condition`` their noise.

``sampler``: ``"meanflow"`` (k-NFE average-velocity steps, default for MeanFlow models) or ``"euler"`` (Euler steps of
the instantaneous velocity u(z, t, t); the default, with 50 steps, for a model trained as flow matching, i.e.
``method.ratio_r_neq_t = 0``).
"""

from __future__ import annotations

import difflib
import functools
import logging
import math
import numbers
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Union

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from ..builders import build_model
from ..config import NO_CONTEXT, Config, from_dict, sample_fps, to_dict, to_yaml, trains_context
from ..frames import OUTPUT_TYPES, to_output
from ..latents import IdentityCodec
from ..method import SAMPLERS, infer_class, sample
from ..models.stdit import STDiT  # noqa: F401  (diffusers' loader finds the transformer's module, model_index.json's
# "mfvideo.models.stdit", in sys.modules only: a folder's pipeline.py shim imports this module, so it must be there)
from ..weights import (
    CheckpointError, anchor_paths, load_config_from, load_into, load_weights, resolve_checkpoint, saved_classes,
)
from .motion_copy import motion_copy as _motion_copy  # (the methods' argument of that name is the radius)
from .motion_copy import MotionCanvas
from .motion_copy import motion_copy_from_anchor as _motion_copy_from_anchor

log = logging.getLogger(__name__)

BUNDLED = Path(__file__).resolve().parents[1] / "assets" / "moving_digits"
MOTION_COPY_TOL = 0.4  # latent RMS; the bundled digits model's extensions then match the given glyph at 0.995+ (README)
SHIM = "pipeline.py"  # what diffusers' custom_pipeline loads: one import, nothing else


@dataclass
class MFVideoPipelineOutput(BaseOutput):
    """``frames``: (B, T, H, W, 3) as ``output_type`` asked; ``fps``: the model's frame rate (``sample.fps``), or for
    an extended video file the rate of its frames as the model read them (``inputs.file_rate``); ``class_labels``: the
    class ids read from the given frames when ``infer_label=True``, or by the model's context reader in an unlabelled
    ``extend`` (-1 for rows that were given a label), or drawn by ``generate`` for clips asked for without a label;
    else None."""

    frames: Union[np.ndarray, torch.Tensor, list]
    fps: float
    class_labels: Union[np.ndarray, None] = None

    @property
    def images(self):
        """One-frame outputs (an image model, ``num_frames=1``) as diffusers' image pipelines give them: (B, H, W, 3)
        ("np", "uint8"), (B, 3, H, W) ("pt"), a list of PIL images ("pil")."""
        if isinstance(self.frames, list):
            lengths = {len(clip) for clip in self.frames}
            if lengths != {1}:
                raise AttributeError(f"images: these are clips of {', '.join(map(str, sorted(lengths)))} frames; "
                                     "use .frames")
            return [clip[0] for clip in self.frames]
        channels = self.frames.shape[-1] if isinstance(self.frames, np.ndarray) else self.frames.shape[2]  # "pt"
        if self.frames.ndim != 5 or self.frames.shape[1] != 1 or channels != 3:  # a latent output is (B, C, T, h, w)
            raise AttributeError(f"images: the output is {tuple(self.frames.shape)}, not one frame per clip "
                                 "(a latent output, or clips); use .frames")
        return self.frames[:, 0]


PipelineOutput = MFVideoPipelineOutput  # the name of earlier releases


class StreamState:
    """What a stream's chunks find out as they are made (``labels``) and whom they tell (``on_made``): held by the
    stream and by its chunks' generator, so that the generator does not hold the stream. A stream its caller drops
    unfinished is then freed at once, its generator closed and a video file's decoder (an ffmpeg process where
    decord is not installed) with it; it waited for the garbage collector, a process per stream."""

    def __init__(self, labels: torch.Tensor | None = None):
        self.labels = labels
        self.on_made: Callable[[int], None] = lambda n: None


class FrameStream:
    """Frames as a pipeline makes them (``MFVideoPipeline.extend_stream``): iterate it once for uint8 chunks
    (B, n, H, W, 3); ``fps`` as in ``MFVideoPipelineOutput``; ``class_labels`` as in ``MFVideoPipelineOutput``, known
    once the first window is made; ``num_frames``: the frames per clip the chunks add up to (a progress bar's total);
    ``on_made``: called with the new frames of every window as it is made, where they are held back before the first
    chunk comes (a backward extension's), for a progress bar. ``close()`` (or a ``with`` block) ends it early and
    frees what it holds at once, as dropping it does."""

    def __init__(self, chunks: Iterator[np.ndarray], fps: float, labels: torch.Tensor | None = None,
                 num_frames: int | None = None, state: StreamState | None = None):
        self._chunks, self.fps, self.num_frames = chunks, fps, num_frames
        self._state = state or StreamState()
        if labels is not None:
            self._state.labels = labels

    def __iter__(self) -> Iterator[np.ndarray]:
        return self._chunks

    def close(self) -> None:
        self._chunks.close()

    def __enter__(self) -> "FrameStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    labels = property(lambda self: self._state.labels, lambda self, v: setattr(self._state, "labels", v))
    on_made = property(lambda self: self._state.on_made, lambda self, f: setattr(self._state, "on_made", f))

    @property
    def class_labels(self) -> np.ndarray | None:
        return None if self.labels is None else self.labels.cpu().numpy()


class MFVideoPipeline(DiffusionPipeline):
    """One-step clip generation and video extension with a MeanFlow STDiT.

    ``__init__(transformer, vae=None, training_config=None, id2label=None)``: training_config a ``Config`` or its
    dict, id2label a dict of class names by id. Its parameters carry no annotations on purpose: this module's are
    strings (``from __future__ import annotations``), which diffusers 0.32 warns of and 0.33 cannot read: its
    ``from_pretrained`` then stopped with ``KeyError: 'id2label'`` on every folder.
    """

    model_cpu_offload_seq = "transformer->vae"
    _optional_components = ["vae"]

    def __init__(self, transformer, vae=None, training_config=None, id2label=None):
        super().__init__()
        if training_config is None:
            raise ValueError("MFVideoPipeline needs the training_config the transformer was trained with")
        if isinstance(training_config, Config):
            training_config = to_dict(training_config)
        self.register_modules(transformer=transformer, vae=vae)
        labels = {str(k): str(v) for k, v in (id2label or {}).items()}
        self.register_to_config(training_config=training_config, id2label=labels or None)
        self.cfg: Config = from_dict(training_config, source="training_config")
        self.method = self.cfg.method  # a MeanFlow
        self.labels = labels
        self._guidance: float | None = None  # the scale of the current call (``resolve_guidance_scale``)
        transformer.eval()

    # ----------------------------------------------------------------------------------------------------
    # loading and saving
    @classmethod
    def from_checkpoint(cls, path, device="cpu", weights: str = "ema") -> "MFVideoPipeline":
        """A training checkpoint folder (config.yaml + weights); ``weights``: "ema" (default: the run's first EMA),
        "ema_<decay>" (another, e.g. "ema_0.9999") or "model"."""
        path = resolve_checkpoint(path)
        cfg = anchor_paths(load_config_from(path), path)  # its VAE and data found from any folder
        model = build_model(cfg.model)
        load_into(model, load_weights(path, which=weights), str(path))
        vae = None
        if cfg.latents.kind != "identity":
            from ..latents.vae import build_vae_codec

            vae = build_vae_codec(cfg.latents).vae
        classes = saved_classes(path)
        id2label = dict(enumerate(classes)) if classes else None
        return cls(model, vae, training_config=to_dict(cfg), id2label=id2label).to(device)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, device="cpu", weights: str = "ema",
                        **kwargs) -> "MFVideoPipeline":
        """A diffusers folder (``save_pretrained``) or a training checkpoint folder; default: the bundled model.
        ``dtype`` (diffusers' current name; ``torch_dtype``, its older one, works too): the weights' dtype, e.g.
        ``torch.bfloat16`` on a GPU, for either kind of folder (the model casts its float32 inputs)."""
        dtype, torch_dtype = kwargs.pop("dtype", None), kwargs.pop("torch_dtype", None)
        if dtype is not None and torch_dtype is not None:
            raise ValueError("give dtype or torch_dtype (its older name), not both")
        dtype = dtype if dtype is not None else torch_dtype
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise ValueError(f"dtype must be a torch.dtype such as torch.bfloat16, got {dtype!r}")
        path = resolve_checkpoint(path) if path is not None else BUNDLED  # a run folder: its newest checkpoint
        if not path.is_dir():
            raise CheckpointError(f"{path}: no such checkpoint folder")
        if not (path / "model_index.json").is_file():
            return cls.from_checkpoint(path, device, weights)._cast(dtype)
        if weights != "ema":  # it was ignored: a pipeline folder holds one set of weights
            raise ValueError(f"weights={weights!r} picks among a training checkpoint's weights; {path} is a pipeline "
                             "folder, which holds one set")
        if not (path / "config.yaml").is_file():
            raise CheckpointError(f"{path}: no config.yaml (not an mfvideo folder)")
        load_config_from(path)  # a bad config is one clear line, before diffusers reads anything
        from diffusers.utils import logging as diffusers_logging

        bar = diffusers_logging.is_progress_bar_enabled()
        diffusers_logging.disable_progress_bar()  # a local folder of one or two components loads in milliseconds
        try:
            pipe = super().from_pretrained(path, local_files_only=True, **kwargs)
        except (OSError, ValueError, KeyError, RuntimeError) as e:  # missing or mismatched weights
            raise CheckpointError(f"{path}: cannot load ({str(e).strip().splitlines()[0][:200]})") from None
        finally:
            if bar:
                diffusers_logging.enable_progress_bar()
        return pipe.to(device)._cast(dtype)

    def _cast(self, dtype: torch.dtype | None) -> "MFVideoPipeline":
        """The components' weights in ``dtype`` (None: as they are). Set here, not by diffusers' loader, whose argument
        changed its name between versions, and with torch's own ``Module.to``: diffusers' warns on every cast."""
        if dtype is not None:
            for module in (self.transformer, self.vae):
                if module is not None:
                    torch.nn.Module.to(module, dtype)
        return self

    def to(self, *args, **kwargs) -> "MFVideoPipeline":
        """diffusers' ``to`` (a device, a dtype or both), the dtype set as ``from_pretrained(torch_dtype=...)`` sets it:
        diffusers' own model cast warns on every call that some modules "should be kept in float32: []" (none are)."""
        dtype = kwargs.pop("dtype", None)
        rest = [a for a in args if not isinstance(a, torch.dtype)]
        dtype = next((a for a in args if isinstance(a, torch.dtype)), dtype)
        pipe = super().to(*rest, **kwargs) if rest or kwargs else self
        return pipe._cast(dtype)

    def save_pretrained(self, path: str | Path, **kwargs) -> Path:
        """diffusers' layout (model_index.json, transformer/, vae/) plus config.yaml for training and a one-line
        ``pipeline.py`` that lets ``DiffusionPipeline.from_pretrained(custom_pipeline=...)`` find this class."""
        from ..io import as_new_file, atomic_path

        path = Path(path)
        kwargs.setdefault("safe_serialization", True)
        self.register_to_config(training_config=to_dict(self.cfg))  # self.cfg is the one owner at run time
        super().save_pretrained(path, **kwargs)
        as_new_file(*(f for name in ("transformer", "vae") for f in (path / name).glob("*.safetensors")))
        with atomic_path(path / "config.yaml") as tmp:
            tmp.write_text(to_yaml(self.cfg))
        with atomic_path(path / SHIM) as tmp:
            tmp.write_text("from mfvideo.pipeline import MFVideoPipeline  # noqa: F401\n")
        return path

    # ----------------------------------------------------------------------------------------------------
    @property
    def model(self):
        """The transformer (the name of earlier releases)."""
        return self.transformer

    @property
    def codec(self):
        """The latent codec around the ``vae`` component (identity in pixel space), on the pipeline's device."""
        key = (id(self.vae), self.cfg.latents.kind)
        if getattr(self, "_codec_key", None) != key:
            if self.vae is None:
                codec = IdentityCodec(self.cfg.data.channels)
            else:
                from ..latents.vae import codec_from_vae

                codec = codec_from_vae(self.cfg.latents.kind, self.vae, self.cfg.latents.sample_posterior)
            self._codec, self._codec_key = codec, key
        return self._codec.to(self.device)

    @property
    def window(self) -> int:
        """Frames per network call: the training clip length."""
        return self.cfg.data.num_frames

    @property
    def resolution(self) -> int:
        return self.cfg.data.resolution

    @property
    def fps(self) -> float:
        return sample_fps(self.cfg)

    def get_label_ids(self, labels) -> list[int]:
        """Class names (``id2label``) or ids -> ids. A name is a class's whole name or, as in diffusers' DiT pipeline,
        any of its comma-separated synonyms ("tench" for "tench, Tinca tinca"), in any case where that is not
        ambiguous; a name two classes share is an error that names both."""
        ids, names, index = [], set(self.labels.values()), None
        one = isinstance(labels, (str, numbers.Number)) or getattr(labels, "ndim", None) == 0  # 3, np's 3, a 0-d tensor
        for label in [labels] if one else labels:
            if isinstance(label, str) and (label.strip() in names or not label.strip().lstrip("-").isdigit()):
                index = index or self._name_index()  # built once per call, a thousand names or not
                ids.append(self._label_id(label, index))  # a name ("3" too, where a class is named so)
            elif isinstance(label, str):
                ids.append(int(label))  # an id as text: "4", from a command line
            else:
                ids.append(_whole(label, "a class id"))  # 3.7 was class 3, True class 1
        return ids

    def _name_index(self) -> dict[str, set[int]]:
        """Every class's whole name and each of its comma-separated synonyms -> the ids that go by it, composed (NFC:
        a class folder named on macOS holds a decomposed é, a name typed elsewhere the composed one)."""
        by_name: dict[str, set[int]] = {}
        for k, v in self.labels.items():
            v = unicodedata.normalize("NFC", v)
            for n in {v.strip(), *(part.strip() for part in v.split(","))} - {""}:
                by_name.setdefault(n, set()).add(int(k))
        return by_name

    def _label_id(self, name: str, by_name: dict[str, set[int]]) -> int:
        """The id of a class name (``_name_index``): its whole name or a synonym exactly, else in any case."""
        wanted = unicodedata.normalize("NFC", name.strip())
        found = by_name.get(wanted) or {i for n, ids in by_name.items()
                                        if n.casefold() == wanted.casefold() for i in ids}
        if len(found) > 1:
            raise ValueError(f"class name {name!r} is shared by classes {', '.join(map(str, sorted(found)))} "
                             f"({'; '.join(self.labels[str(i)] for i in sorted(found))}): give the id")
        if found:
            return next(iter(found))  # the index is shared by the call's labels: never emptied
        if not by_name:
            raise ValueError(f"unknown class name {name!r}: this model's classes have no names; give an id")
        close = difflib.get_close_matches(wanted, list(by_name), n=3, cutoff=0.6)
        named = sorted(set(self.labels.values()))  # all of them where few; a thousand ImageNet names are no message
        known = f"known: {', '.join(named)}" if len(named) <= 12 else f"{len(named)} known (pipe.labels)"
        guess = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        raise ValueError(f"unknown class name {name!r}{guess}; {known}")

    def check_labels(self, class_labels) -> torch.Tensor:
        """Class ids (or names) as a (B,) long tensor; an id outside 0..num_classes-1 (or -1, none) is a ValueError."""
        n = self.cfg.model.num_classes
        if not n:
            raise ValueError("this model is unconditional: it takes no class "
                             "(class_labels=None; no --classes / --class)")
        labels = torch.as_tensor(self.get_label_ids(class_labels), dtype=torch.long).reshape(-1)
        if labels.numel() == 0:
            raise ValueError("class_labels is empty: give at least one class id")
        bad = [int(c) for c in labels if not (0 <= int(c) < n or int(c) == -1)]
        if bad:
            raise ValueError(f"class id {bad[0]} out of range: this model has classes 0..{n - 1} (-1 = none)")
        return labels

    def _labels(self, class_labels, batch: int):
        if class_labels is None:
            n = self.cfg.model.num_classes
            return torch.full((batch,), -1, dtype=torch.long, device=self.device) if n else None
        return self.check_labels(class_labels).to(self.device)

    @staticmethod
    def _generator(seed: int | None, generator, batch: int | None = None):
        """The caller's generator (on any device: the noise is drawn there), or their list of one per clip (clip i's
        noise and drawn class from generator i: a clip then does not depend on the batch it is made in; ``batch``
        clips, where known), else a CPU generator seeded with ``seed`` (a random seed when both are None)."""
        if isinstance(generator, (list, tuple)):
            if not generator or not all(isinstance(x, torch.Generator) for x in generator):
                raise ValueError("generator must be a torch.Generator or a non-empty list of them, one per clip")
            if batch is not None and len(generator) != batch:
                raise ValueError(f"{len(generator)} generator(s) for {batch} clips: give one per clip")
            return list(generator)
        if generator is not None:
            if not isinstance(generator, torch.Generator):
                raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
            return generator
        return torch.Generator().manual_seed(_whole(seed, "seed") if seed is not None else torch.seed() % 2**63)

    def _latent_shape(self, frames: int):
        return self.codec.latent_shape((frames, self.resolution, self.resolution))

    def _noise(self, batch: int, frames: int, generator, temperature: float = 1.0) -> torch.Tensor:
        """The prior the model was trained on, (batch, C, T, h, w) on the pipeline's device, drawn on the generator's
        device (a list: clip i's from generator i), times ``temperature``."""
        shape = self._latent_shape(frames)
        if isinstance(generator, list):
            e = torch.cat([self.method.noise((1, *shape), generator=g).to(self.device) for g in generator])
        else:
            e = self.method.noise((batch, *shape), generator=generator).to(self.device)
        return e if temperature == 1.0 else e * temperature

    def _given_noise(self, latents, frames: int, batch: int | None, temperature: float = 1.0) -> torch.Tensor:
        """``latents=``, the noise of a window of ``frames`` pixel frames a caller hands over: (B, C, T, h, w) as the
        model's prior would draw it (``batch`` clips, where known), float32 on the pipeline's device, times
        ``temperature`` as drawn noise is."""
        want = self._latent_shape(frames)
        if not isinstance(latents, torch.Tensor) or not latents.is_floating_point():
            raise ValueError(f"latents must be a float tensor (B, {', '.join(map(str, want))}), "
                             f"got {type(latents).__name__}")
        if latents.ndim != 5 or tuple(latents.shape[1:]) != want or (batch is not None and latents.shape[0] != batch):
            b = "B" if batch is None else str(batch)
            raise ValueError(f"latents must have shape ({b}, {', '.join(map(str, want))}) (the noise of "
                             f"a window of {frames} frames), got {tuple(latents.shape)}")
        if not bool(torch.isfinite(latents).all()):
            raise ValueError("latents hold NaN or infinite values")
        return latents.to(self.device, torch.float32) * temperature

    def _latents_covering(self, frames: int) -> int:
        """Latent frames whose decoding holds the first ``frames`` pixel frames."""
        f = self.codec.temporal_factor
        return frames if f == 1 else 1 + -(-(frames - 1) // f)

    def decode_latents(self, latents: torch.Tensor, output_type: str = "np"):
        """Latents (B, C, T, h, w), as ``output_type="latent"`` gives them, -> frames as ``output_type`` asks ("np",
        "uint8", "pt", "pil"). Per-frame codecs give back the frames the call would have given; a causal video VAE
        decodes the whole sequence at once, where the pipeline decoded window by window (close, not bit-equal)."""
        _check_output_type(output_type, latent=False)
        want = self._latent_shape(1)  # (C, 1, h, w): any number of latent frames
        if (not isinstance(latents, torch.Tensor) or latents.ndim != 5 or latents.shape[1] != want[0]
                or tuple(latents.shape[3:]) != want[2:] or not latents.shape[0] * latents.shape[2]):
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents must have shape (B, {want[0]}, T, {want[2]}, {want[3]}), as "
                             f"output_type='latent' gives them, got {got}")
        return to_output(self.codec.decode_frames(latents.to(self.device)), output_type)

    @property
    def default_sampler(self) -> str:
        """``"euler"`` for a model trained as flow matching (no r != t rows), else ``"meanflow"``."""
        return "euler" if self.method.ratio_r_neq_t == 0 else "meanflow"

    def resolve_sampler(self, sampler: str | None, steps: int | None) -> tuple[str, int]:
        """(sampler, network calls per window) with the defaults filled in; unknown names are an error."""
        sampler = sampler or self.default_sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
        steps = SAMPLERS[sampler][1] if steps is None else _whole(steps, "steps")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return sampler, steps

    def resolve_guidance_scale(self, guidance_scale: float | None) -> float | None:
        """The guidance scale of a model that takes one as a condition (``method.cfg_scale_range``): the one given,
        else the model's ``sample.guidance_scale``, else the geometric middle of the scales it was trained on; None
        for a model whose guidance is folded in at training, which refuses a given scale."""
        trained = self.method.cfg_scale_range
        if trained is None:
            if guidance_scale is not None:
                raise ValueError(f"guidance_scale={guidance_scale}: this model takes no guidance scale (its guidance, "
                                 "if any, is folded in at training: method.cfg_kappa); train with "
                                 "method.cfg_scale_range to choose it at sampling")
            return None
        if guidance_scale is None:
            guidance_scale = self.cfg.sample.guidance_scale or (trained[0] * trained[1]) ** 0.5
        if not float(guidance_scale) >= 1.0:
            raise ValueError(f"guidance_scale must be >= 1 (1: unguided), got {guidance_scale}")
        if not trained[0] <= float(guidance_scale) <= trained[1]:
            log.warning("guidance_scale %g lies outside the scales the model was trained on, [%g, %g]",
                        float(guidance_scale), *trained)
        return float(guidance_scale)

    def _sample(self, noise, y, how: tuple[str, int], context=None, mask=None, context_noise: float = 0.0,
                reading=None, generator=None):
        """One window sampled as ``how`` from ``noise`` (B, C, T, h, w); a sampler that draws more noise
        (``consistency``) draws it from ``generator``, as the window's own noise was."""
        extra = {} if reading is None else {"reading": reading}
        if self._guidance is not None:
            extra["guidance"] = self._guidance
        net = functools.partial(self.transformer, **extra) if extra else self.transformer
        fresh = None if generator is None else functools.partial(
            self._noise, noise.shape[0], self._pixel_frames(noise.shape[2]), generator)
        return sample(net, noise, how[0], how[1], y=y, context=context, context_mask=mask, context_noise=context_noise,
                      fresh=fresh)

    def _read_given(self, noise, y, context, mask):
        """What the model reads off the first window of an extension (the given video as context, the new frames
        pure noise at t = 1, r = 0; ``STDiT.read_context``) or of a generated clip's first continuation (its first
        window's last frames, clean), or None for a model with neither a context summary nor a reader; and the read
        class ids (B,), -1 on labelled rows (logged), or None when nothing was read."""
        net = self.transformer
        if getattr(net, "context_embedder", None) is None and getattr(net, "class_reader", None) is None:
            return None, None
        m = mask.to(noise.dtype)
        t = 1.0 - m  # (B, T): context at t = r = 0, new frames at t = 1
        reading = net.read_context(torch.where(mask[:, None, :, None, None], context, noise), t, torch.zeros_like(t), y,
                                   guidance=self._guidance)
        if reading.class_probs is None or (y is not None and bool((y >= 0).all())):
            return reading, None
        top, ids = reading.class_probs.max(dim=1)
        names = [self.labels.get(str(int(c)), str(int(c))) for c in ids]
        log.info("class read off the context frames by the context reader: %s (p %s)", ", ".join(names),
                 ", ".join(f"{float(p):.2f}" for p in top))
        return reading, ids if y is None else torch.where(y < 0, ids, -1)

    def resolve_context_noise(self, context_noise: float | None) -> float:
        """The noise level given to generated frames that become context (default: the model's
        ``sample.context_noise``, set for models trained with ``method.context_noise``)."""
        s = self.cfg.sample.context_noise if context_noise is None else float(context_noise)
        if not 0.0 <= s < 1.0:
            raise ValueError(f"context_noise must lie in [0, 1), got {s}")
        return s

    def resolve_temperature(self, temperature: float | None, how: tuple[str, int]) -> float:
        """The noise's standard deviation, as a share of the prior's, of a window sampled as ``how`` (sampler,
        calls): the one given (> 0), else the model's ``sample.one_step_temperature`` for a window of one call and 1
        (the prior as trained) for a window of several (the ``consistency`` sampler's fresh noise is always the
        prior's)."""
        t = temperature if temperature is not None else self.cfg.sample.one_step_temperature if how[1] == 1 else 1.0
        if isinstance(t, (bool, str)) or not isinstance(t, numbers.Real) or not math.isfinite(t) or not t > 0:
            raise ValueError(f"temperature must be a finite number > 0 (1: the prior as trained), got {t!r}")
        return float(t)

    def resolve_motion_copy(self, motion_copy: int | None, motion_copy_tol: float | None) -> tuple[int, float] | None:
        """(radius, tol) of the motion-compensated copy of a call, or None (off): the radius given, else the model's
        ``sample.motion_copy``."""
        if motion_copy is None and self.cfg.sample.motion_copy:
            log.info("motion copy at radius %d, the model's sample.motion_copy (motion_copy=0: the network's own frames)",
                     self.cfg.sample.motion_copy)
        return _motion_copy_args(self.cfg.sample.motion_copy if motion_copy is None else motion_copy, motion_copy_tol)

    def _output(self, frames: np.ndarray, output_type: str, return_dict: bool = True, labels=None,
                fps: float | None = None):
        frames = frames if output_type == "latent" else to_output(frames, output_type)
        out = MFVideoPipelineOutput(frames, fps or self.fps,
                                    None if labels is None else labels.cpu().numpy())
        return out if return_dict else (out.frames,)

    def _check_label_args(self, class_labels, infer_label: bool) -> None:
        """``class_labels`` / ``infer_label`` as ``_labels_for`` takes them, checked before any frame is read."""
        if infer_label:
            if class_labels is not None:
                raise ValueError("give class_labels or infer_label=True, not both")
            if not self.cfg.model.num_classes:
                raise ValueError("infer_label needs a class-conditional model; this one is unconditional")
        elif class_labels is not None:
            self.check_labels(class_labels)

    def _labels_for(self, given: torch.Tensor, class_labels, infer_label: bool, reps: int = 1) -> torch.Tensor | None:
        """Labels for the ``reps`` clips made from each of B given clips (latents (B, C, K, h, w)), clip b * reps + j
        from given clip b: the caller's (one label, one per given clip, or one per clip made), or with ``infer_label``
        the model's own reading of the given frames (``mfvideo.method.classify``, once per given clip), logged."""
        self._check_label_args(class_labels, infer_label)
        B = given.shape[0]
        if not infer_label:
            y = self._labels(class_labels, B)
            if y is None or y.shape[0] == B * reps:
                return y
            if y.shape[0] not in (1, B):
                per = f", one per given clip ({B}) or one per clip made" if reps > 1 else " or one per clip"
                raise ValueError(f"{y.shape[0]} class labels for {B * reps} clip{'s' * (B * reps > 1)}: give one{per}")
            return y.expand(B).repeat_interleave(reps)  # one label, or one per given clip
        n, pt, K = self.cfg.model.num_classes, self.cfg.model.temporal_patch_size, given.shape[2]
        if K % pt:  # whole temporal patches: the latest ones, or a still held for one patch
            held = given[:, :, -1:].expand(-1, -1, pt - K, -1, -1) if K < pt else None
            given = given[:, :, K % pt :] if held is None else torch.cat([given, held], dim=2)
        y, margin = infer_class(self.transformer, given, n, generator=torch.Generator().manual_seed(0),
                                frame_correlation=self.method.noise_frame_correlation)
        names = [self.labels.get(str(int(c)), str(int(c))) for c in y]
        log.info("class read from the given frames: %s (margins %s)", ", ".join(names),
                 ", ".join(f"{float(m):.2f}" for m in margin))
        return y.repeat_interleave(reps)

    def _warn_without_context(self, what: str) -> None:
        """Once per pipeline: a call that leans on given frames, to a model that never learned to (``trains_context``),
        draws frames that do not follow them; said, not refused (its windows are still its own clips)."""
        if not trains_context(self.cfg) and not getattr(self, "_warned_context", False):
            self._warned_context = True
            log.warning("%s of a model %s: its new frames do not follow the given ones", what, NO_CONTEXT)

    @staticmethod
    def _clips_per_input(num_clips, given: int) -> int:
        """``num_clips`` of ``extend`` / ``condition`` -> how many clips each of the ``given`` input clips makes."""
        if num_clips is None:
            return 1
        if (n := _whole(num_clips, "num_clips")) < 1 or n % given:
            what = f"a multiple of the {given} given clips" if given > 1 else "at least 1"
            raise ValueError(f"num_clips={n}: {what} (each given clip is continued num_clips / {given} times)")
        return n // given

    # ----------------------------------------------------------------------------------------------------
    @property
    def latent_window(self) -> int:
        """Latent frames per network call (a causal video VAE maps 4k+1 / 8k+1 pixel frames to k+1)."""
        return self.codec.latent_frames(self.window)

    def _pixel_frames(self, latent_frames: int) -> int:
        return self.codec.pixel_frames(latent_frames)

    @torch.no_grad()
    def __call__(self, class_labels=None, num_frames: int | None = None, num_inference_steps: int | None = None,
                 generator: torch.Generator | None = None, output_type: str = "np", return_dict: bool = True,
                 num_videos: int | None = None, video: Any = None, num_new_frames: int | None = None,
                 context_frames: int | None = None, sampler: str | None = None, infer_label: bool = False,
                 frames_per_window: int | None = None, motion_copy: int | None = None,
                 motion_copy_tol: float | None = None, first_window_steps: int | None = None,
                 guidance_scale: float | None = None,
                 latents: torch.Tensor | None = None, backward: bool = False, image: Any = None,
                 height: int | None = None, width: int | None = None, prompt: Any = None,
                 temperature: float | None = None, num_videos_per_prompt: int | None = None,
                 num_images_per_prompt: int | None = None):
        """Generate clips (``class_labels`` ids or names, ``num_videos``), or with ``video`` continue it by
        ``num_new_frames`` (``num_videos``: every clip made, as ``num_clips`` in ``generate`` and ``extend``;
        diffusers' ``num_videos_per_prompt``: clips per class label, per given video or image, or, labels drawn, in
        all; ``num_images_per_prompt``, diffusers' image pipelines' name, the same; ``infer_label``,
        ``frames_per_window``, ``motion_copy``, ``backward``: as in ``extend``; with or without ``video``, the copy's
        default is the model's ``sample.motion_copy``; ``first_window_steps``: as in ``generate``). diffusers' names:
        ``num_inference_steps`` network calls per window
        (default 1), ``generator``, ``output_type`` ("np" float in [0, 1], "uint8", "pt", "pil", "latent"),
        ``return_dict``, ``guidance_scale`` (a model trained with ``method.cfg_scale_range``: one call still),
        ``temperature`` (as in ``generate``),
        ``latents`` (the first window's noise, as in ``generate``); as diffusers' image-to-video pipelines, ``image``
        (a still: path, PIL image, array) and ``num_frames`` the output's length, the image included (default the
        window); ``height`` / ``width`` the model's resolution or an error; ``prompt`` an error naming
        ``class_labels``."""
        self._check_call_names(prompt, height, width)
        if num_images_per_prompt is not None:  # an image model's users call it so
            if num_videos_per_prompt is not None:
                raise ValueError("num_images_per_prompt and num_videos_per_prompt are one setting (diffusers' image "
                                 "and video pipelines' names for it): give one")
            num_videos_per_prompt = num_images_per_prompt
        if num_videos_per_prompt is not None:
            class_labels, num_videos = self._per_prompt(num_videos_per_prompt, num_videos, class_labels,
                                                        image if image is not None else video)
        if num_inference_steps is not None:
            num_inference_steps = _whole(num_inference_steps, "num_inference_steps")  # named as the caller did
        if image is not None:
            if video is not None or num_new_frames is not None:
                raise ValueError("image= is image to video, num_frames its output's length: give video= and "
                                 "num_new_frames, or image= and num_frames, not both")
            num_frames = None if num_frames is None else _whole(num_frames, "num_frames")
            length = self.window if num_frames is None else num_frames  # by default one window, the image its first
            video, num_new_frames = image, length - 1
            if num_new_frames < 1:
                raise ValueError(f"num_frames={num_frames} with image=: the output holds the image and the frames "
                                 "made after it, so at least 2")
        elif video is not None and num_frames is not None:
            raise ValueError("with video=, num_new_frames sets how many frames are made (num_frames is the length of "
                             "clips made from noise, or with image= of the image's clip)")
        if video is not None:
            if latents is not None:
                raise ValueError("latents= is the noise of clips generated from noise; an extension draws its noise "
                                 "from generator=")
            if first_window_steps is not None:
                raise ValueError("first_window_steps is for clips generated from noise; an extension's first window "
                                 "leans on the given video: set num_inference_steps")
            return self.extend(video, self.window if num_new_frames is None else num_new_frames,
                               context_frames=context_frames,
                               steps=num_inference_steps, class_labels=class_labels, generator=generator,
                               sampler=sampler, output_type=output_type, return_dict=return_dict,
                               infer_label=infer_label, frames_per_window=frames_per_window,
                               motion_copy=motion_copy, motion_copy_tol=motion_copy_tol,
                               guidance_scale=guidance_scale, backward=backward, temperature=temperature,
                               num_clips=num_videos)
        if infer_label or backward:
            raise ValueError(f"{'infer_label' if infer_label else 'backward'} works on a given video: pass video=")
        return self.generate(num_frames=num_frames, class_labels=class_labels, num_clips=num_videos,
                             steps=num_inference_steps, context_frames=context_frames, sampler=sampler,
                             generator=generator, output_type=output_type, return_dict=return_dict,
                             frames_per_window=frames_per_window, motion_copy=motion_copy,
                             motion_copy_tol=motion_copy_tol, first_window_steps=first_window_steps,
                             guidance_scale=guidance_scale, latents=latents, temperature=temperature)

    def _per_prompt(self, per_prompt, num_videos, class_labels, video) -> tuple:
        """diffusers' ``num_videos_per_prompt`` -> (class_labels, num_videos): k clips per given label (labels
        repeated, each k times in a row), per given clip (``num_videos``: k times their count), else k in all."""
        from .inputs import clip_count

        k = _whole(per_prompt, "num_videos_per_prompt")
        if k < 1:
            raise ValueError(f"num_videos_per_prompt must be >= 1, got {k}")
        if num_videos is not None:
            raise ValueError("num_videos counts every clip made, num_videos_per_prompt the clips per class label or "
                             "given video: give one of them")
        if video is not None:  # labels: one, or one per given clip (extend repeats them), or one per clip made
            return class_labels, clip_count(video) * k
        if class_labels is None:
            return None, k
        return self.check_labels(class_labels).repeat_interleave(k).tolist(), None

    def _check_call_names(self, prompt, height, width) -> None:
        """diffusers' arguments this model cannot honour, each a one-line error saying what it can do."""
        if prompt is not None:
            names = ", ".join(list(self.labels.values())[:6]) if self.labels else ""
            what = (f"class_labels= (ids, or names: {names}{', ...' if len(self.labels) > 6 else ''})" if names else
                    "class_labels= (class ids)") if self.cfg.model.num_classes else "no text (an unconditional model)"
            raise ValueError(f"this model takes no text prompt: it is conditioned on {what}")
        for name, value in (("height", height), ("width", width)):
            if value is not None and value != self.resolution:
                raise ValueError(f"{name}={value}: this model draws {self.resolution} x {self.resolution} frames, the "
                                 f"resolution it was trained at (data.resolution); resize its output instead")

    @torch.no_grad()
    def generate(self, num_frames: int | None = None, class_labels=None, num_clips: int | None = None,
                 seed: int | None = None, steps: int | None = None, context_frames: int | None = None,
                 sampler: str | None = None, generator: torch.Generator | None = None, output_type: str = "np",
                 return_dict: bool = True, context_noise: float | None = None, frames_per_window: int | None = None,
                 reread_context: bool = False, motion_copy: int | None = None, motion_copy_tol: float | None = None,
                 first_window_steps: int | None = None, guidance_scale: float | None = None,
                 latents: torch.Tensor | None = None, temperature: float | None = None):
        """Clips from noise: one network call for the first window, one per further window (sliding).

        ``class_labels``: one id per clip, or one id for ``num_clips`` clips; None on a class-conditional model draws
        a class per clip uniformly (from the same generator, after the first window's noise; returned in
        ``class_labels``): p(x) = mean over y of p(x | y), through the guided conditional field the model was trained
        for, where its null-label branch (``class_labels=-1``, trained on a tenth of the rows, unguided) draws far
        worse clips (the bundled model: FD 416 against 88; docs/bundled_model.md). Noise comes from ``generator`` (a
        ``torch.Generator`` on any device, or a list of one per clip: clip i's noise and drawn class from generator i,
        the same clip as made alone; ``extend`` and ``condition`` take the same) or from ``seed``. ``context_noise``,
        ``frames_per_window``, ``reread_context``: as in ``extend``. ``motion_copy`` (None: the model's
        ``sample.motion_copy``; 0: off) as in ``extend``, and in the first window, which has no given frame, outwards
        from its anchor, the frame its other frames are best explained by moved (``motion_copy.anchor_frames``): a
        frame the network broke is then the anchor moved, where a move explains it (the bundled model's default,
        R = 4: clips with a frame read as another digit 15.2 % -> 1.9 %, one hand through the clip; docs/usage.md).
        What the model reads off its first window's last frames (context summary, and the class on unlabelled rows) holds for
        every later window, as an extension holds what it read off the given video. Re-reading every window's own frames
        compounds their drift: the bundled model's 24-frame clips then dim (99th-percentile intensity 1.0 -> 0.92 by
        frames 16-23) and lose their class (frame accuracy 0.92 -> 0.84, held: 0.96; docs/bundled_model.md "Clips
        generated past the window").

        The first window is always the model's full trained window, cut to ``num_frames`` where fewer are asked for
        (one frame included): a video model draws worse frames from shorter noise than it was trained on (the bundled
        model's single frames: class accuracy 0.78 -> 0.91, sharpness 0.70 -> 0.81; docs/usage.md).

        ``first_window_steps``: network calls for the first window alone (default ``steps``). The first window is
        made from noise with nothing to lean on, the later ones next to the model's own frames: on the bundled model
        the one-step first window is the weakest part of a clip, and the consistency sampler's two calls there
        (``sampler="consistency", steps=1, first_window_steps=2``: one more call per clip, the rest one step) halve
        its broken clips, where MeanFlow's two steps no longer beat the one-step jump at its temperature
        (docs/usage.md "Consistency sampler").

        ``guidance_scale`` (a model trained with ``method.cfg_scale_range``, which takes the scale as a condition;
        default ``resolve_guidance_scale``'s): classifier-free guidance chosen here, one call per window still; a model
        whose guidance is folded in at training refuses it.

        ``temperature``: every window's noise is the prior's times this (Glow's temperature; still one call per
        window). Below 1 the one-step jump starts nearer the prior's centre, where the network draws fewer broken
        frames, at some of the clips' variety; a window of several calls gets worse below 1 (its later calls see a
        noise level off the path). Default: the model's ``sample.one_step_temperature`` for windows made in one call
        (the bundled model's 0.65: clips with a misread frame 25 % -> 15 %; docs/usage.md "Temperature"), 1 for
        windows of more calls (``first_window_steps=2`` included).

        ``latents``: the first window's noise (B, C, T, h, w), T the latent frames of the trained window, as the
        model's prior draws it (``MeanFlow.noise``; default: drawn from ``generator`` / ``seed``, which still draws
        every later window's noise and any drawn classes); the temperature scales it as it scales drawn noise.
        ``output_type="latent"``: the latents of the frames made, undecoded (B, C, T, h, w) (``decode_latents``
        decodes them).

        ``generate_stream`` takes the same arguments and gives the same frames window by window.
        """
        _check_output_type(output_type)
        stream = self.generate_stream(num_frames, class_labels, num_clips, seed, steps, context_frames, sampler,
                                      generator, context_noise, frames_per_window, reread_context, motion_copy,
                                      motion_copy_tol, first_window_steps, guidance_scale, latents, temperature,
                                      _latent=output_type == "latent")
        return self._output(self._gather(stream, output_type), output_type, return_dict, labels=stream.labels)

    def generate_stream(self, num_frames: int | None = None, class_labels=None, num_clips: int | None = None,
                        seed: int | None = None, steps: int | None = None, context_frames: int | None = None,
                        sampler: str | None = None, generator: torch.Generator | None = None,
                        context_noise: float | None = None, frames_per_window: int | None = None,
                        reread_context: bool = False, motion_copy: int | None = None,
                        motion_copy_tol: float | None = None, first_window_steps: int | None = None,
                        guidance_scale: float | None = None, latents: torch.Tensor | None = None,
                        temperature: float | None = None, *,
                        _latent: bool = False) -> "FrameStream":
        """``generate``'s frames as they are made: a ``FrameStream`` of uint8 chunks (B, n, H, W, 3), the first
        window's, then every later window's new frames; memory holds one window whatever ``num_frames``. Arguments
        as in ``generate``: checked, and the first window's noise and any drawn classes drawn, when it is called (its
        ``class_labels`` are then known); the network runs as the stream is consumed."""
        guidance = self._guidance = self.resolve_guidance_scale(guidance_scale)
        how = self.resolve_sampler(sampler, steps)
        how_first = how if first_window_steps is None else self.resolve_sampler(how[0], first_window_steps)
        s = self.resolve_context_noise(context_noise)
        temp, temp_first = self.resolve_temperature(temperature, how), self.resolve_temperature(temperature, how_first)
        copy = self.resolve_motion_copy(motion_copy, motion_copy_tol)
        num_frames = self.window if num_frames is None else _whole(num_frames, "num_frames")
        num_clips = None if num_clips is None else _whole(num_clips, "num_clips")
        if num_frames < 1 or (num_clips is not None and num_clips < 1):
            raise ValueError(f"num_frames and num_clips must be >= 1, got {num_frames} and {num_clips}")
        n_classes = self.cfg.model.num_classes
        draw = class_labels is None and bool(n_classes)  # a class per clip, drawn below
        y = None if draw else self._labels(class_labels, num_clips or 1)
        if y is not None and num_clips and y.shape[0] != num_clips:
            if y.shape[0] != 1:
                raise ValueError(f"{y.shape[0]} class labels for {num_clips} clips")
            y = y.expand(num_clips)
        batch = y.shape[0] if y is not None else (num_clips or 1)
        if isinstance(generator, (list, tuple)) and num_clips is None and latents is None and batch == 1:
            batch = len(generator)  # one generator per clip: as many clips
            y = y.expand(batch) if y is not None else None
        if latents is not None:  # the caller's noise for the first window: its batch is the clips'
            known = num_clips is not None or (y is not None and y.shape[0] > 1)
            noise = self._given_noise(latents, self._pixel_frames(self.latent_window), batch if known else None,
                                      temp_first)
            batch = noise.shape[0]
            y = y.expand(batch) if y is not None and y.shape[0] == 1 else y
        slides = num_frames > self.window or context_frames is not None or frames_per_window is not None
        k = self._context_latents(context_frames) if slides else None  # an image model never slides
        keep = self._frames_per_window(frames_per_window, k) if slides else None
        if slides:
            self._warn_without_context("clips past the window")
        g = self._generator(seed, generator, batch)
        # the first window is always the trained one, then cut: a video model drawing fewer frames from noise than it
        # was trained on draws worse ones (the bundled model's single frames: accuracy 0.91 cut from a window, 0.78
        # drawn alone; docs/experiments.md, session 30)
        if latents is None:
            noise = self._noise(batch, self._pixel_frames(self.latent_window), g, temp_first)
        if draw:  # after the noise: the first window's noise is the seed's, as with labels given
            gens = g if isinstance(g, list) else [g]
            y = torch.cat([torch.randint(0, n_classes, (batch // len(gens),), generator=x, device=x.device)
                           for x in gens]).to(self.device)
            log.info("no class_labels: drew %s (class_labels=-1 for the null label)",
                     ", ".join(self.labels.get(str(int(c)), str(int(c))) for c in y))

        def chunks():
            self._guidance = guidance
            window = self._sample(noise, y, how_first, generator=g)  # (B, C, latent window, h, w)
            canvas = None
            if copy is not None:  # no given frame: outwards from the frame the others are best explained by
                window, _, canvas = _motion_copy_from_anchor(window, *copy)
            made = min(num_frames, self.window)
            if _latent:
                yield window[:, :, : self._latents_covering(made)]
            else:
                yield self.codec.decode_frames(window)[:, :made]  # (B, made, H, W, 3)
            if num_frames > made:
                yield from self._windows(window[:, :, -k:], num_frames - made, y, how, g, s, s,
                                         hold_read=not reread_context, report_read=True, keep=keep, copy=copy,
                                         canvas=canvas, guidance=guidance, latent=_latent, temperature=temp)

        return FrameStream(torch.no_grad()(chunks)(), self.fps, y if draw else None, num_frames)

    @torch.no_grad()
    def extend(self, video, num_new_frames: int, context_frames: int | None = None, steps: int | None = None,
               class_labels=None, seed: int | None = None, sampler: str | None = None,
               generator: torch.Generator | None = None, include_input: bool = True, output_type: str = "np",
               return_dict: bool = True, infer_label: bool = False, context_noise: float | None = None,
               reread_context: bool = False, frames_per_window: int | None = None, motion_copy: int | None = None,
               motion_copy_tol: float | None = None, guidance_scale: float | None = None, backward: bool = False,
               temperature: float | None = None, num_clips: int | None = None):
        """The input clip followed by ``num_new_frames`` generated frames; its last frames are the context
        (``backward=True``: the new frames come before it, its first frames the context; below).

        ``video``: a file path (a video, or a still image: one frame), or frames (T, H, W, 3) / (B, T, H, W, 3) as
        uint8 or float in [0, 1]. A video file is read at the model's frame rate, as its training clips were taken:
        every k-th frame up to the last, k the step nearest to its fps / ``data.target_fps``, else
        ``data.frame_stride`` (1 for the bundled model); the output's ``fps`` is the file's / k, so the given frames
        play at their true speed. Frames handed over as arrays are taken as they are.
        ``context_frames`` counts pixel frames (default: half the window; an input shorter than that is all
        context, and the later windows' context grows with the frames made up to the default: a still image continues
        from its one frame, then from its first new frames); with a causal video VAE it is rounded down to the VAE's
        4k+1 (8k+1) rule. A video file is decoded chunk by chunk and resized on the fly, so memory does not grow with
        the input's resolution; with ``include_input=False`` only its last ``context_frames`` are decoded and the
        output holds the context and the new frames.

        An unlabelled video runs with the null label: the model reads what it continues from the context frames. What
        it reads at the middle block -- the context summary (``model.context_summary``) and, with a context reader
        (``model.context_reader``; both in the bundled model), the class -- is read off the given video in the first
        window and held for every later window, whose context is the model's own frames (``reread_context=True``:
        every window reads its own context, for videos whose content changes); read class ids come back in
        ``class_labels``. ``infer_label=True`` (class-conditional models) first reads the class off the context with
        the model itself (a diffusion classifier: 8 x classes network calls per clip) and conditions on it; the ids
        come back in ``class_labels``. On a model with a class reader a given or inferred class enters through the
        reader, as its held reading (``_read_labelled``; with ``reread_context=True`` it conditions every block, the
        guided labelled field, which overdraws: docs/usage.md).

        ``context_noise`` (default: the model's ``sample.context_noise``): from the second window on, the context is
        the model's own frames; they are noised to this level first (for a model trained with
        ``method.context_noise``; one trained on clean context reads the noise as content). The given video is
        always used as it is.

        ``frames_per_window`` (default: all, window - context): keep only the first n new frames of every window and
        slide the window by n. Every kept frame then lies within n frames of its context, at the price of
        (window - context) / n times the network calls: with n = 1, one call per new frame (streaming). A one-step
        window's frames get worse with distance from their context (the bundled model: 0.96 -> 0.89 over 8 new
        frames, flat at 0.94-0.96 with n = 1; docs/usage.md).

        ``motion_copy`` (R latent pixels; 0: off; None: the model's ``sample.motion_copy``, 0 unless its config sets
        it): every new frame that the frame before it (the last context frame for the first), moved by whole latent
        pixels within R, explains to a root-mean-square difference of at most ``motion_copy_tol`` (latent units; None:
        ``MOTION_COPY_TOL``, 0.4) becomes that moved frame (``pipeline.motion_copy``: a codec's motion compensation,
        per frame), one chain through every window on a ``MotionCanvas`` that keeps what left the frame, so that it
        comes back as it was. The network still decides where the content goes and which frames a move explains; the
        copy keeps what it would redraw: the given handwriting, sharp (the bundled model, 1-NFE: glyph match 0.872 ->
        0.999 with whole windows or ``frames_per_window=1``, and 1.00 after 64 new frames, brightness held;
        docs/usage.md). Content that changes otherwise than by a move stays the network's. The bundled model, whose
        content moves as a whole, copies at R = 4 by default; pass 0 for the network's own frames.

        ``guidance_scale``, ``temperature``: as in ``generate``. ``output_type="latent"``: the latents of the context
        frames and the new ones, undecoded (B, C, T, h, w), what ``include_input=False`` gives as frames
        (``decode_latents``).

        ``backward=True`` (per-frame codecs): what came before the clip. The context is its first frames, every window
        makes the frames before its context (the model was trained with context at a window's end, the "last"
        mask), the windows slide back in time, and the output is the new frames followed by the input (or by its
        context frames, ``include_input=False``). Everything above holds, mirrored in time; the new frames are all
        made before the first is given, so the stream holds them (the input still streams after them).

        ``num_clips``: clips made, the given clips' count (default) or a multiple of it: each given clip continued
        ``num_clips / B`` times, each with its own noise (clip b * k + j is given clip b's j-th; its context encoded and
        its class read once). ``class_labels``: one, one per given clip, or one per clip made.

        ``extend_stream`` takes the same arguments and gives the same frames window by window, for videos too long
        to hold.
        """
        _check_output_type(output_type)
        stream = self.extend_stream(video, num_new_frames, context_frames, steps, class_labels, seed, sampler,
                                    generator, include_input, infer_label, context_noise, reread_context,
                                    frames_per_window, motion_copy, motion_copy_tol, guidance_scale, backward,
                                    temperature, num_clips, _latent=output_type == "latent")
        return self._output(self._gather(stream, output_type), output_type, return_dict, stream.labels, fps=stream.fps)

    def extend_stream(self, video, num_new_frames: int, context_frames: int | None = None, steps: int | None = None,
                      class_labels=None, seed: int | None = None, sampler: str | None = None,
                      generator: torch.Generator | None = None, include_input: bool = True, infer_label: bool = False,
                      context_noise: float | None = None, reread_context: bool = False,
                      frames_per_window: int | None = None, motion_copy: int | None = None,
                      motion_copy_tol: float | None = None, guidance_scale: float | None = None, backward: bool = False,
                      temperature: float | None = None, num_clips: int | None = None, *,
                      _latent: bool = False) -> "FrameStream":
        """``extend``'s frames as they are made: a ``FrameStream`` of uint8 chunks (B, n, H, W, 3), the input's first
        (a file decoded chunk by chunk), then every window's new frames. Memory holds one window and one chunk of the
        input whatever the video's length; ``mfvideo.io.save_video`` writes a stream as it comes (``mfvideo-extend``
        does). Arguments as in ``extend``: they are checked, and the context decoded, encoded and read, when it is
        called; the network runs as the stream is consumed. Its ``class_labels`` are ``extend``'s, once the first
        window is made. ``backward``: the new frames first, all made before the first chunk is given, then the
        input (streamed) or its context frames."""
        from .inputs import expand_home, file_rate, first_frames, frame_count, iter_clip, load_clip

        video = expand_home(video)  # "~/clip.mp4": the home folder's, as in a shell
        if backward and self.codec.temporal_factor != 1:
            raise NotImplementedError("backward extension needs a per-frame codec (identity, image_vae or dc_ae): a "
                                      "causal video VAE's latents run forwards in time")
        guidance = self._guidance = self.resolve_guidance_scale(guidance_scale)
        how = self.resolve_sampler(sampler, steps)
        s = self.resolve_context_noise(context_noise)
        temp = self.resolve_temperature(temperature, how)
        copy = self.resolve_motion_copy(motion_copy, motion_copy_tol)
        if (num_new_frames := _whole(num_new_frames, "num_new_frames")) < 1:
            raise ValueError(f"num_new_frames must be >= 1, got {num_new_frames}")
        k_lat = grow_to = self._context_latents(context_frames)
        k_pix = self._pixel_frames(k_lat)
        stride, rate = file_rate(video, self.cfg.data)  # a file is read at the model's frame rate
        if context_frames is None and 0 < (given := frame_count(video, stride)) < k_pix:  # a short input is all context,
            k_lat = self._context_latents(given)  # growing to the default with the frames made (image to video)
            k_pix = self._pixel_frames(k_lat)
            most = self._pixel_frames(grow_to)
            log.info("the input has %d frame(s), fewer than the default %d context frames: the first window continues "
                     "%d, the later ones up to %d", given, most, k_pix, most)
        keep = self._frames_per_window(frames_per_window, k_lat)
        self._check_label_args(class_labels, infer_label)
        self._warn_without_context("an extension")
        # a file given whole is decoded once, as the stream goes, its last frames kept as the context; else the
        # frames are read now: (B, T, r, r, 3) uint8, a file's last k_pix only (decoded from near its end)
        lazy = isinstance(video, (str, Path)) and include_input and not _latent  # (latents: the context's only)
        if lazy:
            frames = None
        elif backward and include_input and not _latent:  # frames given whole
            frames = load_clip(video, self.resolution, stride=stride)
        elif backward:  # the first k_pix frames only, a file's decoded no further
            frames = first_frames(video, self.resolution, k_pix, stride)
        else:
            frames = load_clip(video, self.resolution, last=k_pix if _latent or not include_input else None,
                               stride=stride)
        if (n_in := frame_count(video, stride) if lazy else frames.shape[1]) < k_pix:
            at = f" at a step of {stride} (the model's frame rate)" if stride > 1 else ""
            raise ValueError(f"the input has {n_in} frame{'s' * (n_in != 1)}{at}, fewer than the {k_pix} context "
                             "frames requested")
        reps = self._clips_per_input(num_clips, n_given := 1 if lazy else frames.shape[0])
        g = self._generator(seed, generator, n_given * reps)

        def out(chunk):  # given frames (B, n, H, W, 3) -> each repeated for the reps clips made from it
            return chunk if reps == 1 else np.repeat(chunk, reps, axis=0)

        def prepare(given: np.ndarray):  # context latents (B * reps, C, k, h, w) and labels, off the given frames
            given = given[:, :k_pix] if backward else given[:, given.shape[1] - k_pix :]
            ctx = self.codec.encode_frames(given, self.cfg.data.channels)  # encoded and read once per given clip
            y = self._labels_for(ctx, class_labels, infer_label, reps)
            return ctx.repeat_interleave(reps, dim=0), y

        ctx, y = (None, None) if lazy and not backward else prepare(
            first_frames(video, self.resolution, k_pix, stride) if lazy else frames)
        state: dict = {}
        stream = StreamState(y if infer_label else None)  # what the chunks tell the FrameStream, not the stream

        def windows():
            return self._windows(ctx, int(num_new_frames), y, how, g, 0.0, s, hold_read=not reread_context,
                                 report_read=True, keep=keep, copy=copy, grow_to=grow_to, guidance=guidance,
                                 state=state, latent=_latent, backward=backward, temperature=temp)

        def chunks():
            nonlocal ctx, y
            if backward:  # the new frames, made latest first, then the input (or its context frames)
                if infer_label:
                    stream.labels = y
                made = []
                for chunk in windows():
                    made.append(chunk)
                    stream.on_made(chunk.shape[2 if _latent else 1])
                if not infer_label:
                    stream.labels = state["read"]
                yield from reversed(made)
                if lazy:
                    yield from map(out, iter_clip(video, self.resolution, stride))
                else:
                    yield ctx if _latent else out(frames)
                return
            if lazy:
                tail = None
                for chunk in iter_clip(video, self.resolution, stride):  # (1, n, r, r, 3)
                    yield out(chunk)
                    tail = chunk if tail is None else np.concatenate([tail, chunk], axis=1)[:, -k_pix:]
                ctx, y = prepare(tail)
            else:
                yield ctx if _latent else out(frames)
            if infer_label:
                stream.labels = y
            for i, chunk in enumerate(windows()):
                if i == 0 and not infer_label:
                    stream.labels = state["read"]
                yield chunk

        total = (n_in if include_input and not _latent else k_pix) + int(num_new_frames)
        return FrameStream(torch.no_grad()(chunks)(), rate or self.fps, num_frames=total, state=stream)

    def _gather(self, stream: FrameStream, output_type: str):
        """A stream's chunks as one clip batch: latents (B, C, T, h, w) for ``"latent"``, else uint8 (B, T, H, W, 3);
        a progress bar in frames where the clip takes more than one window (``_progress``)."""
        chunks, f = [], self.codec.temporal_factor
        total = stream.num_frames or 0
        with self._progress(total if total > self.window else 0) as bar:
            for chunk in stream:
                chunks.append(chunk)
                bar.update(min(chunk.shape[2] * f if output_type == "latent" else chunk.shape[1], bar.total - bar.n))
            bar.update(bar.total - bar.n)
        return torch.cat(chunks, dim=2) if output_type == "latent" else np.concatenate(chunks, axis=1)

    def _progress(self, total: int):
        """diffusers' progress bar (``set_progress_bar_config`` applies) over ``total`` units, shown only where stderr
        is a terminal unless the config says ``disable=False`` (tqdm's ``disable=None``), never for ``total`` 0 (one
        window: its call takes milliseconds) and on a rank other than the first of a process group."""
        from tqdm.auto import tqdm

        config = dict(getattr(self, "_progress_bar_config", None) or {})
        config.setdefault("disable", None if _rank_zero() else True)
        if not total:
            config["disable"] = True
        return tqdm(total=total, unit="frame", **config)

    def _context_latents(self, k_pix: int | None) -> int:
        """Context pixel frames -> context latent frames, within [1, latent window - 1]."""
        f, w = self.codec.temporal_factor, self.latent_window
        if w < 2:
            raise ValueError(f"a {self.window}-frame model (an image model) has no room for context frames: it makes "
                             f"single windows of {self.window} frame(s), it cannot continue a clip or slide past them")
        k_pix = None if k_pix is None else _whole(k_pix, "context_frames")
        k = max(1, w // 2) if k_pix is None else (k_pix - 1) // f + 1
        if k_pix is not None and k_pix < 1 or not 1 <= k < w:
            most = self._pixel_frames(w - 1)
            raise ValueError(f"context_frames must lie in [1, {most}] for a {self.window}-frame window, got {k_pix}")
        return k

    def _frames_per_window(self, n: int | None, k: int) -> int | None:
        """New pixel frames kept from each window (``frames_per_window``) -> new latent frames kept, within
        [1, latent window - k latent context frames]; None: every new frame of the window."""
        if n is None:
            return None
        f, w = self.codec.temporal_factor, self.latent_window
        most = f * (w - k)
        n = _whole(n, "frames_per_window")
        if n < 1 or n > most or n % f:
            kc = self._pixel_frames(k)
            where = f"with {kc} context frame{'s' * (kc != 1)} in a {self.window}-frame window"
            if f > 1:  # whole latent frames of a temporally compressing VAE
                allowed = ", ".join(str(f * i) for i in range(1, w - k + 1))
                raise ValueError(f"frames_per_window must be one of {allowed} (whole latent frames of the VAE's {f} "
                                 f"frames each) {where}, got {n}")
            raise ValueError(f"frames_per_window must lie in [1, {most}] {where}, got {n}")
        return n // f

    def _routes_labels(self, y) -> bool:
        """Whether labels ``y`` (B,) have labelled rows that ``_read_labelled`` routes through a class reader."""
        return getattr(self.transformer, "class_reader", None) is not None and y is not None and bool((y >= 0).any())

    def _read_labelled(self, noise, y, context, mask):
        """``_read_given`` where labelled rows take their class through the context reader: a model with a class
        reader reads the window as unlabelled and its reading's class becomes the given one (one-hot), so those rows
        run with the null label and the class enters from the middle block on, as a read one does. The labelled
        field carries the guidance folded in by training and redraws a context that already shows its class: on the
        bundled model a true label given that way made the new frames less legible than no label at all (accuracy
        at distance 8: 0.815 against 0.89), through the reader 0.915 (docs/usage.md). Returns (reading, read ids
        (-1 on labelled rows), the labels to run with)."""
        if not self._routes_labels(y):
            reading, read = self._read_given(noise, y, context, mask)
            return reading, read, y
        null = torch.full_like(y, -1)
        reading, read = self._read_given(noise, null, context, mask)
        given = torch.nn.functional.one_hot(y.clamp_min(0), reading.class_probs.shape[1]).to(reading.class_probs)
        reading = replace(reading, class_probs=torch.where((y >= 0)[:, None], given, reading.class_probs))
        return reading, None if bool((y >= 0).all()) else torch.where(y >= 0, -1, read), null

    def _windows(self, ctx, num_new, y, how, g, noise_first: float = 0.0, noise_next: float = 0.0,
                 hold_read: bool = False, report_read: bool = False, keep: int | None = None,
                 copy: tuple[int, float] | None = None, grow_to: int | None = None, guidance: float | None = None,
                 state: dict | None = None, latent: bool = False, backward: bool = False,
                 temperature: float = 1.0, canvas: MotionCanvas | None = None) -> Iterator[np.ndarray | torch.Tensor]:
        """Slide the window: ``ctx`` (B, C, k, h, w) latent frames are context, the rest new; one call per window.
        Yields every window's kept new frames, uint8 (B, n, H, W, 3), as it is made.
        The first window's context is noised to ``noise_first``, the next ones' (the model's own frames) to
        ``noise_next``. With ``report_read`` the model reads the first window's context (clean)
        (``STDiT.read_context``: its summary, and with a context reader the class, put in ``state["read"]`` as ids
        (B,), -1 on labelled rows, else None); with
        ``hold_read`` too, that reading holds for every window. ``keep`` (latent frames): every window is the full
        window but only its first ``keep`` new frames are kept, and the window slides by ``keep``; None: all of
        them (and with a per-frame codec the last window is cut to the frames still wanted, in whole temporal patches).

        ``copy`` (radius, tol): every window's new frames copied by ``motion_copy``, one ``MotionCanvas`` chain through
        all the windows' kept frames from the first window's last context frame (``canvas``: a chain already begun,
        that frame's), so that what a move takes out of the frame comes back as it was.

        ``grow_to`` (latent frames): a context shorter than this (an input shorter than the default context, a still
        image) grows with the frames made, window by window, up to it: a single given frame says nothing of motion,
        and every later window would otherwise have to guess it afresh from one frame.

        ``latent``: yield the kept new latents (B, C, n, h, w) undecoded instead. ``temperature``: every window's
        noise is the prior's times this.

        ``backward`` (per-frame codecs): ``ctx`` is the earliest frames and every window makes the frames before its
        context, the context last in the window as the model sees it. The loop runs in reversed time (its windows
        are turned round for the model and back), so chunks come latest first, each in time order.

        Only the current window's latents are kept; the output frames are appended as uint8. Per-frame codecs decode
        just the kept latents; a causal VAE decodes the whole window and keeps the pixel frames of the kept latents.
        """
        codec = self.codec
        f, w, k = codec.temporal_factor, self.latent_window, ctx.shape[2]
        state = {} if state is None else state
        made, reading = 0, None
        # the copy's chain, keyed by (frame, direction) as ``motion_copy`` keeps it; pos: ctx's first frame in the loop
        chains, pos = ({} if canvas is None else {(k - 1, 1): canvas}), 0

        def turn(x, dim: int = 2):  # reversed time <-> time (a tensor, or decoded uint8 frames), backward only
            if not backward:
                return x
            return x.flip(dim) if isinstance(x, torch.Tensor) else np.ascontiguousarray(np.flip(x, dim))

        ctx = turn(ctx)
        while made < num_new:
            self._guidance = guidance  # (a stream may be consumed while the pipeline serves another call)
            new = w - k if f > 1 or keep is not None else min(w - k, num_new - made)
            new += -(k + new) % self.cfg.model.temporal_patch_size  # whole patches: w is made of them (trained so)
            kept = new if keep is None else min(keep, new)  # (a growing context leaves fewer new frames)
            noise = self._noise(ctx.shape[0], self._pixel_frames(k + new), g, temperature)  # (B, C, k + new, h, w)
            context = torch.cat([ctx, torch.zeros_like(noise[:, :, k:])], dim=2)
            mask = torch.zeros(ctx.shape[0], k + new, dtype=torch.bool, device=self.device)
            mask[:, :k] = True
            level = noise_first if made == 0 else noise_next
            if report_read and made == 0:  # off the clean context, also where the window then noises it
                if hold_read:  # what the model reads off the given frames; a given label enters through the reader
                    reading, state["read"], y = self._read_labelled(turn(noise), y, turn(context), turn(mask, 1))
                else:
                    reading, state["read"] = self._read_given(turn(noise), y, turn(context), turn(mask, 1))
            held = reading if hold_read else None
            window = turn(self._sample(turn(noise), y, how, turn(context), turn(mask, 1), level, held, g))
            # window: (B, C, k + new, h, w), the context first (in reversed time, backward)
            if copy is not None:  # new frames that the chain so far, moved, explains become it
                upto = k + (kept if f == 1 else new)  # (a causal VAE decodes the whole window: all of it copied)
                window[:, :, :upto] = _motion_copy(window[:, :, :upto], [j < k for j in range(upto)], *copy,
                                                   chains=chains, start=pos, keep=range(pos + k, pos + k + kept))[0]
            if latent:  # the kept latents; a causal VAE's latent frame past the first holds f pixel frames
                yield turn(window[:, :, k : k + min(kept, -(-(num_new - made) // f))])
                made += f * kept
            elif f == 1:
                pix = codec.decode_frames(window[:, :, k : k + kept])  # (B, kept, H, W, 3)
            else:  # latent j >= 1 holds pixel frames f (j - 1) + 1 .. f j
                pix = codec.decode_frames(window)[:, self._pixel_frames(k) : self._pixel_frames(k + kept)]
            if not latent:
                yield turn(pix[:, : num_new - made], 1)
                made += pix.shape[1]
            k_next = k if grow_to is None else max(k, min(grow_to, k + kept))
            ctx = window[:, :, k + kept - k_next : k + kept]  # the latest frames: the window slides by the kept frames
            pos += k + kept - k_next
            k = k_next

    @torch.no_grad()
    def condition(self, frames, frame_indices, num_frames: int | None = None, class_labels=None,
                  seed: int | None = None, steps: int | None = None, sampler: str | None = None,
                  generator: torch.Generator | None = None, output_type: str = "np", return_dict: bool = True,
                  infer_label: bool = False, motion_copy: int | None = None, motion_copy_tol: float | None = None,
                  guidance_scale: float | None = None, latents: torch.Tensor | None = None,
                  temperature: float | None = None, num_clips: int | None = None):
        """Given frames at ``frame_indices`` (e.g. first and last: interpolation), the rest made; ``infer_label`` and
        ``motion_copy`` as in ``extend`` (the copy runs outwards from every given frame: an interpolation's frames from
        both keyframes towards the middle, each side one ``MotionCanvas`` chain across windows); ``guidance_scale``, ``temperature`` as in ``generate``. ``num_frames``
        (default: the window) below the window are the first frames of a full window, as in ``generate``; a clip no
        longer than the window is one call. A longer clip is filled window by window (``fill_plan``), each window with
        every frame known inside it as context: a gap between given frames from both sides towards its middle, then one
        window where the two sides meet; frames before the first given one backwards, after the last forwards, as
        ``extend`` slides, holding what their first window reads off the given frames as ``extend`` does (the bundled
        model's 14 in-betweens of held-out keyframes: class accuracy 0.90, one stretched 16-frame window 0.87; 28 frames
        before 4 given: 0.94; docs/usage.md).
        ``latents``: the first window's noise (B, C, T, h, w), T the latent frames of the window (default: drawn
        from ``generator`` / ``seed``, as every later window's; the given frames' places are ignored);
        ``output_type="latent"``: the clip's latents, the given frames' encoded in their places. ``num_clips``: as in
        ``extend``, each given set of frames filled ``num_clips / B`` times."""
        from .fill import extension_side, fill_plan
        from .inputs import expand_home, load_clip

        frames = expand_home(frames)
        _check_output_type(output_type)
        self._guidance = self.resolve_guidance_scale(guidance_scale)
        how = self.resolve_sampler(sampler, steps)
        temp = self.resolve_temperature(temperature, how)
        copy = self.resolve_motion_copy(motion_copy, motion_copy_tol)
        if self.codec.temporal_factor != 1:
            raise NotImplementedError("conditioning on frames at arbitrary positions needs a per-frame codec "
                                      "(identity, image_vae or dc_ae): a causal VAE's latents mix several frames")
        num_frames = self.window if num_frames is None else _whole(num_frames, "num_frames")
        given = load_clip(frames, self.resolution)  # (B, K, H, W, 3)
        idx = [_whole(i, "frame indices") for i in frame_indices]  # 0.5 was read as frame 0
        if len(idx) != given.shape[1]:
            raise ValueError(f"{given.shape[1]} frames given for {len(idx)} frame indices")
        if any(not 0 <= i < num_frames for i in idx) or len(set(idx)) != len(idx):
            raise ValueError(f"frame indices must be distinct and lie in [0, {num_frames - 1}], got {idx}")
        self._warn_without_context("frames made around given ones")
        reps = self._clips_per_input(num_clips, given.shape[0])
        B, W = given.shape[0] * reps, self.window
        T = max(num_frames, W)  # a shorter clip is the start of a full window, as in `generate`
        g = self._generator(seed, generator, B)
        first = None if latents is None else self._given_noise(latents, W, B, temp)
        encoded = self.codec.encode_frames(given, self.cfg.data.channels)  # (B / reps, C, K, h, w)
        in_order = sorted(range(len(idx)), key=idx.__getitem__)  # the given frames in time order
        y = self._labels_for(encoded[:, :, in_order], class_labels, infer_label, reps)
        given = np.repeat(given, reps, axis=0) if reps > 1 else given
        clip = torch.zeros(B, *self._latent_shape(T), device=self.device)  # (B, C, T, h, w): known frames so far
        clip[:, :, idx] = encoded.repeat_interleave(reps, dim=0)
        known = torch.zeros(T, dtype=torch.bool, device=self.device)
        known[idx] = True
        plan = fill_plan(known[:num_frames].tolist() + [False] * (T - num_frames), W)
        held: dict[str, tuple] = {}  # "before" / "after" the given frames -> (reading, labels to run with)
        chains: dict[tuple[int, int], MotionCanvas] = {}  # the copy's chains across windows (``motion_copy``)
        with self._progress(sum(len(make) for _, make in plan) if len(plan) > 1 else 0) as bar:
            for n, (start, make) in enumerate(plan):
                noise = first if n == 0 and first is not None else self._noise(B, W, g, temp)  # (B, C, W, h, w)
                mask = known[start : start + W].repeat(B, 1)  # (B, W)
                context = clip[:, :, start : start + W] * mask[:, None, :, None, None]
                # frames before the first given one or after the last are an extension: what its first window reads
                # off the given frames holds for the rest, as in `extend`; a gap's windows read their own context
                side = None if len(plan) == 1 else extension_side(make, idx)
                if side in held:
                    reading, y_net = held[side]
                else:
                    reading, y_net = None, y
                    if self._routes_labels(y):  # a given label enters through the reader
                        reading, _, y_net = self._read_labelled(noise, y, context, mask)
                    elif side is not None:
                        reading, _ = self._read_given(noise, y, context, mask)
                    if side is not None:
                        held[side] = reading, y_net
                window = self._sample(noise, y_net, how, context=context, mask=mask, reading=reading, generator=g)
                if copy is not None:
                    window, _ = _motion_copy(window, mask[0], *copy, chains=chains, start=start, keep=make)
                made = torch.tensor(make, device=self.device)
                clip[:, :, made] = window[:, :, made - start]
                known[made] = True
                bar.update(len(make))
        labels = y if infer_label else None
        if output_type == "latent":  # the given frames' latents in their places, exactly
            return self._output(clip[:, :, :num_frames], output_type, return_dict, labels)
        frames_out = self.codec.decode_frames(clip[:, :, :num_frames])  # (B, num_frames, H, W, 3)
        frames_out[:, idx] = given  # the given frames are returned exactly as given
        return self._output(frames_out, output_type, return_dict, labels)


def _motion_copy_args(radius, tol) -> tuple[int, float] | None:
    """``motion_copy`` / ``motion_copy_tol`` of ``extend``, ``generate``, ``condition`` -> (radius, tol), or None."""
    tol = MOTION_COPY_TOL if tol is None else tol
    if isinstance(radius, bool):
        raise ValueError(f"motion_copy is a radius in latent pixels (e.g. 4; 0: off), not a switch: got {radius}")
    radius = _whole(radius, "motion_copy")  # the API's one check of whole numbers (1.5 and "4" refused)
    if radius < 0 or not float(tol) >= 0:
        raise ValueError(f"motion_copy must be a whole number of latent pixels >= 0 (0: off) and motion_copy_tol "
                         f">= 0, got {radius} and {tol}")
    return (radius, float(tol)) if radius else None


def _whole(value, name: str) -> int:
    """A count, index, id or seed given as a number: whole (3, numpy's 3, 3.0, a one-element tensor), never a
    fraction, a bool or a string, which ``int()`` would have turned into another number without a word."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if isinstance(value, numbers.Integral):
        return int(value)
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None
    if not f.is_integer() or isinstance(getattr(value, "dtype", None), torch.dtype) and value.dtype == torch.bool:
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(f)


def _rank_zero() -> bool:
    """Whether this process is the first of its process group (or in none): where progress is shown."""
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or \
        torch.distributed.get_rank() == 0


def _check_output_type(output_type: str, latent: bool = True) -> None:
    """An ``output_type`` the pipeline gives ("latent" too, with ``latent``), checked before any work."""
    known = (*OUTPUT_TYPES, "latent") if latent else OUTPUT_TYPES
    if output_type not in known:
        raise ValueError(f"unknown output_type {output_type!r}; use one of {', '.join(known)}")
