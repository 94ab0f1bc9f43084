"""Turning what a user hands us (a path, an array, a tensor) into uint8 clips at the model's resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from ..data.transforms import resize_center_crop
from ..frames import frames_shape, pixels_to_uint8, to_uint8


def _resize(frames: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 (T, H, W, 3) -> uint8 (T, resolution, resolution, 3): short side resized, centre-cropped."""
    if frames.shape[1:3] == (resolution, resolution):
        return frames
    return pixels_to_uint8(resize_center_crop(frames, resolution)[None])[0]  # (3, T, r, r) in [-1, 1] -> uint8


def still_paths(video) -> bool:
    """A list of still image files (keyframes for ``condition``, a clip's frames): one clip, a frame each, as the
    files of a folder of frames are (``video_io.FRAME_EXTS``)."""
    from ..data.video_io import FRAME_EXTS

    return isinstance(video, (list, tuple)) and bool(video) and all(
        isinstance(v, (str, Path)) and Path(v).suffix.lower() in FRAME_EXTS for v in video)


def expand_home(video):
    """A path given as text or a Path with ``~`` as the home folder, as a shell would have it; anything else (frames,
    a URL, which the readers name as such) as it is."""
    if isinstance(video, Path) or isinstance(video, str) and video.startswith("~"):
        return Path(video).expanduser()
    return video


def file_rate(video, data) -> tuple[int, float | None]:
    """How a model reads a video file: every ``stride``-th frame, as its training clips stepped through a file of that
    frame rate (``data.target_fps``: the step nearest to it; else ``data.frame_stride``), and the frame rate of the
    frames kept (the file's / stride: the output is written at it, so the given frames play at their true speed).
    Arrays, tensors and stills: (1, None), taken as they are."""
    if not isinstance(video, (str, Path)):
        return 1, None
    from ..data.video_io import probe
    from ..data.videos import frame_step

    info = probe(Path(video))
    if info.num_frames <= 1 or not info.fps:
        return 1, None
    stride = frame_step(info.fps, data.frame_stride, data.target_fps)
    return stride, info.fps / stride


def _kept(n: int, start: int, count: int, stride: int) -> np.ndarray:
    """Which of frames start .. start + count - 1 of an n-frame file are kept at ``stride``: those a whole number of
    strides before the last frame (the context is the video's end, so the end is kept)."""
    return (n - 1 - np.arange(start, start + count)) % stride == 0


def _read_path(path: Path, resolution: int, last: int | None, stride: int = 1) -> np.ndarray:
    """Decode a video file chunk by chunk, resizing as it goes (memory: one chunk at the file's resolution)."""
    from ..data.video_io import VideoError, probe, read_frames

    if last is not None:
        n = probe(path).num_frames
        span = (last - 1) * stride + 1
        if n < span:
            at = f" ({span} frames at a step of {stride}, the model's frame rate)" if stride > 1 else ""
            raise VideoError(path, f"has {n} frames, fewer than the {last} context frames requested{at}")
        return _resize(read_frames(path, range(n - span, n, stride)), resolution)
    return np.concatenate([chunk[0] for chunk in iter_clip(path, resolution, stride)])  # (T, r, r, 3)


def frame_count(video, stride: int = 1) -> int:
    """Frames per clip of what ``load_clip`` takes, without decoding a file (0 for a layout it would refuse); a file
    read at every ``stride``-th frame counts the frames kept."""
    if isinstance(video, (str, Path)):
        from ..data.video_io import probe

        n = probe(Path(video)).num_frames
        return (n - 1) // stride + 1 if n > 0 else 0
    if still_paths(video):
        return len(video)
    shape = frames_shape(video)  # (…, H, W, 3), as load_clip will read it
    return {3: 1, 4: shape[0], 5: shape[1]}.get(len(shape), 0)


def clip_count(video) -> int:
    """Clips in what ``load_clip`` takes: a batch (B, T, H, W, 3) or a list of clips holds B, anything else one."""
    if isinstance(video, (str, Path)) or still_paths(video):
        return 1
    shape = frames_shape(video)
    return shape[0] if len(shape) == 5 else 1


def iter_clip(video, resolution: int, stride: int = 1) -> Iterator[np.ndarray]:
    """``load_clip``'s frames in chunks of uint8 (B, n, resolution, resolution, 3): a file decoded and resized as the
    chunks are consumed (memory: one chunk; at ``stride``, every stride-th frame up to its last), anything else at
    once."""
    if not isinstance(video, (str, Path)):
        yield load_clip(video, resolution)
        return
    from ..data.video_io import VideoError, iter_frames, probe

    n = probe(Path(video)).num_frames if stride > 1 else 0
    empty, start = True, 0
    for chunk in iter_frames(Path(video)):
        empty = False
        if stride > 1:
            chunk, start = chunk[_kept(n, start, len(chunk), stride)], start + len(chunk)
            if not len(chunk):
                continue
        yield _resize(chunk, resolution)[None]
    if empty:
        raise VideoError(video, "no frames")


def load_clip(video, resolution: int, last: int | None = None, stride: int = 1) -> np.ndarray:
    """A path (mp4, webm, avi, gif; a still image, png / jpg / webp / bmp / tif, is a one-frame clip; a folder of
    such images, or a list of their paths, a clip: the folder's in natural name order), a uint8 array
    (T, H, W, 3) / (B, T, H, W, 3) / one image (H, W, 3), or a float array / tensor in [0, 1] of the same layouts
    (RGBA and grey too; a tensor may be channels first, (B, T, 3, H, W) as a ``"pt"`` output: ``to_uint8``) ->
    uint8 (B, T, resolution, resolution, 3), short side resized and centre-cropped.

    ``last``: keep only the last ``last`` frames (a file is then decoded from near its end only). ``stride``: a file
    is read at every stride-th frame, ending at its last (``file_rate``).
    """
    if isinstance(video, (str, Path)):
        arr = _read_path(Path(video), resolution, last, stride)
    elif still_paths(video):  # image files of any sizes, each resized as it is read
        arr = np.concatenate([_read_path(Path(v).expanduser(), resolution, None) for v in video])[None]
    else:
        arr = to_uint8(video, "video")  # uint8 (…, H, W, 3); float outside [0, 1] is an error, grey becomes RGB
    if arr.ndim == 3:
        arr = arr[None]  # one image (H, W, 3): a one-frame clip, as an image file is
    if arr.ndim == 4:
        arr = arr[None]
    if arr.ndim != 5 or 0 in arr.shape:
        raise ValueError(f"expected frames (T, H, W, 3) or (B, T, H, W, 3), got shape {arr.shape}")
    if last is not None:
        arr = arr[:, -last:]
    return np.stack([_resize(clip, resolution) for clip in arr])


def first_frames(video, resolution: int, count: int, stride: int = 1) -> np.ndarray:
    """The first ``count`` frames (uint8 (B, count, r, r, 3)) of a clip, a file's at every ``stride``-th frame as
    ``iter_clip`` keeps them, decoded no further; fewer than ``count`` is an error."""
    got, n = [], 0
    for chunk in iter_clip(video, resolution, stride):  # (B, n, r, r, 3)
        got.append(chunk)
        n += chunk.shape[1]
        if n >= count:
            break
    if n < count:
        at = f" at a step of {stride} (the model's frame rate)" if stride > 1 else ""
        raise ValueError(f"{_name(video)} has {n} frame{'s' * (n != 1)}{at}, fewer than the {count} context frames "
                         "requested")
    return np.concatenate(got, axis=1)[:, :count]


def _name(video) -> str:
    return str(video) if isinstance(video, (str, Path)) else "the input"
