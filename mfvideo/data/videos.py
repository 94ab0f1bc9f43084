"""Video folders (``root/<class>/<file>.mp4``, UCF-101 style) or a manifest (CSV / JSONL of path[, label]).

Clips: ``num_frames`` frames every ``frame_stride`` frames (or at ``target_fps``), a random (train) or centre (eval)
temporal window, short side resized and centre-cropped. Only the clip's frames are decoded. A broken or too-short
file is skipped with one warning naming it and the reason, and counted; when more than ``max_bad_fraction`` of
the files tried are broken the run stops with a clear error.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from .listing import labelled_files, split_folder
from .transforms import grey_if, resize_center_crop
from .video_io import VIDEO_EXTS, VideoError, frame_files, probe, read_frames

log = logging.getLogger(__name__)


class TooManyBadFiles(ValueError):
    pass


def read_manifest(path: Path) -> tuple[list[tuple[str, int]], list[str] | None]:
    """(path, label id) rows and the class names from a CSV (a header with ``path`` and an optional ``label``
    column) or a JSONL file (``{"path": ..., "label": ...}`` per line). Labels are class ids (integers) or class
    names (any other text: ids in sorted name order, the names kept with the model); no label is -1 (unlabelled)."""
    rows = []
    if path.suffix == ".jsonl":
        for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
            if line.strip():
                try:
                    d = json.loads(line)
                    rows.append((n, str(d["path"]), d.get("label")))
                except (ValueError, KeyError, TypeError) as e:
                    raise ValueError(f"{path}:{n}: bad manifest row ({e})") from None
    else:
        with open(path, newline="", encoding="utf-8-sig") as f:  # UTF-8, with or without the BOM Excel writes
            reader = csv.DictReader(f)
            given = reader.fieldnames or []
            reader.fieldnames = [str(c).strip().lower() for c in given]  # "Path, Label" as "path,label"
            if "path" not in reader.fieldnames:
                raise ValueError(f"{path}: the CSV header needs a 'path' column, got {given}")
            other = [c for c in reader.fieldnames if c not in ("path", "label")]
            if other:  # a 'class' column would have trained an unlabelled model without a word
                log.warning("%s: column(s) %s not read: a manifest has 'path' and 'label'%s", path, ", ".join(other),
                            "" if "label" in reader.fieldnames else " (none here: every video unlabelled)")
            rows = [(n, d["path"], d.get("label")) for n, d in enumerate(reader, 2)]
    if not rows:
        raise ValueError(f"{path}: the manifest lists no videos")
    given = [(n, str(y).strip()) for n, _, y in rows if y is not None and str(y).strip() != ""]
    names = any(not y.lstrip("-").isdigit() for _, y in given)
    classes = sorted({y for _, y in given}) if names else None
    for n, y in given:
        if not names and int(y) < -1:
            raise ValueError(f"{path}:{n}: label {y} is not a class id (>= 0, or -1 for none)")
    ids = {y: i for i, y in enumerate(classes)} if names else None
    base = path.parent
    out = []
    for _, p, y in rows:
        y = "" if y is None else str(y).strip()
        label = -1 if y == "" else (ids[y] if names else int(y))
        out.append((str(p if Path(p).is_absolute() else base / p), label))
    return out, classes


def frame_step(fps: float, frame_stride: int, target_fps: float | None) -> int:
    """Frames between a clip's frames in a file of ``fps``: the step nearest to ``target_fps`` when that is set (and
    the file's rate known), else ``frame_stride``. Training clips and the pipeline's reading of a file share it."""
    if target_fps and fps:
        return max(1, round(fps / target_fps))
    return max(1, int(frame_stride))


class VideoFolder(torch.utils.data.Dataset):
    def __init__(self, files: list[tuple[str, int]], num_frames: int = 16, resolution: int = 64,
                 frame_stride: int = 1, target_fps: float | None = None, train: bool = True, hflip: bool = False,
                 seed: int = 0, max_bad_fraction: float = 0.5, classes: list[str] | None = None, backend: str = "auto",
                 channels: int = 3):
        if not files:
            raise FileNotFoundError("the video dataset is empty")
        self.files, self.classes = files, classes
        labels = {y for _, y in files}
        self.num_classes = len(classes) if classes else (max(labels) + 1 if min(labels) >= 0 else 0)
        self.num_frames, self.resolution, self.frame_stride, self.target_fps = num_frames, resolution, frame_stride, target_fps
        self.train, self.hflip, self.seed, self.backend, self.channels = train, hflip, seed, backend, channels
        self.max_bad_fraction = max_bad_fraction
        self.bad: dict[str, str] = {}
        self.info: dict[str, object] = {}  # path -> VideoInfo, from scan()
        self.tried = 0

    @classmethod
    def from_folder(cls, root, **kw) -> "VideoFolder":
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"video folder {root} does not exist")
        # <class>/<file>, or a flat folder: unlabelled; a file is a video, or a folder of its frames (one image each)
        files, classes = labelled_files(root, VIDEO_EXTS, item_folder=lambda d: bool(frame_files(d)))
        if not files:
            raise FileNotFoundError(f"video folder {root} holds no videos ({', '.join(VIDEO_EXTS)}, or folders of "
                                    "frames)")
        return cls(files, classes=classes, **kw)

    @classmethod
    def from_config(cls, cfg, split: str = "train") -> "VideoFolder":
        kw = dict(num_frames=cfg.num_frames, resolution=cfg.resolution, frame_stride=cfg.frame_stride,
                  target_fps=cfg.target_fps, train=split == "train", hflip=cfg.hflip, seed=cfg.seed,
                  max_bad_fraction=cfg.max_bad_fraction, channels=cfg.channels)
        if cfg.manifest:
            files, classes = read_manifest(Path(cfg.manifest))
            return cls(files, classes=classes, **kw)
        root = Path(cfg.root or "")
        return cls.from_folder(split_folder(root, split) if root.is_dir() else root, **kw)

    def __len__(self):
        return len(self.files)

    def scan(self, threads: int | None = None) -> "VideoFolder":
        """Probe every file once, here (headers only): broken or too-short files are named with their reason,
        counted over the whole dataset and dropped, so data workers never meet them; too many stop the run. The
        probes run in a pool of ``threads`` (default: the CPU count, at most 16; decord opens a file without the
        GIL): UCF-101's 13,320 files took ~7 minutes one by one at decord's ~30 ms each. What each probe found is
        kept, so that loading an item does not probe its file again."""
        from concurrent.futures import ThreadPoolExecutor

        def look(path: str):
            try:
                info = probe(path, self.backend)
                self.clip_window(info.num_frames, info.fps, None)
                return info
            except VideoError as e:
                return e

        threads = threads or min(16, os.cpu_count() or 1)
        with ThreadPoolExecutor(threads) as pool:
            found = list(pool.map(look, [path for path, _ in self.files]))
        good = []
        for (path, label), info in zip(self.files, found):  # reported in the dataset's order, after the pool
            if isinstance(info, VideoError):
                self.bad[path] = info.reason
                log.warning("skipping %s: %s", path, info.reason)
            else:
                self.info[path] = info
                good.append((path, label))
        total = len(self.files)
        if self.bad:
            log.warning("%d of %d videos skipped", len(self.bad), total)
        if not good or len(self.bad) > self.max_bad_fraction * total:
            example = next(iter(self.bad.items()))
            raise TooManyBadFiles(f"{len(self.bad)} of {total} videos are unreadable or too short "
                                  f"(e.g. {example[0]}: {example[1]}); check the dataset")
        self.files = good
        return self

    def clip_window(self, num_available: int, fps: float, rng: np.random.Generator | None) -> list[int]:
        """Frame indices of one clip: a random window when training, the centre one otherwise."""
        stride = frame_step(fps, self.frame_stride, self.target_fps)
        span = (self.num_frames - 1) * stride + 1
        if num_available < span:
            raise VideoError("", f"too short: {num_available} frames, a clip needs {span}")
        start = int(rng.integers(0, num_available - span + 1)) if rng is not None else (num_available - span) // 2
        return list(range(start, start + span, stride))

    def load(self, i: int, epoch: int = 0) -> dict:
        path, label = self.files[i]
        rng = np.random.default_rng([self.seed, epoch, i]) if self.train else None
        info = self.info.get(path) or probe(path, self.backend)
        try:
            idx = self.clip_window(info.num_frames, info.fps, rng)
        except VideoError as e:
            raise VideoError(path, e.reason) from None
        frames = read_frames(path, idx, self.backend)  # (T, H, W, 3) uint8
        x = resize_center_crop(frames, self.resolution)  # (3, T, r, r)
        if self.hflip and rng is not None and rng.random() < 0.5:
            x = x.flip(-1)
        return {"x": grey_if(x, self.channels), "y": label, "index": i, "frames": idx}

    def __getitem__(self, index: int) -> dict:
        i, epoch = index % len(self.files), index // len(self.files)
        for attempt in range(len(self.files)):
            j = (i + attempt) % len(self.files)
            self.tried += 1
            if self.files[j][0] in self.bad:
                continue
            try:
                return self.load(j, epoch)
            except VideoError as e:
                self.bad[self.files[j][0]] = e.reason
                log.warning("skipping %s: %s (%d bad so far)", self.files[j][0], e.reason, len(self.bad))
                if len(self.bad) > self.max_bad_fraction * len(self.files):
                    raise TooManyBadFiles(
                        f"{len(self.bad)} of {len(self.files)} videos are unreadable (e.g. {e}); check the dataset"
                    ) from None
        raise TooManyBadFiles(f"none of the {len(self.files)} videos could be read")
