"""The detached JVP (and the step's no-grad forwards) replayed from CUDA graphs: the host launches one graph
instead of every kernel.

On a GPU the MeanFlow step is host-bound: dual tensors cost the host several operations per model operation, and the
H200 sat idle for half of a bf16 B/2 step (docs/benchmark.md, "On the GPU"); for the 2.6 M-parameter moving-digits model
the JVP took 6x the forward's time while its arithmetic is about 2x. In the detached mode the JVP is a pure function of
(z, t, r, y) and its tangents under no grad, so it can be captured once and replayed:

- rows are padded to a multiple of ``row_multiple`` (copies of the first row, dropped from the result), so a batch's
  varying count of r != t rows needs a handful of graphs, not one per count;
- one graph per (padded rows, shapes, dtypes, autocast state, train/eval mode), all in one memory pool;
- parameters are read where they live: the optimizer updates them in place, and each replay sees the new values
  (autocast's weight cache is switched off inside the capture and emptied around it: a cached cast from before would
  be a tensor of the step that was being captured, freed after it);
- each new graph is checked once against the eager call on the same inputs; a capture that fails or disagrees is
  reported once and everything runs eagerly from then on.

The training-time guidance's no-grad forward (conditional and unconditional rows in one call, a fixed shape) is the
step's other pure call: ``forward_no_grad`` replays it the same way.

``compile=True`` (``train.compile_jvp``) runs each call through ``torch.compile`` instead of the eager module: the
JVP as ``torch.func.jvp`` of the network, traced once per padded shape, so inductor fuses the primal and tangent
kernels (on 2 CPU cores, bf16, the bundled model's JVP call: 0.74x the eager one; ``scripts/gpu/profile_step.py
--compiled-jvp``). Under compile the network cannot tell that it runs under a JVP, so the call sets every attention
to the math path (the fused SDPA kernels have no forward-mode rule) and restores it after. Both together compile,
then capture the compiled call. The first-call check against the eager JVP covers the compiled call too.

Used only by the detached mode (the fused mode's JVP carries the parameter gradient, which a graph replayed under
no grad cannot); the module is the unwrapped network (the detached JVP has no gradient for DDP to reduce).
"""

from __future__ import annotations

import contextlib
import logging

import torch

from .jvp import forward_jvp

log = logging.getLogger(__name__)


class GraphedJVP:
    """``jvp(z, t, r, y, dz, dt) -> (u, du/dt)`` of ``module(z, t, r, y=y)`` along (dz, dt, 0), and
    ``forward_no_grad(z, t, r, y)``, both under no grad.

    ``capture``: replay from CUDA graphs (default: when the module is on a CUDA device); without it the padded
    static-buffer path runs eagerly (what the CPU tests check), or compiled with ``compile``. Calling the object
    calls the module.
    """

    def __init__(self, module: torch.nn.Module, row_multiple: int = 8, capture: bool | None = None,
                 check_rtol: float = 2e-2, compile: bool = False):
        self.module = module
        self.row_multiple = max(1, int(row_multiple))
        self.capture = capture
        self.check_rtol = check_rtol
        self.compile = compile
        self.graphs: dict[tuple, _Graph] = {}
        self.disabled: str | None = None  # why the graphs were given up, once they were
        self._pool = None
        self._compiled: dict[str, object] = {}  # kind -> torch.compile'd call
        self._attention = [m for m in module.modules() if isinstance(getattr(m, "backend", None), str)]

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def jvp(self, z, t, r, y, dz, dt) -> tuple[torch.Tensor, torch.Tensor]:
        return self._call("jvp", (z, t, r, y, dz, dt))

    def forward_no_grad(self, z, t, r, y=None) -> torch.Tensor:
        """``module(z, t, r, y=y)`` under no grad, replayed the same way: the step's other no-grad call (the
        training-time guidance's instantaneous velocities, conditional and unconditional rows in one batch)."""
        return self._call("forward", (z, t, r, y))

    # ------------------------------------------------------------------------------------------------------------
    def _call(self, kind: str, inputs: tuple):
        z = inputs[0]
        rows = z.shape[0]
        capture = self.capture if self.capture is not None else z.is_cuda
        if self.disabled is not None or rows == 0:
            return self._eager(kind, *inputs)
        padded = -(-rows // self.row_multiple) * self.row_multiple
        auto = (torch.is_autocast_enabled(z.device.type), torch.get_autocast_dtype(z.device.type))
        key = (kind, padded, capture, self.module.training, auto,
               *((None,) if a is None else (tuple(a.shape[1:]), a.dtype, a.device) for a in inputs))
        graph = self.graphs.get(key)
        first = graph is None
        if first:
            try:
                graph = self._build(kind, inputs, padded, capture, auto)
            except Exception as e:  # noqa: BLE001 -- any failure of the capture: the eager call is always right
                return self._give_up(f"capture failed: {type(e).__name__}: {_first_line(e)}", kind, inputs)
            self.graphs[key] = graph
        graph.load(inputs)
        out = graph.run()
        if first:  # checked once against the eager call on the same inputs
            ref = self._eager(kind, *graph.static)
            a, b = (out[1], ref[1]) if kind == "jvp" else (out, ref)
            err = float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))
            if not err <= self.check_rtol:  # NaN-safe
                return self._give_up(f"the replayed {kind} differs from the eager one by {err:.2e} (relative)", kind,
                                     inputs)
        if kind == "jvp":
            return out[0][:rows].clone(), out[1][:rows].clone()  # the next replay overwrites the static outputs
        return out[:rows].clone()

    def _eager(self, kind: str, z, t, r, y, dz=None, dt=None):
        with torch.no_grad():
            if kind == "forward":
                return self.module(z, t, r, y=y)
            return forward_jvp(lambda z_, t_, r_: self.module(z_, t_, r_, y=y), (z, t, r), (dz, dt, None),
                               module=self.module)

    def _run(self, kind: str, *inputs):
        """What a graph records: the eager call, or the compiled one."""
        return self._compiled_call(kind, *inputs) if self.compile else self._eager(kind, *inputs)

    def _compiled_call(self, kind: str, z, t, r, y, dz=None, dt=None):
        fn = self._compiled.get(kind)
        if fn is None:
            module = self.module
            if kind == "forward":
                fn = torch.compile(lambda z, t, r, y: module(z, t, r, y=y), dynamic=False)
            else:  # r and y are held: the tangent of r is 0, labels have none
                fn = torch.compile(lambda z, t, r, y, dz, dt: torch.func.jvp(
                    lambda z_, t_: module(z_, t_, r, y=y), (z, t), (dz, dt)), dynamic=False)
            self._compiled[kind] = fn
        with torch.no_grad():
            if kind == "forward":
                return fn(z, t, r, y)
            with _math_attention(self._attention):
                return fn(z, t, r, y, dz.to(z.dtype), dt.to(t.dtype))

    def _give_up(self, reason: str, kind: str, inputs):
        self.disabled, self.graphs, self._compiled = reason, {}, {}
        what = "compiled JVP" if self.compile else "CUDA graphs"
        log.warning("%s off (%s); the JVP and no-grad forwards run eagerly", what, reason)
        return self._eager(kind, *inputs)

    def _build(self, kind: str, inputs, padded: int, capture: bool, auto) -> "_Graph":
        static = tuple(None if a is None else a.new_empty((padded, *a.shape[1:])) for a in inputs)
        graph = _Graph(static)
        graph.load(inputs)
        if not capture:
            graph.fn = lambda: self._run(kind, *static)
            return graph
        device = inputs[0].device
        enabled, dtype = auto

        def call():  # autocast as the caller has it, without its weight cache (see the module's notes)
            with torch.autocast(device.type, dtype=dtype, enabled=enabled, cache_enabled=False):
                return self._run(kind, *static)

        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up off the capture: cuBLAS workspaces, Triton autotuning, lazy caches
            for _ in range(2):
                call()
        torch.cuda.current_stream(device).wait_stream(side)
        g = torch.cuda.CUDAGraph()
        # A module whose forward enters autocast itself (accelerate's mixed-precision wrapper does, cache on) caches
        # casts inside the capture anyway: empty the cache before it (no cast of this step may be recorded into the
        # graph) and after it (no eager call may read a cast the capture made, computed only when replayed).
        torch.clear_autocast_cache()
        # thread_local: CUDA calls of other threads (a data loader's pin-memory thread) do not void this capture
        with torch.cuda.graph(g, pool=self._pool, capture_error_mode="thread_local"):
            graph.out = call()
        torch.clear_autocast_cache()
        self._pool = g.pool()
        graph.fn = g
        return graph


class _Graph:
    """Static inputs, the captured call (or an eager stand-in) and its static outputs."""

    def __init__(self, static):
        self.static = static
        self.fn = None
        self.out = None

    def load(self, inputs) -> None:
        """Copy a call's inputs into the static buffers; the padding rows repeat the first row."""
        rows = inputs[0].shape[0]
        for dst, src in zip(self.static, inputs):
            if dst is None:
                continue
            dst[:rows].copy_(src)
            if rows < dst.shape[0]:
                dst[rows:].copy_(src[:1].expand(dst.shape[0] - rows, *src.shape[1:]))

    def run(self):
        if isinstance(self.fn, torch.cuda.CUDAGraph):
            self.fn.replay()
            return self.out
        return self.fn()


@contextlib.contextmanager
def _math_attention(layers: list[torch.nn.Module]):
    """Every attention layer given on the math path for the duration (restored after, also on an error)."""
    backends = [m.backend for m in layers]
    for m in layers:
        m.backend = "math"
    try:
        yield
    finally:
        for m, b in zip(layers, backends):
            m.backend = b


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""
