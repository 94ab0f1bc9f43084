"""STDiT: a spatio-temporal DiT for latents (B, C, T, H, W), with a choice of attention layouts.

``attention``:
- ``"factorised"``: each block is spatial self-attention inside every frame, then a temporal sub-layer attending
  across frames at each spatial position, then the MLP;
- ``"spacetime"``: the same, but the temporal sub-layer attends over every token of every frame (T x H x W), so a new
  frame reaches every context token directly instead of through patches at its own position;
- ``"joint"``: one self-attention over all T x H x W tokens per block, no separate spatial attention.
With ``clip_attention`` (factorised only) every block gains a third, zero-gated sub-layer over every token of the clip
after the temporal one: a moving object's new frames reach the context where it was, while the per-position temporal
sub-layer stays as it is, so a trained factorised model gains it without changing its function. With ``clip_rope``
every attention over the whole clip (the clip sub-layer, spacetime's temporal sub-layer, joint attention) rotates its
queries and keys by the tokens' (frame, row, column) (3-D RoPE, ``embeddings.rope_3d``), so its scores depend on
the offset between two tokens: "the same content one patch over, one frame back" is one fixed pattern for every
position, where the additive sin-cos positions make it a different one at each.
Every sub-layer is modulated by adaLN-Zero from c = emb_t(t) + emb_h(t - r) + emb_y(y); with ``context_summary``
the blocks from the middle on add the pooled tokens of the context frames to c (``ContextSummary``); with
``context_reader`` (class-conditional models) unlabelled rows with context frames read the class off those pooled tokens
and take its embedding from the middle block on (``ContextReader``); with ``context_reference`` every frame's input
gains its nearest context frame as extra channels (``ContextReference``). Times may be per clip (B,) or per frame (B, T):
context frames of frame-conditional generation carry their own time t = r = 0.

The temporal sub-layer of each block is a separate module (``blocks.i.temporal``) with its own zero-initialised
adaLN gate and its own temporal sin-cos positions added to its input, so a factorised or spacetime video model built
from an image model's weights starts as that image model applied per frame; joint attention changes the image model's
function from the first step (docs/experiments.md, design options: from the same image checkpoint the factorised model
was far ahead after 800 video steps). With ``temporal=False`` the model is image-only: 4-D inputs (B, C, H, W) are
accepted and the parameter count is the DiT's.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Optional

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from einops import einsum, rearrange, repeat
from torch import nn

from .attention import BACKENDS, Attention
from .copy import COPY_KERNELS, KernelCopy, nearest_context, nearest_frames
from .embeddings import LabelEmbedder, TimestepEmbedder, rope_3d, sincos_1d, sincos_2d
from .jvp_rules import LayerNorm, add_fixed, gated_add, modulate
from .linear import Linear, under_forward_ad
from .refiner import ConvRefiner


ATTENTION_LAYOUTS = ("factorised", "spacetime", "joint")


class Mlp(nn.Module):
    def __init__(self, dim: int, ratio: float):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TemporalSublayer(nn.Module):
    """Self-attention across frames, a zero-gated residual (adaLN-Zero): at each spatial position, or with
    ``spacetime`` over every token of the clip."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, backend: str, spacetime: bool = False):
        super().__init__()
        self.spacetime = spacetime
        self.norm = LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads, qk_norm, backend)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), Linear(dim, 3 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor, pos_t: torch.Tensor, rope: torch.Tensor | None = None
                ) -> torch.Tensor:
        # x: (B, T, N, D); c: (B, T or 1, 1, D); pos_t: (T, 1, D); rope: (2, T * N, d / 2) rotary table or None
        shift, scale, gate = self.adaLN_modulation(c).chunk(3, dim=-1)
        h = add_fixed(modulate(self.norm(x), shift, scale), pos_t)  # (B, T, N, D)
        if self.spacetime:
            h = rearrange(self.attn(rearrange(h, "b t n d -> b (t n) d"), rope), "b (t n) d -> b t n d", t=x.shape[1])
        else:
            h = rearrange(self.attn(rearrange(h, "b t n d -> (b n) t d")), "(b n) t d -> b t n d", b=x.shape[0])
        return gated_add(x, gate, h)


@dataclass
class ContextReading:
    """What a forward takes from a clip's context frames at the middle block (``STDiT.read_context``): the summary
    added to c (B, 1, 1, D) and the reader's class distribution (B, K), None where the model has no such part, and
    (B,) bool, which rows had context."""

    summary: Optional[torch.Tensor]
    class_probs: Optional[torch.Tensor]
    has_context: torch.Tensor


def pool_context(x: torch.Tensor, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the context frames' tokens: x (B, T, N, D), clean (B, T) bool -> (B, D), and (B,) bool: any context."""
    w = clean.to(x.dtype)[:, :, None, None]  # (B, T, 1, 1)
    pooled = (x * w).sum(dim=(1, 2)) / (w.sum(dim=(1, 2)) * x.shape[2]).clamp_min(1)  # (B, D)
    return pooled, clean.any(dim=1)


class ContextSummary(nn.Module):
    """The clean (context) frames' tokens, pooled over space and time, as a vector added to the conditioning c.

    Labels reach every token through adaLN; this gives what a context shows (a clip's digit, its look) the same
    path, so a new frame need not find it by attention from pure noise. Context frames are the frames at
    t = r below the row's highest time (t = r = 0, or t = r = s with noise-augmented context, ``method.context_noise``,
    as long as s is below the new frames' time); without any, or with one time per clip, it adds nothing. The output
    layer starts at zero, so a model gains it without changing its function.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.norm = LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.proj = Linear(dim, dim)

    def forward(self, x: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        # x: (B, T, N, D); clean: (B, T) bool, True on context frames -> (B, 1, 1, D)
        pooled, has = pool_context(x, clean)
        return (self.proj(self.norm(pooled)) * has.to(x.dtype)[:, None])[:, None, None]  # (B, 1, 1, D)


READER_POOLS = ("mean", "attention")


class ContextReader(nn.Module):
    """Reads the class off the context frames: logits over the classes from their tokens at the middle block.

    A user's video has no label, and a class-conditional model run with the null label renders what it continues
    from the frames alone, which the unguided null class does blurrily and with drifting identity. With a reader,
    unlabelled rows that have context frames take the read class's embedding, sum_k p_k E_k in place of the null
    embedding, from the middle block on; the first half of the network runs with the null label and builds the
    features it reads (on the bundled digits model, the true label given from the middle block on keeps the context's
    digit in 0.995 of extensions, given to every block in 0.95, the null label in 0.805). One network call, as
    before. Labelled rows and rows without context frames are untouched. Fitted on a trained model in minutes with
    the network frozen (``mfvideo.train.reader``, ``mfvideo-fit-reader``); a model trained with one in place learns
    through the soft embedding too (the loss reaches the head).

    ``pool``: how the context tokens become one feature vector before the two-layer MLP head.
    - ``"mean"``: their mean (on the digits: 0.945 of held-out clips read right, a linear head 0.909);
    - ``"attention"``: ``queries`` learned queries attend over the context tokens (keys and values are linear maps
      of the normalised tokens; other frames masked out), their outputs concatenated: where in the frame a stroke
      lies survives the pooling (session 22 on the digits: 0.957 -> 0.97 in the extension setting).
    """

    def __init__(self, dim: int, num_classes: int, pool: str = "mean", queries: int = 4):
        super().__init__()
        if pool not in READER_POOLS:
            raise ValueError(f"unknown reader pooling {pool!r}; choose one of {READER_POOLS}")
        self.pool = pool
        self.norm = LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        width = dim
        if pool == "attention":
            self.query = nn.Parameter(torch.randn(queries, dim) * dim**-0.5)  # (Q, D)
            self.key, self.value = Linear(dim, dim), Linear(dim, dim)
            width = queries * dim
        self.head = nn.Sequential(Linear(width, 4 * dim), nn.GELU(approximate="tanh"), Linear(4 * dim, num_classes))

    def features(self, x: torch.Tensor, clean: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """What the head reads, as a tuple of batch-first tensors, and (B,) has context. ``"mean"``: ((B, D),);
        ``"attention"``: the normalised tokens (B, T' * N, D) and which of them are context tokens (B, T' * N)."""
        if self.pool == "mean":
            pooled, has = pool_context(x, clean)
            return (self.norm(pooled),), has  # (B, D)
        tokens = rearrange(self.norm(x), "b t n d -> b (t n) d")
        keep = repeat(clean, "b t -> b (t n)", n=x.shape[2])
        return (tokens, keep), clean.any(dim=1)

    def classify(self, *feats: torch.Tensor) -> torch.Tensor:
        """Logits (B, K) from ``features``' tensors (any subset of the context tokens, in any order, for attention)."""
        if self.pool == "mean":
            return self.head(feats[0])
        tokens, keep = feats  # (B, L, D), (B, L) bool
        scores = einsum(self.query.to(tokens.dtype), self.key(tokens), "q d, b l d -> b q l") * tokens.shape[-1] ** -0.5
        scores = scores.masked_fill(~keep[:, None], torch.finfo(scores.dtype).min)  # rows without context: uniform
        pooled = einsum(scores.softmax(dim=-1), self.value(tokens), "b q l, b l d -> b q d")  # (B, Q, D)
        return self.head(rearrange(pooled, "b q d -> b (q d)"))

    def forward(self, x: torch.Tensor, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x: (B, T, N, D); clean: (B, T) -> logits (B, K), has context (B,)
        feats, has = self.features(x, clean)
        return self.classify(*feats), has


class ContextReference(nn.Module):
    """Every frame's input gains its nearest context frame (the clean frame itself, as given) and the signed
    distance to it in clips, through a zero-started patch embedding added to the tokens.

    The image-to-video models' reference-frame input (the conditioning latent concatenated to every frame's
    channels), generalised to any context mask (extension, backward extension, interpolation: each frame takes the
    nearest given one). Factorised attention links a new frame to the context only at its own patch, so a moving
    object's appearance has to hop frame by frame, and a pooled summary carries a class but not a glyph; here the
    glyph sits in the new frame's own tokens, where spatial attention can move it to where the motion (read by the
    temporal attention) puts it. Rows without context frames, and per-clip times, get nothing; the embedding starts
    at zero, so a trained model gains it without changing its function.
    """

    def __init__(self, in_channels: int, dim: int, patch_size: int, temporal_patch_size: int):
        super().__init__()
        k = (temporal_patch_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_channels + 1, dim, kernel_size=k, stride=k)

    def forward(self, z: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        # z: (B, C, T, H, W); clean: (B, T) bool, True on context frames -> (B, T', N, D)
        B, _, T, H, W = z.shape
        src = nearest_context(clean)  # (B, T)
        ref = nearest_frames(z, src)  # (B, C, T, H, W)
        offset = (torch.arange(T, device=z.device) - src).to(z.dtype) / T  # (B, T)
        offset = offset[:, None, :, None, None].expand(B, 1, T, H, W)
        has = clean.any(dim=1).to(z.dtype)[:, None, None, None, None]  # (B, 1, 1, 1, 1)
        x = self.proj(torch.cat([ref, offset], dim=1)) * has  # (B, D, T', H', W')
        return rearrange(x, "b d t h w -> b t (h w) d")


class STDiTBlock(nn.Module):
    """Spatial attention, optional temporal attention, MLP; adaLN-Zero modulation from c."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, temporal: bool, qk_norm: bool, backend: str,
                 joint: bool = False, spacetime: bool = False, clip: bool = False):
        super().__init__()
        self.joint = joint  # self.attn runs over every token of the clip, no temporal sub-layer
        self.norm1 = LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads, qk_norm, backend)
        self.norm2 = LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, mlp_ratio)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), Linear(dim, 6 * dim))
        self.temporal = TemporalSublayer(dim, num_heads, qk_norm, backend, spacetime) if temporal and not joint else None
        self.clip = TemporalSublayer(dim, num_heads, qk_norm, backend, spacetime=True) if clip else None

    def forward(self, x: torch.Tensor, c: torch.Tensor, pos_t: torch.Tensor, rope: torch.Tensor | None = None
                ) -> torch.Tensor:
        # x: (B, T, N, D); c: (B, T or 1, 1, D); rope: rotary table (2, T * N, d / 2) of the attention over the whole
        # clip (joint, spacetime's temporal sub-layer, the clip sub-layer), or None
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(c).chunk(6, dim=-1)
        h = modulate(self.norm1(x), shift_a, scale_a)  # (B, T, N, D)
        if self.joint:  # one attention over the whole clip
            h = rearrange(self.attn(rearrange(h, "b t n d -> b (t n) d"), rope), "b (t n) d -> b t n d", t=x.shape[1])
        else:  # spatial attention inside each frame
            h = rearrange(self.attn(rearrange(h, "b t n d -> (b t) n d")), "(b t) n d -> b t n d", b=x.shape[0])
        x = gated_add(x, gate_a, h)
        if self.temporal is not None:
            x = self.temporal(x, c, pos_t, rope if self.temporal.spacetime else None)  # attention across frames
        if self.clip is not None:
            x = self.clip(x, c, pos_t, rope)  # attention over every token of the clip
        return gated_add(x, gate_m, self.mlp(modulate(self.norm2(x), shift_m, scale_m)))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = Linear(dim, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


def context_frames(t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Context frames of per-frame times (B, T): frames that do not move (t = r) and are less noisy than the row's
    new frames (t = 0, or the level s of noise-augmented context) -> (B, T) bool."""
    return (t == r) & (t < t.amax(dim=1, keepdim=True))


def _per_frame(t, batch: int, device) -> torch.Tensor:
    """() | (B,) | (B, T) times -> (B, 1) or (B, T), every frame's own (no temporal patching)."""
    t = torch.as_tensor(t, device=device)
    return t.expand(batch)[:, None] if t.ndim < 2 else t


PREDICTIONS = ("u", "x")
X_PREDICTION_T_MIN = 0.05  # the smallest t dividing an x-prediction (JiT clips its 1 / (1 - t) likewise)


def x_to_u(z: torch.Tensor, x: torch.Tensor, t) -> torch.Tensor:
    """pMF's field (Lu et al., 2026): the network predicts x(z_t, r, t) = z_t - t u(z_t, r, t), a denoised image on
    the data manifold, and u = (z_t - x) / t is what the method sees, so the loss, the JVP and the samplers stay
    those of u. The 1-NFE sample z_1 - u(z_1, 0, 1) is then the network's x itself: what the input noise leaves in
    a u-prediction's output (speckle, in pixel space) cancels exactly. z, x: (B, C, T, H, W); t: () | (B,) | (B, T).
    t is clamped at ``X_PREDICTION_T_MIN`` (context frames carry t = 0; their u never enters a loss or a sample)."""
    t = torch.as_tensor(t, device=z.device, dtype=z.dtype)
    if t.ndim == 0:
        t = t.expand(z.shape[0])
    t = t[:, None, :, None, None] if t.ndim == 2 else t[:, None, None, None, None]  # (B, 1, T | 1, 1, 1)
    return (z - x) / t.clamp(min=X_PREDICTION_T_MIN)


GUIDANCE_TIME_SCALE = 1000.0  # the scale of kappa = 1 - 1 / w in the guidance embedding's sin-cos features


class STDiT(ModelMixin, ConfigMixin):
    """u = net(z, t, r, y): the average velocity over [r, t] for latents z of shape (B, C, T, H, W) or (B, C, H, W).

    t, r: () or (B,) for one time per clip, or (B, T) for one time per frame (read at the first frame of each
    temporal patch). y: (B,) class labels, -1 for the null class; None means null (or no classes at all).
    guidance: with ``guidance_embed``, the classifier-free guidance scale w >= 1 the output is guided with, () or
    (B,) (None: 1, unguided), embedded as kappa = 1 - 1 / w in [0, 1) beside t (improved MeanFlow's guidance as a
    condition, ``method.cfg_scale_range``); a model without it takes none (its guidance, if any, is folded in).
    prediction: what the output layer predicts: "u" the average velocity itself, or "x" the denoised field
    z - t u (``x_to_u``), which pixel-space models want (the forward returns u either way).
    """

    _supports_gradient_checkpointing = True  # diffusers' enable_gradient_checkpointing(): per block

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        hidden_size: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        patch_size: int = 2,
        temporal_patch_size: int = 1,
        mlp_ratio: float = 4.0,
        num_classes: int = 0,
        temporal: bool = True,
        qk_norm: bool = False,
        attn_backend: str = "sdpa",
        time_scale: float = 1.0,
        attention: str = "factorised",
        context_summary: bool = False,
        clip_attention: bool = False,
        context_reader: bool = False,
        prediction: str = "u",
        context_reference: bool = False,
        clip_rope: bool = False,
        refiner_channels: int = 0,
        refiner_layers: int = 3,
        reader_pool: str = "mean",
        copy_radius: int = 0,
        copy_kernel: str = "softmax",
        guidance_embed: bool = False,
    ):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")
        if attention not in ATTENTION_LAYOUTS:
            raise ValueError(f"unknown attention layout {attention!r}; choose one of {ATTENTION_LAYOUTS}")
        if clip_attention and not (temporal and attention == "factorised"):
            raise ValueError("clip_attention adds a sub-layer to factorised video models only "
                             f"(attention={attention!r}, temporal={temporal})")
        if reader_pool not in READER_POOLS:
            raise ValueError(f"unknown reader_pool {reader_pool!r}; choose one of {READER_POOLS}")
        if context_reader and not (temporal and num_classes > 0):
            raise ValueError("context_reader reads a class off context frames: it needs a class-conditional video "
                             f"model (num_classes={num_classes}, temporal={temporal})")
        if clip_rope and not (temporal and (clip_attention or attention != "factorised")):
            raise ValueError("clip_rope rotates the queries and keys of attention over the whole clip: it needs a video "
                             "model with clip_attention or a spacetime or joint layout "
                             f"(attention={attention!r}, clip_attention={clip_attention}, temporal={temporal})")
        if clip_rope and (hidden_size // num_heads) < 6:
            raise ValueError(f"clip_rope needs heads at least 6 channels wide, got {hidden_size // num_heads}")
        if refiner_channels < 0 or (refiner_channels and refiner_layers < 2):
            raise ValueError(f"refiner_channels must be >= 0 (0: none) with refiner_layers >= 2, got "
                             f"{refiner_channels} and {refiner_layers}")
        if context_reference and not temporal:
            raise ValueError("context_reference gives each frame its nearest context frame: it needs a video model")
        if copy_kernel not in COPY_KERNELS:
            raise ValueError(f"unknown copy_kernel {copy_kernel!r}; choose one of {COPY_KERNELS}")
        if copy_radius < 0 or (copy_radius and not temporal):
            raise ValueError(f"copy_radius copies from the nearest context frame: it needs a video model and a "
                             f"radius >= 0 (0: none), got {copy_radius} (temporal={temporal})")
        p, pt = patch_size, temporal_patch_size
        self.x_embedder = nn.Conv3d(in_channels, hidden_size, kernel_size=(pt, p, p), stride=(pt, p, p))
        self.t_embedder = TimestepEmbedder(hidden_size, time_scale=time_scale)
        self.h_embedder = TimestepEmbedder(hidden_size, time_scale=time_scale)  # embeds h = t - r
        self.y_embedder = LabelEmbedder(num_classes, hidden_size) if num_classes > 0 else None
        # The guidance scale as a condition (iMF); its output layer starts at zero, so a model gaining it
        # (``model.init_from``) starts as the model it came from, at every scale. kappa = 1 - 1 / w is embedded at
        # DiT's timestep scale: nothing differentiates along w (t keeps scale 1 for the JVP's d_t u), and at scale 1 the
        # sin-cos features of kappa in [0, 0.8] barely differ, so every scale learnt the same shift (docs/method.md).
        self.g_embedder = TimestepEmbedder(hidden_size, time_scale=GUIDANCE_TIME_SCALE) if guidance_embed else None
        # Temporal sin-cos positions enter the tokens through a zero-initialised per-channel gate: the video
        # model starts as the image model per frame, yet learns frame identity ~3x faster than with positions
        # inside the temporal attention only (one-sample overfit, 1-NFE error 0.09 vs 1.0 after 600 steps).
        self.temporal_pos_gate = nn.Parameter(torch.zeros(hidden_size)) if temporal else None
        self.blocks = nn.ModuleList(
            STDiTBlock(hidden_size, num_heads, mlp_ratio, temporal, qk_norm, attn_backend, joint=attention == "joint",
                       spacetime=attention == "spacetime", clip=clip_attention)
            for _ in range(depth)
        )
        # Pooled context tokens join c from the middle block on (the first half builds the features it pools).
        self.context_embedder = ContextSummary(hidden_size) if context_summary and temporal else None
        self.class_reader = ContextReader(hidden_size, num_classes, reader_pool) if context_reader else None
        self.reference_embedder = ContextReference(in_channels, hidden_size, p, pt) if context_reference else None
        self.final_layer = FinalLayer(hidden_size, pt * p * p * in_channels)
        self.refiner = ConvRefiner(in_channels, refiner_channels, refiner_layers) if refiner_channels else None
        self.copier = KernelCopy(hidden_size, copy_radius, p, pt, copy_kernel) if copy_radius else None
        self._pos_cache: dict = {}
        self.gradient_checkpointing = False
        self.initialize_weights()

    def initialize_weights(self):
        """DiT's initialisation: xavier linears, N(0, 0.02) embedders, zero adaLN gates and output."""

        def _basic_init(module):
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(_basic_init)
        w = self.x_embedder.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.bias)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        for emb in (self.t_embedder, self.h_embedder, self.g_embedder):
            if emb is not None:
                nn.init.normal_(emb.mlp[0].weight, std=0.02)
                nn.init.normal_(emb.mlp[2].weight, std=0.02)
        if self.g_embedder is not None:  # zero-started: no scale changes anything until trained to
            nn.init.zeros_(self.g_embedder.mlp[2].weight)
        for block in self.blocks:
            gated = [block.adaLN_modulation[-1]] + [sub.adaLN_modulation[-1] for sub in (block.temporal, block.clip) if sub]
            for lin in gated:  # adaLN-Zero: every residual branch starts at zero
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)
        for part in (self.context_embedder, self.reference_embedder):  # zero-started additions
            if part is not None:
                nn.init.zeros_(part.proj.weight)
                nn.init.zeros_(part.proj.bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)
        if self.refiner is not None:  # a zero-started correction
            nn.init.zeros_(self.refiner.convs[-1].weight)
            nn.init.zeros_(self.refiner.convs[-1].bias)
        if self.copier is not None:  # gate closed
            self.copier.reset_parameters()

    def set_attn_backend(self, backend: str, xformers_op=None) -> None:
        """Every attention layer's backend (``BACKENDS``); ``xformers_op``: the operator xformers is asked to use."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
        for module in self.modules():
            if isinstance(module, Attention):
                module.backend, module.xformers_op = backend, xformers_op

    def set_use_memory_efficient_attention_xformers(self, valid: bool, attention_op=None) -> None:
        """diffusers' switch (``pipe.enable_xformers_memory_efficient_attention(attention_op=None)``, the same on the
        transformer): the ``xformers`` backend in every attention layer, ``attention_op`` its operator; off: ``sdpa``.
        diffusers' own walk looks for its attention processors and would leave ours as they are, silently. As the
        backend does, on a CPU tensor and under the JVP it runs as ``sdpa`` / the math path."""
        if valid and importlib.util.find_spec("xformers") is None:
            raise ModuleNotFoundError("xformers is not installed (pip install xformers, a build for this torch); "
                                      "the attention backend is unchanged", name="xformers")
        if valid:
            self.set_attn_backend("xformers", attention_op)
        elif any(isinstance(m, Attention) and m.backend == "xformers" for m in self.modules()):
            self.set_attn_backend("sdpa")

    def _positions(self, t: int, h: int, w: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed spatial (h*w, D) and temporal (t, 1, D) sin-cos positions for any grid, cached per grid."""
        key = (t, h, w, device, dtype)
        if key not in self._pos_cache:
            d = self.config.hidden_size
            pos = sincos_2d(h, w, d, device).to(dtype), sincos_1d(t, d, device).to(dtype)[:, None]
            if torch.compiler.is_compiling():  # traced, e.g. inside torch.func.jvp: a graph constant, no cache entry
                return pos
            self._pos_cache[key] = pos
        return self._pos_cache[key]

    def _rope(self, t: int, h: int, w: int, device, dtype) -> torch.Tensor | None:
        """Rotary table (2, t*h*w, head_dim / 2) of the attention over the whole clip, cached per grid, or None
        without ``clip_rope``."""
        if not self.config.clip_rope:
            return None
        key = ("rope", t, h, w, device, dtype)
        if key not in self._pos_cache:
            head_dim = self.config.hidden_size // self.config.num_heads
            table = rope_3d(t, h, w, head_dim, device).to(dtype)
            if torch.compiler.is_compiling():  # as in _positions
                return table
            self._pos_cache[key] = table
        return self._pos_cache[key]

    def _frame_times(self, t: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
        """() | (B,) | (B, T) times -> (B, 1) or (B, T') at the temporal patch resolution."""
        if t.ndim == 0:
            t = t.expand(batch)
        if t.ndim == 1:
            return t[:, None]  # (B, 1)
        pt = self.config.temporal_patch_size
        if t.shape[1] != frames:
            raise ValueError(f"per-frame times have {t.shape[1]} frames, the input has {frames}")
        return t[:, ::pt]  # (B, T')

    def _guidance(self, guidance, batch: int, device) -> torch.Tensor | None:
        """The embedding (B, D) of the guidance scale (None: 1), or None for a model without ``guidance_embed``, which
        refuses any scale but 1."""
        if self.g_embedder is None:
            if guidance is not None and bool((torch.as_tensor(guidance) != 1).any()):
                raise ValueError("this model takes no guidance scale (model.guidance_embed is off): its guidance, if "
                                 "any, was folded in at training (method.cfg_kappa)")
            return None
        w = torch.ones((), device=device) if guidance is None else torch.as_tensor(guidance, device=device)
        kappa = (1 - 1 / w.float()).expand(batch)  # (B,) in [0, 1) for w >= 1
        return self.g_embedder(kappa)  # (B, D)

    def _embed(self, z: torch.Tensor, t, r, y, guidance=None):
        """Tokens (B, T', N, D), conditioning c (B, 1 | T', 1, D), temporal positions, the context frames (B, T') or
        None, the labels (B,) (-1: null) or None, and the grid (T', H', W')."""
        B, _, T, H, W = z.shape
        z = z.to(self.x_embedder.weight.dtype)  # a model loaded in bf16 / fp16 (torch_dtype) takes float32 latents
        p, pt = self.config.patch_size, self.config.temporal_patch_size
        if T % pt or H % p or W % p:
            raise ValueError(f"input (T, H, W) = {(T, H, W)} is not divisible by the patch ({pt}, {p}, {p})")
        tp, hp, wp = T // pt, H // p, W // p

        x = self.x_embedder(z)  # (B, D, T', H', W')
        x = rearrange(x, "b d t h w -> b t (h w) d")  # (B, T', N, D)
        t_full, r_full = torch.as_tensor(t, device=z.device), torch.as_tensor(r, device=z.device)
        if self.reference_embedder is not None and t_full.ndim == 2:
            x = x + self.reference_embedder(z, context_frames(t_full, r_full))  # the nearest context frame
        pos_s, pos_t = self._positions(tp, hp, wp, x.device, x.dtype)
        x = add_fixed(x, pos_s)  # (B, T', N, D); add_fixed: x + the addend, which has no tangent in the JVP
        if self.temporal_pos_gate is not None:
            x = add_fixed(x, self.temporal_pos_gate * pos_t)  # frame index, visible to every layer once the gate opens

        t = self._frame_times(t_full, B, T)  # (B, 1 | T')
        r = self._frame_times(r_full, B, T)
        c = self.t_embedder(t) + self.h_embedder(add_fixed(t, r, subtract=True))  # (B, 1 | T', D); t - r
        labels = None
        if self.y_embedder is not None:
            labels = y if y is not None else torch.full((B,), LabelEmbedder.NULL, device=z.device)
            c = add_fixed(c, self.y_embedder(labels)[:, None])
        elif y is not None:
            raise ValueError("this model has no classes (num_classes=0) but labels were given")
        g = self._guidance(guidance, B, z.device)
        if g is not None:
            c = add_fixed(c, g[:, None])
        # Context frames feed the summary and the reader: frames that do not move (t = r) and are less noisy than the
        # row's new frames (t = 0, or the level s of noise-augmented context); per-clip times have none.
        clean = None
        if (self.context_embedder is not None or self.class_reader is not None) and t.shape[1] > 1:
            clean = context_frames(t, r)  # (B, T')
        return x, c[:, :, None], pos_t, clean, labels, (tp, hp, wp)

    def _read_label(self, x: torch.Tensor, clean: torch.Tensor, labels: torch.Tensor,
                    class_probs: torch.Tensor | None = None) -> torch.Tensor:
        """The change of c on unlabelled rows with context: expected embedding of the read class (or of
        ``class_probs`` (B, K), a reading held from earlier) minus the null embedding, (B, 1, 1, D); zero on other
        rows."""
        if class_probs is None:
            logits, has = self.class_reader(x, clean)  # (B, K), (B,)
            p = torch.softmax(logits.float(), dim=-1).to(x.dtype)  # (B, K)
        else:
            p, has = class_probs.to(x.dtype), clean.any(dim=1)
        table = self.y_embedder.embedding_table.weight  # (K + 1, D): the classes, then the null row
        delta = p @ table[:-1] - table[-1]  # (B, D)
        read = (has & (labels < 0)).to(x.dtype)[:, None]  # (B, 1)
        return (delta * read)[:, None, None]

    @torch.no_grad()
    def read_context(self, z: torch.Tensor, t, r, y: torch.Tensor | None = None, guidance=None) -> "ContextReading":
        """What the forward takes from the context frames of clips z (B, C, T, H, W) at the middle block (context
        frames at t = r below the others, per-frame times (B, T); labels y as in the forward): the summary, the
        reader's class distribution, and which rows have context. Given back to the forward as ``reading``, it
        reproduces that forward on the same input; on another input (a later window) it holds what was read."""
        x, clean = self._first_half(z, t, r, y, guidance)
        summary = self.context_embedder(x, clean) if self.context_embedder is not None else None
        probs = None
        if self.class_reader is not None:
            logits, _ = self.class_reader(x, clean)
            probs = torch.softmax(logits.float(), dim=-1)
        return ContextReading(summary, probs, clean.any(dim=1))

    def context_features(self, z: torch.Tensor, t, r, guidance=None) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """The reader's input features at the middle block (``ContextReader.features``: a tuple of batch-first
        tensors) and (B,) has context: what ``fit_context_reader`` fits the reader on."""
        x, clean = self._first_half(z, t, r, None, guidance)
        return self.class_reader.features(x, clean)

    def _first_half(self, z: torch.Tensor, t, r, y, guidance=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens (B, T', N, D) at the input of the middle block, where the summary and the reader look, and the
        context frames (B, T')."""
        x, c, pos_t, clean, _, grid = self._embed(z, t, r, y, guidance)
        rope = self._rope(*grid, x.device, x.dtype)
        if clean is None:
            raise ValueError("reading the context needs per-frame times (B, T) that mark context frames, and a model "
                             "with a context summary or reader")
        for block in self.blocks[: len(self.blocks) // 2]:
            x = block(x, c, pos_t, rope)
        return x, clean

    def forward(self, z: torch.Tensor, t: torch.Tensor, r: torch.Tensor, y: torch.Tensor | None = None,
                reading: "ContextReading | None" = None, guidance=None):
        """``reading`` (``read_context`` of an earlier input): rows with context take its summary and class
        distribution instead of reading their own context frames; the pipeline holds the reading of a given video
        for every window of a long extension, whose later windows' context is the model's own frames."""
        image = z.ndim == 4
        if image:
            z = z[:, :, None]  # (B, C, 1, H, W)
        x, c, pos_t, clean, labels, (tp, hp, wp) = self._embed(z, t, r, y, guidance)
        p, pt = self.config.patch_size, self.config.temporal_patch_size
        rope = self._rope(tp, hp, wp, x.device, x.dtype)  # (2, T' * N, d / 2) or None

        # Activation checkpointing keeps only each block's input for the backward; never under the JVP (forward-mode AD
        # through a recomputed block is not supported, and the detached JVP keeps no graph anyway).
        checkpointed = self.gradient_checkpointing and torch.is_grad_enabled() and not under_forward_ad(x)
        for i, block in enumerate(self.blocks):
            if clean is not None and i == len(self.blocks) // 2:
                held = reading is not None
                if self.context_embedder is not None:
                    if held and reading.summary is not None:  # the held summary, on rows with context now
                        c = c + reading.summary * clean.any(dim=1).to(x.dtype)[:, None, None, None]
                    else:
                        c = c + self.context_embedder(x, clean)  # (B, 1 | T', 1, D)
                if self.class_reader is not None:  # unlabelled rows: the class read off the context (or held)
                    c = c + self._read_label(x, clean, labels, reading.class_probs if held else None)
            if checkpointed:
                x = self._gradient_checkpointing_func(block, x, c, pos_t, rope)  # (B, T', N, D)
            else:
                x = block(x, c, pos_t, rope)  # (B, T', N, D)
        out = rearrange(
            self.final_layer(x, c), "b t (h w) (pt ph pw c) -> b c (t pt) (h ph) (w pw)", h=hp, w=wp, pt=pt, ph=p, pw=p
        )  # (B, C, T, H, W)
        if self.copier is not None and torch.as_tensor(t).ndim == 2:  # per-frame times mark the context frames
            out = self.copier(x, out, z, context_frames(torch.as_tensor(t, device=z.device),
                                                        torch.as_tensor(r, device=z.device)))
        if self.refiner is not None:
            out = self.refiner(out, z, _per_frame(t, z.shape[0], z.device), _per_frame(r, z.shape[0], z.device))
        if self.config.prediction == "x":
            out = x_to_u(z, out, t)  # (B, C, T, H, W)
        return out[:, :, 0] if image else out
