"""Typed configuration: a dataclass schema, YAML diffs on top of it, and checked ``key=value`` overrides.

``load_config(path, overrides)`` = OmegaConf.merge(schema, yaml, dotlist). An unknown or mistyped key is a
``ConfigError`` whose one-line message names the key and where it came from.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

# The ``method`` section is the MeanFlow dataclass itself: its fields are the section's keys, with one owner.
from .method.meanflow import MeanFlow as MethodConfig


class ConfigError(ValueError):
    """A user mistake in a config file or override: printed as one line, never a traceback."""


@dataclass
class ModelConfig:
    """The STDiT. ``size`` names a registry entry (e.g. STDiT-S/2); fields set here override it."""

    size: Optional[str] = "STDiT-S/2"
    hidden_size: Optional[int] = None
    depth: Optional[int] = None
    num_heads: Optional[int] = None
    patch_size: Optional[int] = None
    temporal_patch_size: int = 1
    mlp_ratio: float = 4.0
    in_channels: Optional[int] = None  # None: the latent codec's channels
    num_classes: Optional[int] = None  # None: the dataset's classes (0 = unconditional)
    temporal: bool = True
    qk_norm: bool = False
    attn_backend: str = "sdpa"
    attention: str = "factorised"  # factorised (space, then time) | spacetime (space, then the whole clip) | joint
    time_scale: float = 1.0
    context_summary: bool = False  # pooled context-frame tokens join the conditioning (ContextSummary)
    clip_attention: bool = False  # factorised + a zero-gated sub-layer over the whole clip in every block
    context_reader: bool = False  # unlabelled rows with context read the class off it (ContextReader)
    reader_pool: str = "mean"  # mean | attention: how the reader pools the context tokens (ContextReader)
    context_reference: bool = False  # each frame's input gains its nearest context frame (ContextReference)
    clip_rope: bool = False  # 3-D rotary positions in attention over the whole clip (clip_attention, spacetime, joint)
    refiner_channels: int = 0  # a residual 3-D conv stack on the output at the latent grid (ConvRefiner); 0: none
    refiner_layers: int = 3
    copy_radius: int = 0  # new frames may copy from the nearest context frame through predicted kernels (KernelCopy)
    copy_kernel: str = "softmax"  # softmax: free taps per axis | bilinear: a predicted offset per axis (KernelCopy)
    prediction: str = "u"  # u: the output is the average velocity | x: the denoised field z - t u (pMF; pixel space)
    guidance_embed: bool = False  # the guidance scale is a condition (method.cfg_scale_range; chosen at sampling)
    init_from: Optional[str] = None  # a checkpoint to start from: an image model, or a video model gaining new parts


@dataclass
class DataConfig:
    """Where training clips come from. kind: moving_digits | image_folder | video_folder | latent_cache."""

    kind: str = "moving_digits"
    root: Optional[str] = None  # folder (image_folder, video_folder, latent_cache)
    manifest: Optional[str] = None  # CSV or JSONL of path[,label] (video_folder)
    split: str = "train"
    resolution: int = 32  # frame height = width in pixels
    channels: int = 3  # pixel channels (moving digits may use 1)
    num_frames: int = 8  # frames per clip (1 = images)
    frame_stride: int = 1
    target_fps: Optional[float] = None  # overrides frame_stride when set
    hflip: bool = False
    # moving digits
    num_clips: int = 20000
    num_digits: int = 1
    digit_size: int = 16
    speed: float = 1.5
    seed: int = 0
    max_bad_fraction: float = 0.5  # a folder with more broken files than this stops the run
    class_names: Optional[str] = None  # file naming the class folders (ImageNet's LOC_synset_mapping.txt, or JSON)


@dataclass
class LatentsConfig:
    """The codec between pixels and latents. kind: identity | image_vae | dc_ae | wan | cogvideox | hunyuan | ltx."""

    kind: str = "identity"
    path: Optional[str] = None  # local diffusers VAE folder
    dtype: str = "float32"
    sample_posterior: bool = False


@dataclass
class TrainConfig:
    output_dir: str = "runs/default"
    seed: int = 0
    batch_size: int = 32  # per process
    lr: float = 1e-4
    lr_scale: Dict[str, float] = field(default_factory=dict)  # parameter-name prefix -> lr factor (longest wins),
    # e.g. {reference_embedder: 30}: a zero-started part added to a trained model grows at a pace of its own
    betas: List[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: str = "constant"  # diffusers' get_scheduler: constant, linear, cosine, cosine_with_restarts, polynomial
    grad_clip: Optional[float] = None
    grad_accum: int = 1
    max_steps: int = 1000
    mixed_precision: str = "no"  # no | bf16 (fp16 is refused: public MeanFlow ports hit NaNs with it)
    tf32: bool = True  # CUDA: float32 matmuls and convolutions on TF32 tensor cores (DiT's setting; JAX on a TPU
    # multiplies float32 in bf16 passes by default); false for true float32. No effect on CPU
    ema_decays: List[float] = field(default_factory=lambda: [0.9999])
    ema_warmup: bool = False  # decay min(d, (1 + n) / (10 + n)): for short runs
    log_every: int = 10
    sample_every: int = 0  # 0: never
    checkpoint_every: int = 500
    keep_last: int = 3
    resume: Optional[str] = None  # None | auto | a checkpoint folder
    max_nonfinite: int = 10  # consecutive skipped steps before stopping
    num_workers: int = 0
    context_masks: Dict[str, float] = field(default_factory=lambda: {"none": 1.0})
    max_context_frames: Optional[int] = None  # None: half the clip
    trackers: List[str] = field(default_factory=lambda: ["tensorboard"])  # accelerate trackers: tensorboard, wandb, ...
    compile: bool = False
    cuda_graph_jvp: bool = False  # the detached JVP and the guidance's no-grad forward replayed from CUDA graphs
    # (mfvideo/method/jvp_graph.py): the host-bound part of a GPU step; ignored (with a warning) without CUDA
    compile_jvp: bool = False  # the same two calls through torch.compile (torch.func.jvp, kernels fused; CPU or GPU,
    # with cuda_graph_jvp the compiled calls are captured): one compilation per padded row count, then faster calls
    distributed: str = "ddp"  # ddp | fsdp (FSDP2: parameters, gradients and optimizer state sharded over processes)
    teacher: Optional[str] = None  # a frozen model (pipeline or checkpoint folder) whose multi-step jump the
    # method.split_consistency rows regress on; None: the network being trained
    activation_checkpointing: bool = False  # recompute each block in the backward: activations of one block at a time


@dataclass
class SampleConfig:
    steps: int = 1
    num_frames: Optional[int] = None  # None: the training clip length
    fps: Optional[float] = None  # frame rate of the clips written; None: data.target_fps, else 8 (sample_fps)
    num_samples: int = 8
    seed: int = 0
    context_noise: float = 0.0  # noise level of the model's own frames when they are the next window's context
    # A model trained with method.cfg_scale_range: its default guidance scale (None: the range's geometric middle)
    guidance_scale: Optional[float] = None
    # The noise's standard deviation, as a share of the prior's (Glow's temperature), of windows made in one network
    # call: below 1 the one-step jump starts nearer the prior's centre, where it draws fewer broken frames, at some
    # variety. Windows of several calls start from the prior as trained (their later calls would see a noise level
    # off the path). The pipeline's ``temperature=`` overrides it for every window (docs/usage.md "Temperature").
    one_step_temperature: float = 1.0
    # The default ``motion_copy`` radius (latent pixels; 0: off) of every call (``generate``, ``extend``,
    # ``condition``, ``pipe(...)`` and their commands): new frames a move of the frame before them explains become that
    # moved frame, the given content kept; a window made from noise is copied outwards from the frame its other frames
    # are best explained by. For models whose content moves as a whole (the bundled digits: 4). docs/usage.md
    # "Motion-compensated copy".
    motion_copy: int = 0


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    latents: LatentsConfig = field(default_factory=LatentsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


def _flat(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}: dotted keys of a command line arrive as nested mappings."""
    out = {}
    for k, v in dict(tree).items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


# Mappings of the schema (name -> weight): given whole, in a YAML file or as ``key={...}``, they are the whole
# mapping; OmegaConf's merge would have kept the schema's entries beside them (``context_masks: {first: 1}`` trained
# half its rows as generation, the default's ``none: 1.0`` kept). ``key.entry=value`` still sets one entry.
MAPPINGS = ("train.context_masks", "train.lr_scale")


def _merge(base, other, source: str, whole: tuple = MAPPINGS):
    """``other`` merged onto ``base``; the mappings of ``whole`` that ``other`` gives replace ``base``'s."""
    for key in whole:
        if OmegaConf.select(other, key, default=None) is not None and OmegaConf.select(base, key) is not None:
            base = base.copy()
            OmegaConf.update(base, key, {}, merge=False)
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or ""
        reason = str(e).splitlines()[0]
        if re.search(r"[{,]\s*[\w.]+:[^\s/]", source):  # {none:1.0} is YAML's key 'none:1.0' with no value
            reason += " (YAML needs a space after each colon of a mapping: {none: 1.0, first: 0.5})"
        raise ConfigError(f"{source}: bad key {key!r}: {reason}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> Config:
    """Schema defaults <- YAML file <- ``key=value`` overrides; returns a typed ``Config``."""
    cfg = OmegaConf.structured(Config)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            text = OmegaConf.load(path)  # yaml.safe_load underneath: no code runs from a config
        except Exception as e:
            raise ConfigError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
        cfg = _merge(cfg, text, str(path))
    obj = _to_object(_overridden(cfg, overrides), str(path or "config") + (" with its overrides" if overrides else ""))
    _expand_home(obj)
    validate(obj)
    return obj


def _overridden(cfg, overrides):
    """An OmegaConf config with ``key=value`` overrides merged in, each checked against the schema."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        whole = tuple(k for k in MAPPINGS if item.split("=", 1)[0].strip() == k)  # key={...}, not key.entry=v
        cfg = _merge(cfg, OmegaConf.from_dotlist([item]), f"override {item!r}", whole)
    return cfg


def with_overrides(cfg: Config, overrides: list[str] | tuple) -> Config:
    """A typed config with ``key=value`` overrides applied, checked as ``load_config`` checks them."""
    obj = _to_object(_overridden(OmegaConf.structured(cfg), overrides), "config")
    _expand_home(obj)
    validate(obj)
    return obj


PATH_KEYS = ("model.init_from", "data.root", "data.manifest", "data.class_names", "latents.path", "train.output_dir",
             "train.resume", "train.teacher")


def _expand_home(cfg: Config) -> None:
    """``~/…`` in a path a user writes (YAML or override) is their home folder, as in a shell; the resolved config
    saved with a run holds the expanded path."""
    for key in PATH_KEYS:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if isinstance(value, str) and value.startswith("~"):
            setattr(getattr(cfg, section), name, os.path.expanduser(value))


def _to_object(cfg, source: str) -> "Config":
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: {str(e).splitlines()[0]}") from None
    except ValueError as e:  # MeanFlow's own checks of its values (the method section is the dataclass itself)
        raise ConfigError(f"{source}: method: {str(e).splitlines()[0]}") from None


def _at_least(low):
    return lambda v: v is None or (isinstance(v, (int, float)) and math.isfinite(v) and v >= low), f">= {low}"


def _positive():
    return lambda v: v is None or (isinstance(v, (int, float)) and math.isfinite(v) and v > 0), "a finite number > 0"


def _unit(closed_right: bool = False):
    if closed_right:
        return lambda v: v is None or 0.0 <= v <= 1.0, "in [0, 1]"
    return lambda v: v is None or 0.0 <= v < 1.0, "in [0, 1)"


# (key, check, what it must be): the value ranges of the schema, checked once when a config is loaded.
RANGES = [
    ("model.hidden_size", *_at_least(1)), ("model.depth", *_at_least(1)), ("model.num_heads", *_at_least(1)),
    ("model.patch_size", *_at_least(1)), ("model.temporal_patch_size", *_at_least(1)),
    ("model.mlp_ratio", *_positive()), ("model.time_scale", *_positive()),
    ("model.in_channels", *_at_least(1)), ("model.num_classes", *_at_least(0)),
    ("method.time_std", *_positive()), ("method.adaptive_p", *_at_least(0)), ("method.adaptive_eps", *_at_least(0)),
    ("data.resolution", *_at_least(1)), ("data.channels", *_at_least(1)), ("data.num_frames", *_at_least(1)),
    ("data.frame_stride", *_at_least(1)), ("data.target_fps", *_positive()), ("data.num_clips", *_at_least(1)),
    ("data.num_digits", *_at_least(1)), ("data.digit_size", *_at_least(1)), ("data.speed", *_at_least(0)),
    ("data.max_bad_fraction", *_unit(closed_right=True)),
    ("train.batch_size", *_at_least(1)), ("train.grad_accum", *_at_least(1)), ("train.lr", *_positive()),
    ("train.weight_decay", *_at_least(0)), ("train.warmup_steps", *_at_least(0)), ("train.grad_clip", *_positive()),
    ("train.max_steps", *_at_least(1)), ("train.log_every", *_at_least(1)), ("train.sample_every", *_at_least(0)),
    ("train.checkpoint_every", *_at_least(0)), ("train.keep_last", *_at_least(1)),
    ("train.max_nonfinite", *_at_least(1)), ("train.num_workers", *_at_least(0)),
    ("train.max_context_frames", *_at_least(1)),
    ("sample.steps", *_at_least(1)), ("sample.num_frames", *_at_least(1)), ("sample.fps", *_positive()),
    ("sample.num_samples", *_at_least(1)), ("sample.context_noise", *_unit()),
    ("sample.one_step_temperature", *_positive()), ("sample.motion_copy", *_at_least(0)),
]


def _choices() -> list[tuple[str, tuple]]:
    """(key, its values) of the schema's named choices, each list owned by the module that reads the key."""
    from .latents.vae import DTYPES, KINDS
    from .models.attention import BACKENDS
    from .models.copy import COPY_KERNELS
    from .models.stdit import ATTENTION_LAYOUTS, PREDICTIONS, READER_POOLS

    return [("model.attn_backend", tuple(BACKENDS)), ("model.attention", tuple(ATTENTION_LAYOUTS)),
            ("model.prediction", PREDICTIONS), ("model.copy_kernel", tuple(COPY_KERNELS)),
            ("model.reader_pool", READER_POOLS), ("latents.kind", KINDS), ("latents.dtype", tuple(DTYPES))]


# accelerate's trackers by name -> the package each needs ("all": every one installed; accelerate's LoggerType)
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet_ml", "aim": "aim",
            "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio", "all": None}


def validate(cfg: Config) -> None:
    """Value ranges and cross-field rules; a violation is a ``ConfigError`` naming the key and the value."""
    for key, ok, what in RANGES:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if not ok(value):
            raise ConfigError(f"{key} must be {what}, got {value!r}")
    for key, choices in _choices():
        section, name = key.split(".")
        if (value := getattr(getattr(cfg, section), name)) not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
    unknown = [t for t in cfg.train.trackers if t not in TRACKERS]  # a misspelt one trained without its logging
    if unknown:
        raise ConfigError(f"train.trackers: unknown tracker {unknown[0]!r}; known: {', '.join(TRACKERS)}")
    if cfg.data.channels not in (1, 3):
        raise ConfigError(f"data.channels must be 1 (grey) or 3 (RGB), got {cfg.data.channels!r}")
    if cfg.data.channels == 1 and cfg.latents.kind != "identity":
        raise ConfigError(f"data.channels=1 with latents.kind={cfg.latents.kind}: a VAE encodes RGB frames "
                          "(data.channels=3), grey pixels need latents.kind=identity")
    for d in cfg.train.ema_decays:
        if not 0.0 <= d < 1.0:
            raise ConfigError(f"train.ema_decays must lie in [0, 1), got {d!r}")
    if not cfg.train.ema_decays:
        raise ConfigError("train.ema_decays must hold at least one decay")
    cfg.train.lr_scale = _flat(cfg.train.lr_scale)  # train.lr_scale.final_layer.linear=... arrives nested
    bad = [k for k, f in cfg.train.lr_scale.items() if not (isinstance(f, (int, float)) and math.isfinite(f) and f > 0)]
    if bad:
        raise ConfigError(f"train.lr_scale.{bad[0]} must be a positive number, got {cfg.train.lr_scale[bad[0]]!r}")
    if len(cfg.train.betas) != 2 or not all(0.0 <= b < 1.0 for b in cfg.train.betas):
        raise ConfigError(f"train.betas must be two numbers in [0, 1), got {list(cfg.train.betas)}")
    from .method.masks import KINDS

    masks = cfg.train.context_masks
    unknown = sorted(set(masks) - set(KINDS))
    if unknown:
        raise ConfigError(f"train.context_masks: unknown kind {unknown[0]!r}; known: {', '.join(KINDS)}")
    if any(not (math.isfinite(w) and w >= 0) for w in masks.values()) or sum(masks.values()) <= 0:
        raise ConfigError(f"train.context_masks weights must be >= 0 with a positive sum, got {dict(masks)}")
    if cfg.model.clip_attention and not (cfg.model.temporal and cfg.model.attention == "factorised"):
        raise ConfigError(f"model.clip_attention needs model.attention=factorised and a video model, "
                          f"got attention={cfg.model.attention!r}, temporal={cfg.model.temporal}")
    if cfg.model.clip_rope and not (cfg.model.temporal and (cfg.model.clip_attention
                                                           or cfg.model.attention != "factorised")):
        raise ConfigError("model.clip_rope needs attention over the whole clip: model.clip_attention=true or "
                          f"model.attention=spacetime|joint, got attention={cfg.model.attention!r}, "
                          f"clip_attention={cfg.model.clip_attention}")
    if cfg.model.context_reference and (not cfg.model.temporal or cfg.data.num_frames == 1):
        raise ConfigError("model.context_reference gives each frame its nearest context frame: it needs a video model "
                          f"(model.temporal={cfg.model.temporal}, data.num_frames={cfg.data.num_frames})")
    if cfg.data.kind == "moving_digits" and cfg.data.digit_size > cfg.data.resolution:
        raise ConfigError(f"data.digit_size {cfg.data.digit_size} exceeds data.resolution {cfg.data.resolution}")
    if cfg.train.distributed not in ("ddp", "fsdp"):
        raise ConfigError(f"train.distributed must be ddp or fsdp, got {cfg.train.distributed!r}")
    schedules = ("constant", "linear", "cosine", "cosine_with_restarts", "polynomial")
    if cfg.train.lr_schedule not in schedules:
        raise ConfigError(f"train.lr_schedule must be one of {', '.join(schedules)}, got {cfg.train.lr_schedule!r}")
    if cfg.train.mixed_precision not in ("no", "bf16", "fp16"):
        raise ConfigError(f"train.mixed_precision must be no or bf16, got {cfg.train.mixed_precision!r}")
    if cfg.train.mixed_precision == "fp16":
        raise ConfigError("train.mixed_precision=fp16 is refused: MeanFlow's JVP overflows in fp16; use bf16")
    if cfg.data.num_frames < 1:
        raise ConfigError(f"data.num_frames must be >= 1, got {cfg.data.num_frames}")
    if cfg.data.kind == "image_folder" and cfg.data.num_frames != 1:  # it trained on one-frame clips, saved as T-frame
        raise ConfigError(f"data.kind=image_folder gives single images: set data.num_frames=1 (an image model), got "
                          f"{cfg.data.num_frames}; clips come from data.kind=video_folder")
    if cfg.method.split_own_weight and cfg.method.splits and not cfg.train.teacher:
        raise ConfigError("method.split_own_weight needs a frozen train.teacher: weighted by its own loss, the "
                          "network's own two-step target runs away with it")
    if cfg.train.distributed == "fsdp" and cfg.method.splits:
        raise ConfigError("method.split_consistency / split_context under train.distributed=fsdp: a one-step row's "
                          "forward with grad runs only on the processes that drew one, and FSDP's collectives then "
                          "differ between them (a hang, or gloo's mismatch); use train.distributed=ddp")
    for key in ("cuda_graph_jvp", "compile_jvp"):
        if getattr(cfg.train, key) and (cfg.method.jvp_mode != "detached" or cfg.train.distributed == "fsdp"):
            raise ConfigError(f"train.{key} runs the detached JVP of an unsharded model apart: it needs "
                              f"method.jvp_mode=detached and train.distributed=ddp, got {cfg.method.jvp_mode!r}, "
                              f"{cfg.train.distributed!r}")
    if cfg.method.copy_loss and not cfg.model.copy_radius:
        raise ConfigError(f"method.copy_loss={cfg.method.copy_loss} trains a copy path's kernels: it needs "
                          "model.copy_radius >= 1")
    if (cfg.method.cfg_scale_range is not None) != cfg.model.guidance_embed:
        raise ConfigError("method.cfg_scale_range (the guidance scale drawn per row) and model.guidance_embed (the "
                          "network's input for it) go together: set both or neither, got "
                          f"cfg_scale_range={cfg.method.cfg_scale_range}, guidance_embed={cfg.model.guidance_embed}")
    if cfg.method.cfg_scale_range is not None and (cfg.train.cuda_graph_jvp or cfg.train.compile_jvp):
        raise ConfigError("train.cuda_graph_jvp / compile_jvp take no guidance scale: with method.cfg_scale_range "
                          "the JVP runs eagerly")
    if cfg.sample.guidance_scale is not None and not cfg.model.guidance_embed:
        raise ConfigError(f"sample.guidance_scale={cfg.sample.guidance_scale}: this model takes no guidance scale "
                          "(model.guidance_embed is off; its guidance, if any, is folded in by method.cfg_kappa)")
    if cfg.sample.guidance_scale is not None and cfg.sample.guidance_scale < 1:
        raise ConfigError(f"sample.guidance_scale must be >= 1 (1: unguided), got {cfg.sample.guidance_scale}")
    if cfg.train.teacher and not cfg.method.splits:
        raise ConfigError("train.teacher is only used by method.split_consistency / split_context, which are 0")
    if cfg.train.batch_size < 1 or cfg.train.grad_accum < 1:
        raise ConfigError("train.batch_size and train.grad_accum must be >= 1")


def sample_fps(cfg: Config) -> float:
    """The frame rate generated clips are written at: ``sample.fps``, else the rate the training clips were taken at
    (``data.target_fps``), else 8."""
    return float(cfg.sample.fps or cfg.data.target_fps or 8.0)


def trains_context(cfg: Config) -> bool:
    """Whether the model learns to continue given frames: a video model (``data.num_frames`` > 1) trained with
    context masks other than ``none`` (``train.context_masks``). One trained on ``none`` alone draws clips of its
    window from noise, and its extensions, interpolations and clips past the window ignore the given frames."""
    return cfg.data.num_frames > 1 and any(k != "none" and w > 0 for k, w in cfg.train.context_masks.items())


NO_CONTEXT = "trained without context frames (train.context_masks holds only 'none')"


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def upgrade_saved(d: dict) -> dict:
    """Saved configs of earlier releases: ``train.tensorboard: bool`` became ``train.trackers``."""
    train = d.get("train")
    if isinstance(train, dict) and "tensorboard" in train:
        train = dict(train)
        train.setdefault("trackers", ["tensorboard"] if train.pop("tensorboard") else [])
        d = {**d, "train": train}
    return d


def from_dict(d: dict, source: str = "checkpoint") -> Config:
    """Rebuild a typed config from a saved dict (e.g. the config.yaml inside a checkpoint)."""
    d = upgrade_saved(d) if isinstance(d, dict) else d
    cfg = _merge(OmegaConf.structured(Config), OmegaConf.create(d), source)
    obj = _to_object(cfg, source)
    try:
        validate(obj)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return obj
