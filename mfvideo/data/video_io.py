"""Reading video files: decord (the ``video`` extra) with imageio-ffmpeg as the fallback; GIFs through imageio; a
folder of frames (one image per frame, natural name order) through PIL, one file per frame read.

Frames are the stream's own, each once, also for variable-frame-rate files (decord does so; ffmpeg is told to).
Only the requested frames are decoded: decord seeks, the imageio path streams and stops at the last wanted
frame, so a long video is never read whole into memory. Every failure is a ``VideoError`` naming the file.

decord2 3.4.0 returns frames with a wrong channel count for some widths (e.g. 32 and 96 pixels); each decoded
batch is checked and such files are read through imageio-ffmpeg instead.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..frames import pil_rgb, pil_shown_size

log = logging.getLogger(__name__)
VIDEO_EXTS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".gif")
# read through PIL: GIF, and still images as one-frame clips (image-to-video; animated PNG / WebP frame by frame)
PIL_EXTS = (".gif", ".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
# a folder of frames, one still per file (a render's or a dataset's extracted frames), read in natural name order
FRAME_EXTS = tuple(e for e in PIL_EXTS if e != ".gif")


def fps_mode(mode: str = "passthrough") -> list[str]:
    """ffmpeg's output options for a frame-rate mode. ``passthrough`` (the readers'): every decoded frame exactly
    once; without it ffmpeg resamples a variable-frame-rate video to a constant rate, repeating and dropping frames
    (the frame count and the frames read then disagree). ``-fps_mode`` exists from ffmpeg 5.1; older ones
    (imageio-ffmpeg 0.5.0 bundles 4.2.2, and IMAGEIO_FFMPEG_EXE may name a system's) refuse it ("Option not found")
    and take ``-vsync``, which the newer ones still take but deprecate."""
    return ["-vsync" if _ffmpeg_before_5_1() else "-fps_mode", mode]


@functools.lru_cache(maxsize=None)
def _ffmpeg_before_5_1() -> bool:
    import imageio_ffmpeg

    found = re.match(r"n?(\d+)\.(\d+)", imageio_ffmpeg.get_ffmpeg_version())  # "4.2.2-static", "n9.0.2-17-g..."
    return found is not None and (int(found[1]), int(found[2])) < (5, 1)  # no match: a git build ("N-1234-g..."), new


class _UprightNotice(logging.Filter):
    """imageio-ffmpeg warns, each time it opens a video stored rotated (a phone's portrait video: landscape frames and
    a display rotation), that the frames it gives differ in size from the stored ones. ffmpeg turns them upright, as
    they are meant to be shown, and decord does the same: nothing is wrong, and a line per read is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is different from the source frame size" not in record.getMessage()


logging.getLogger("imageio_ffmpeg").addFilter(_UprightNotice())


class VideoError(ValueError):
    """A video that cannot be used (missing, corrupt, truncated, too short)."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


@dataclass
class VideoInfo:
    num_frames: int
    fps: float
    height: int
    width: int


@functools.cache
def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except Exception:
        return False
    return True


def _backend(path: Path, backend: str) -> str:
    if path.is_dir():
        return "frames"
    if path.suffix.lower() in PIL_EXTS:
        return "pil"
    if backend == "auto":
        return "decord" if decord_available() else "imageio"
    if backend == "decord" and not decord_available():
        raise VideoError(path, "decord is not installed (pip install 'mfvideo[video]')")
    return backend


def frame_files(folder: Path) -> list[Path]:
    """A folder of frames: its image files (``FRAME_EXTS``, any case) in natural order (frame_2 before frame_10),
    hidden files and others (a notes.txt) left out."""
    from .listing import is_data

    def natural(f: Path) -> list:
        return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", f.name)]

    return sorted((f for f in folder.iterdir() if f.is_file() and is_data(f) and f.suffix.lower() in FRAME_EXTS),
                  key=natural)


def check_exists(path: Path) -> None:
    """A readable, non-empty file or a folder of frames, or a VideoError naming what it is instead (missing, a URL,
    empty, a folder without frames)."""
    if path.is_dir():
        if not frame_files(path):
            raise VideoError(path, f"a folder without image frames ({' / '.join(e[1:] for e in FRAME_EXTS)}): a "
                                   "video is a file, or a folder of one image per frame")
        return
    if not path.is_file():
        if (url := re.match(r"(https?|ftp|s3|gs):/+(.*)", str(path))) and not path.exists():  # Path folds "//" to "/"
            raise VideoError(f"{url[1]}://{url[2]}",
                             "a URL; nothing is downloaded here: fetch the file and pass its path")
        raise VideoError(path, "no such file")
    if path.stat().st_size == 0:
        raise VideoError(path, "empty file")


def probe(path, backend: str = "auto") -> VideoInfo:
    """Frame count, fps and size, without decoding the frames."""
    path = Path(path)
    check_exists(path)
    kind = _backend(path, backend)
    with _video_errors(path, "unreadable"):
        if kind == "decord":
            try:
                import decord

                with _native_stderr_silenced():
                    vr = decord.VideoReader(str(path), num_threads=1)
                h, w = vr[0].shape[:2] if len(vr) else (0, 0)
                return VideoInfo(len(vr), float(vr.get_avg_fps()), int(h), int(w))
            except Exception as e:  # e.g. a webm without a duration (as browsers record them): ffmpeg reads it
                log.info("%s: decord cannot open it (%s); probing with imageio-ffmpeg", path, _short(e))
                kind = "imageio"
        if kind == "pil":
            return _probe_pil(path)
        if kind == "frames":  # no frame rate: read at the model's
            files = frame_files(path)
            with _open_image(files[0]) as im:
                return VideoInfo(len(files), 0.0, *pil_shown_size(im))
        import imageio.v2 as imageio

        reader = imageio.get_reader(str(path), format="FFMPEG", output_params=fps_mode())
        try:
            meta = reader.get_meta_data()
            n = reader.count_frames()  # decodes headers only; never list() an ffmpeg reader (infinite length)
            w, h = meta["size"]
            return VideoInfo(int(n), float(meta.get("fps", 0.0) or 0.0), int(h), int(w))
        finally:
            reader.close()


def _probe_pil(path: Path) -> VideoInfo:
    from PIL import Image

    with Image.open(path) as im:
        n = getattr(im, "n_frames", 1)
        duration = im.info.get("duration", 100) or 100
        return VideoInfo(int(n), 1000.0 / duration, *pil_shown_size(im))  # a phone photo: upright


def read_frames(path, indices, backend: str = "auto") -> np.ndarray:
    """Frames at ``indices`` (any order, repeats allowed) as uint8 (len, H, W, 3)."""
    path = Path(path)
    check_exists(path)
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("no frame indices requested")
    kind = _backend(path, backend)
    with _video_errors(path, "corrupt or unreadable"):
        if kind == "decord":
            try:
                out = _read_decord(path, indices)
            except VideoError:
                raise
            except Exception as e:
                log.info("%s: decord cannot read it (%s); using imageio-ffmpeg", path, _short(e))
                out = None
            if out is not None:
                return out
            kind = "imageio"  # decord mis-decoded or could not open this file
        if kind == "pil":
            return _read_pil(path, indices)
        if kind == "frames":
            return _read_frame_files(path, frame_files(path), indices)
        return _read_imageio(path, indices)


def _read_decord(path: Path, indices: list[int]) -> np.ndarray | None:
    import decord

    with _native_stderr_silenced():
        vr = decord.VideoReader(str(path), num_threads=1)
    n = len(vr)
    if max(indices) >= n:
        raise VideoError(path, f"has {n} frames, frame {max(indices)} was requested")
    batch = vr.get_batch(indices).asnumpy() if _decord_shape_ok(vr) else None
    if batch is None or batch.ndim != 4 or batch.shape[-1] != 3:
        log.info("%s: decord returned malformed frames; reading it with imageio-ffmpeg", path)
        return None
    return batch


def _decord_shape_ok(vr) -> bool:
    try:
        return vr[0].shape[-1] == 3
    except Exception:
        return False


def _read_imageio(path: Path, indices: list[int]) -> np.ndarray:
    import imageio.v2 as imageio

    wanted = sorted(set(indices))
    last = wanted[-1]
    got: dict[int, np.ndarray] = {}
    reader = imageio.get_reader(str(path), format="FFMPEG", output_params=fps_mode())
    try:
        for i, frame in enumerate(reader):  # streams; stops after the last wanted frame
            if i in wanted:
                got[i] = np.asarray(frame)[..., :3]
            if i >= last:
                break
    finally:
        reader.close()
    if last not in got:
        raise VideoError(path, f"has {len(got) and max(got) + 1 or 0}+ readable frames, frame {last} was requested")
    return np.stack([got[i] for i in indices])


def _read_pil(path: Path, indices: list[int]) -> np.ndarray:
    from PIL import Image, ImageSequence

    wanted = set(indices)
    got = {}
    with Image.open(path) as im:
        for i, frame in enumerate(ImageSequence.Iterator(im)):
            if i in wanted:
                got[i] = pil_rgb(frame)
            if i >= max(indices):
                break
    if max(indices) not in got:
        raise VideoError(path, f"has {len(got)} frames, frame {max(indices)} was requested")
    return np.stack([got[i] for i in indices])


def _open_image(path: Path):
    from PIL import Image

    return Image.open(path)  # a context manager: the file is closed on leaving it


def _read_frame_files(folder: Path, files: list[Path], indices: list[int]) -> np.ndarray:
    """Frames of a folder of frames, each file once however often it is asked for; every frame the first's size."""
    if max(indices) >= len(files):
        raise VideoError(folder, f"has {len(files)} frames, frame {max(indices)} was requested")
    with _open_image(files[0]) as im:
        size = pil_shown_size(im)  # (H, W)
    got = {}
    for i in sorted(set(indices)):
        try:
            with _open_image(files[i]) as im:
                got[i] = pil_rgb(im)
        except Exception as e:
            raise VideoError(files[i], f"unreadable frame ({_short(e)})") from None
        if got[i].shape[:2] != tuple(size):
            raise VideoError(files[i], f"{got[i].shape[1]} x {got[i].shape[0]}, the folder's first frame "
                                       f"({files[0].name}) {size[1]} x {size[0]}: a clip's frames are one size")
    return np.stack([got[i] for i in indices])


def iter_frames(path, backend: str = "auto", chunk: int = 32) -> Iterator[np.ndarray]:
    """Every frame in order, as uint8 chunks (n <= chunk, H, W, 3), decoded only as they are consumed: memory holds
    one chunk, whatever the video's length."""
    path = Path(path)
    check_exists(path)
    kind = _backend(path, backend)
    if kind == "frames":
        files = frame_files(path)
        for start in range(0, len(files), chunk):
            yield _read_frame_files(path, files, list(range(start, min(len(files), start + chunk))))
        return
    if kind == "decord":  # a reader per chunk: one decord reader over a whole file keeps what it decoded (3,000
        n = probe(path, backend).num_frames  # frames of 640x360: 2.2 GB peak against 0.66; session 30)
        for start in range(0, n, chunk):
            yield read_frames(path, range(start, min(n, start + chunk)), backend)
        return
    with _video_errors(path, "corrupt or unreadable"):
        if kind == "pil":
            from PIL import Image, ImageSequence

            with Image.open(path) as im:
                frames = (pil_rgb(f) for f in ImageSequence.Iterator(im))
                yield from _chunks(frames, chunk)
            return
        import imageio.v2 as imageio

        reader = imageio.get_reader(str(path), format="FFMPEG", output_params=fps_mode())
        try:
            yield from _chunks((np.asarray(f)[..., :3] for f in reader), chunk)
        finally:
            reader.close()


def _chunks(frames, size: int) -> Iterator[np.ndarray]:
    buf = []
    for f in frames:
        buf.append(f)
        if len(buf) == size:
            yield np.stack(buf)
            buf = []
    if buf:
        yield np.stack(buf)


def read_video(path, max_frames: int | None = None, backend: str = "auto") -> tuple[np.ndarray, float]:
    """All frames (or the first ``max_frames``) as uint8 (T, H, W, 3), and the fps."""
    info = probe(path, backend)
    n = info.num_frames if max_frames is None else min(info.num_frames, max_frames)
    if n < 1:
        raise VideoError(path, "no frames")
    return read_frames(path, range(n), backend), info.fps


@contextlib.contextmanager
def _native_stderr_silenced():
    """decord's C++ code prints its own lines to file descriptor 2 when it cannot open a file; we report the failure
    ourselves (one line), so its noise is dropped while a reader opens. Counted across threads (a dataset's scan
    probes in a pool): the first opener saves fd 2 and the last one restores it (two threads each saving and restoring
    would leave it pointing at /dev/null)."""
    with _SILENCE_LOCK:
        if _SILENCE["depth"] == 0:
            try:
                saved = os.dup(2)
            except OSError:  # no stderr at all
                saved = None
            if saved is not None:
                with open(os.devnull, "wb") as null:
                    os.dup2(null.fileno(), 2)
            _SILENCE["saved"] = saved
        _SILENCE["depth"] += 1
    try:
        yield
    finally:
        with _SILENCE_LOCK:
            _SILENCE["depth"] -= 1
            if _SILENCE["depth"] == 0 and _SILENCE["saved"] is not None:
                os.dup2(_SILENCE["saved"], 2)
                os.close(_SILENCE["saved"])
                _SILENCE["saved"] = None


_SILENCE_LOCK = threading.Lock()
_SILENCE: dict = {"depth": 0, "saved": None}


@contextlib.contextmanager
def _video_errors(path, what: str):
    """Any decoder failure inside the block -> one ``VideoError`` naming the file (``what (the decoder's reason)``)."""
    try:
        yield
    except VideoError:
        raise
    except Exception as e:
        if "does not contain any stream" in str(e) or "matches no streams" in str(e):  # ffmpeg's words for it
            raise VideoError(path, "has no video stream (an audio-only file?)") from None
        raise VideoError(path, f"{what} ({_short(e)})") from None


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[-1] if text else type(e).__name__)[:200]
