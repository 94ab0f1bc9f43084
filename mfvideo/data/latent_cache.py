"""Latent caches: a dataset encoded once into sharded safetensors files plus a manifest.

Layout of a cache folder::

    manifest.json             codec, latent shape, item count, shard list (written last)
    shard_00000.safetensors   latents (N, C, [T,] h, w) | mean, std (+ mean_flip, std_flip) for images;
                              labels (N,), index (N,), frames (N, T) clip windows; metadata: sources

Images store the VAE posterior's mean and std (and the flipped view), as the official MeanFlow preprocessing does;
a latent is drawn from the posterior when loaded. Videos store the normalised latents of the clip window chosen at
encode time. Each shard is written to a temporary file and renamed: an interrupted run keeps finished shards and
never leaves a half-written one; re-running skips them. What the shards hold (the codec, the data, the item count and
shard size) is recorded in ``settings.json`` before the first shard: a re-run with other settings into the same
folder is refused (its finished shards would have been kept beside new ones, a cache of two VAEs or two datasets).
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..io import as_new_file

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
SETTINGS = "settings.json"


class CacheMismatchError(ValueError):
    """A cache folder that holds shards of other settings than this run's."""


def check_settings(root: Path, settings: dict, write: bool) -> None:
    """Refuse a folder whose recorded settings differ from ``settings``; record them where none are (``write``: the
    process that writes, rank 0). Compared as JSON, a section's keys one by one (``latents.path``)."""
    path = root / SETTINGS
    ours = json.loads(json.dumps(settings))
    if path.is_file():
        a, b = _flat(json.loads(path.read_text())), _flat(ours)
        differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        if differ:
            said = "; ".join(f"{k}: {json.dumps(a.get(k))} there, {json.dumps(b.get(k))} here" for k in differ[:3])
            raise CacheMismatchError(f"{root} holds a latent cache of other settings ({said}"
                                     f"{'; and more' if len(differ) > 3 else ''}): finish it with its own settings, "
                                     "or write this one to another --out")
    elif write:
        tmp = root / f".{SETTINGS}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(ours, indent=1, sort_keys=True))
        os.replace(tmp, path)


def _flat(d: dict) -> dict:
    return {f"{k}.{j}" if isinstance(v, dict) else k: w for k, v in d.items()
            for j, w in (v.items() if isinstance(v, dict) else [(None, v)])}


def shard_path(root: Path, s: int) -> Path:
    return root / f"shard_{s:05d}.safetensors"


def encode_shard(dataset, codec, indices: list[int], images: bool, device, batch_size: int = 16) -> tuple[dict, list[str]]:
    tensors: dict[str, list[torch.Tensor]] = {}
    sources, labels, frames = [], [], []
    files = getattr(dataset, "files", None)  # folder datasets name their source files
    for b in range(0, len(indices), batch_size):
        items = [dataset[i] for i in indices[b : b + batch_size]]
        x = torch.stack([it["x"] for it in items]).to(device)
        if images:
            pix = x[:, :, None]  # (B, 3, 1, H, W)
            mean, std = codec.encode_moments(pix)
            mean_f, std_f = codec.encode_moments(pix.flip(-1))
            for k, v in (("mean", mean), ("std", std), ("mean_flip", mean_f), ("std_flip", std_f)):
                tensors.setdefault(k, []).append(v[:, :, 0].cpu())
        else:
            tensors.setdefault("latents", []).append(codec.encode(x).cpu())
        labels += [int(it["y"]) for it in items]
        frames += [it.get("frames", [0]) for it in items]
        sources += [str(files[it["index"]][0]) if files else f"{type(dataset).__name__}[{it['index']}]" for it in items]
    out = {k: torch.cat(v).contiguous() for k, v in tensors.items()}
    out["labels"] = torch.tensor(labels, dtype=torch.long)
    out["index"] = torch.tensor(indices, dtype=torch.long)
    width = max(len(f) for f in frames)
    out["frames"] = torch.tensor([list(f) + [-1] * (width - len(f)) for f in frames], dtype=torch.long)
    return out, sources


def cache_dataset(dataset, codec, out_dir, shard_size: int = 256, images: bool = False, rank: int = 0,
                  world: int = 1, device="cpu", limit: int | None = None, progress: bool = True,
                  stop_after_shards: int | None = None, settings: dict | None = None) -> list[Path]:
    """Encode ``dataset`` into ``out_dir``; shard s goes to rank s % world. Finished shards are skipped.

    ``settings`` (JSON-able: the data and codec config) join the item count, shard size and codec in the folder's
    ``settings.json``; a folder that records other ones is refused before anything is written.
    """
    from tqdm.auto import tqdm

    root = Path(out_dir)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    recorded = {"num_items": n, "shard_size": shard_size, "images": images, "codec": type(codec).__name__,
                "latent_channels": codec.latent_channels, **(settings or {})}
    root.mkdir(parents=True, exist_ok=True)
    check_settings(root, recorded, write=rank == 0)  # every rank, before any shard is written
    num_shards = (n + shard_size - 1) // shard_size
    mine = [s for s in range(num_shards) if s % world == rank]
    done = 0
    for s in tqdm(mine, desc=f"cache[{rank}]", disable=not progress):
        path = shard_path(root, s)
        if path.is_file():
            continue
        idx = list(range(s * shard_size, min(n, (s + 1) * shard_size)))
        tensors, sources = encode_shard(dataset, codec, idx, images, device)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file(tensors, tmp, metadata={"sources": json.dumps(sources)})
        as_new_file(tmp)  # safetensors writes 0600
        os.replace(tmp, path)
        done += 1
        if stop_after_shards is not None and done >= stop_after_shards:
            break
    return [shard_path(root, s) for s in range(num_shards)]


def write_manifest(out_dir, codec, num_items: int, shard_size: int, images: bool, extra: dict | None = None) -> Path:
    root = Path(out_dir)
    shards = sorted(p.name for p in root.glob("shard_*.safetensors"))
    expected = (num_items + shard_size - 1) // shard_size
    if len(shards) != expected:
        raise RuntimeError(f"{root}: {len(shards)} of {expected} shards present; run the cache again to finish")
    manifest = {
        "num_items": num_items, "shard_size": shard_size, "shards": shards, "images": images,
        "latent_channels": codec.latent_channels, "codec": type(codec).__name__,
        "scale": getattr(codec, "scale", 1.0), "shift": getattr(codec, "shift", 0.0), **(extra or {}),
    }
    tmp = root / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, root / MANIFEST)
    return root / MANIFEST


OPEN_SHARDS = 64  # shard files a process keeps open (memory-mapped), the most recently read


class LatentCache(torch.utils.data.Dataset):
    """Items of a finished cache: {"x": normalised latents, "y": label}. Images draw z ~ N(mean, std) per load.

    An item reads its own rows from its memory-mapped shard; nothing else is held but the labels. (Before session 52
    the whole cache was read into every process's memory at the start: ImageNet's 1.28 M images, their posterior
    moments and those of their flips, are 82 GB per process.)
    """

    def __init__(self, root, seed: int = 0, hflip: bool = True):
        self.root = Path(root)
        mpath = self.root / MANIFEST
        if not mpath.is_file():
            raise FileNotFoundError(f"{self.root}: no {MANIFEST} (an unfinished or missing latent cache)")
        self.manifest = json.loads(mpath.read_text())
        self.latent_channels = self.manifest["latent_channels"]
        self.images = self.manifest["images"]
        self.seed, self.hflip = seed, hflip
        if hflip and not self.images:
            log.warning("%s: a video cache holds each clip as encoded, unflipped: data.hflip is not applied", self.root)
        self.shard_size = self.manifest["shard_size"]
        self._open: OrderedDict = OrderedDict()  # (pid, shard) -> its safe_open handle
        labels = torch.cat([self._rows(s, "labels") for s in range(len(self.manifest["shards"]))])
        self.classes = self.manifest.get("classes")  # the cached dataset's class names by id, when it had them
        ids = int(labels.max()) + 1 if labels.numel() and labels.min() >= 0 else 0  # a -1 among ids: unconditional
        self.num_classes = len(self.classes) if self.classes else ids

    def _rows(self, s: int, key: str, j: int | None = None) -> torch.Tensor:
        """Row j of tensor ``key`` of shard s (all its rows when j is None), read from the mapped file alone."""
        where = (os.getpid(), s)  # a handle opened before a data worker forked stays its parent's
        f = self._open.get(where)
        if f is None:
            path = self.root / self.manifest["shards"][s]
            try:
                f = self._open[where] = safe_open(path, framework="pt")
            except FileNotFoundError:
                raise
            except Exception as e:  # truncated or corrupt (safetensors' own error): one line, never its traceback
                raise ValueError(f"{path}: unreadable ({str(e).strip().splitlines()[0][:120]}); delete it and re-run "
                                 "mfvideo-cache-latents with the cache's settings: it encodes missing shards only"
                                 ) from None
            while len(self._open) > OPEN_SHARDS:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(where)
        return f.get_tensor(key) if j is None else f.get_slice(key)[j : j + 1][0]

    def __getstate__(self):  # to a data worker (spawned): open files do not travel
        return {**self.__dict__, "_open": OrderedDict()}

    def __len__(self):
        return self.manifest["num_items"]

    def __getitem__(self, index: int) -> dict:
        i, epoch = index % len(self), index // len(self)
        s, j = divmod(i, self.shard_size)
        y = int(self._rows(s, "labels", j))
        if not self.images:
            return {"x": self._rows(s, "latents", j).float(), "y": y, "index": i}
        rng = np.random.default_rng([self.seed, epoch, i])
        flip = self.hflip and rng.random() < 0.5
        mean, std = (self._rows(s, k, j) for k in (("mean_flip", "std_flip") if flip else ("mean", "std")))
        eps = torch.from_numpy(rng.standard_normal(mean.shape).astype(np.float32))
        z = mean.float() + std.float() * eps
        x = (z - self.manifest["shift"]) * self.manifest["scale"]
        return {"x": x, "y": y, "index": i}
