"""Files in and out: videos through imageio-ffmpeg (mp4, mov, mkv: H.264 yuv420p; webm: VP9; gif), PNG grids,
atomic writes. Frames may be uint8 or float in [0, 1] (``frames.to_uint8``)."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from .frames import to_uint8


def _umask() -> int:
    mask = os.umask(0)  # (the only way to read it: set and restore, once, at import)
    os.umask(mask)
    return mask


_MASK = _umask()
NEW_FILE_MODE = 0o666 & ~_MASK  # what open() gives a new file; mkstemp's and safetensors' temporaries are 0600
NEW_DIR_MODE = 0o777 & ~_MASK  # what mkdir gives a new folder; mkdtemp's is 0700


def as_new_file(*paths: str | Path) -> None:
    """Give files written through a private temporary (``tempfile.mkstemp``, safetensors' writer: mode 0600) the mode
    an ordinary new file gets under the umask, so a checkpoint or a video is as readable as any other file of its
    owner's (a colleague on a shared machine, a web server)."""
    for p in paths:
        os.chmod(p, NEW_FILE_MODE)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None):
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds. The file keeps the
    mode of the one it replaces, else an ordinary new file's (``NEW_FILE_MODE``). ``~`` is the home folder (it was a
    folder named ``~`` made here)."""
    path = Path(path).expanduser()
    tmp = _temporary_beside(path, suffix or path.suffix)
    try:
        yield tmp
        _put_in_place(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(path: str | Path):
    """Yield a new hidden folder beside ``path``; only if the block succeeds does it take ``path``'s place (a folder
    there before is moved aside, then deleted). A failure or a kill mid-write leaves ``path`` as it was, never a
    pipeline folder of one run's weights and another's config."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(tmp, NEW_DIR_MODE)
    old = None
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)  # aside (a rename), so that tmp can take the name
        os.replace(tmp, path)
    except BaseException:
        if old is not None and not path.exists():
            os.replace(old / path.name, path)  # put back what was there
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _put_in_place(tmp: Path, path: Path) -> None:
    """Rename a finished temporary onto ``path`` (atomic), with the mode of the file it replaces, else an ordinary new
    file's (``NEW_FILE_MODE``)."""
    os.chmod(tmp, path.stat().st_mode & 0o7777 if path.is_file() else NEW_FILE_MODE)
    os.replace(tmp, path)


def _temporary_beside(path: Path, suffix: str) -> Path:
    """A new empty file in ``path``'s folder (made if missing), hidden, to be renamed onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


_H264 = dict(codec="libx264", pix_fmt_out="yuv420p", even=True, quality=True)
# A video's container and codec, by its file name's suffix (ffmpeg picks the container by the name).
VIDEO_FORMATS = {
    ".mp4": _H264, ".mov": _H264, ".mkv": _H264,
    ".webm": dict(codec="libvpx-vp9", pix_fmt_out="yuv420p", even=True, output_params=["-crf", "32", "-b:v", "0"]),
    # one palette for the whole clip, no dithering (generated frames dithered would speckle), played in a loop
    ".gif": dict(codec="gif", pix_fmt_out="pal8", output_params=[
        "-filter_complex", "split[a][b];[a]palettegen=stats_mode=full[p];[b][p]paletteuse=dither=none", "-loop", "0"]),
}


def video_format(path: str | Path) -> dict:
    """How a video named ``path`` is written (``VIDEO_FORMATS``), or a ValueError naming the suffixes there are: the
    file's name says what it holds (an mp4 written as clip.gif opened nowhere)."""
    path = Path(path)
    if (suffix := path.suffix.lower()) not in VIDEO_FORMATS:
        what = f"its suffix {path.suffix!r} is none of them" if path.suffix else "it has no suffix"
        raise ValueError(f"output {path}: a video is written as {', '.join(VIDEO_FORMATS)}; {what}")
    return VIDEO_FORMATS[suffix]


class OutputError(OSError):
    """A file could not be written (full disk, ffmpeg failure); the previous file at that path is untouched."""


def save_video(frames, path: str | Path, fps: float = 8.0, quality: int = 8) -> Path:
    """Write (T, H, W, 3) frames as a video, atomically: the format by ``path``'s suffix (``VIDEO_FORMATS``: .mp4,
    .mov, .mkv H.264 yuv420p, H and W even; .webm VP9, H and W even; .gif, one palette, looping), every format one
    that ``data.video_io`` reads back.

    ``frames`` may also be an iterable of such chunks (a generator, ``MFVideoPipeline.extend_stream``'s clips): they
    are encoded as they come, so memory holds one chunk whatever the video's length. An error raised by the chunks'
    source propagates as it is, and nothing is written.

    The temporary file is decoded back (frame count) before it replaces ``path``: ffmpeg can fail without imageio
    raising (a full disk), and a file that does not hold every frame must never claim success.
    """
    arrays = isinstance(frames, (np.ndarray, list, tuple)) or hasattr(frames, "shape")
    with VideoWriter(path, fps, quality) as writer:
        for chunk in [frames] if arrays else frames:  # the source's own errors propagate as they are
            writer.write(chunk)
    return writer.path


def save_videos(chunks, paths, fps: float = 8.0, quality: int = 8) -> list[Path]:
    """Write a stream of batched chunks (B, n, H, W, 3) -- ``MFVideoPipeline.generate_stream``'s -- as B video files,
    clip b to ``paths[b]``, encoded as the chunks come (one ffmpeg process per clip, open together), so memory holds
    one chunk whatever the clips' length; a whole batch (B, T, H, W, 3), such as a pipeline output's ``frames``, is
    one chunk. Each file is written atomically as in ``save_video`` (whole or not at all); an error of the source, or
    of a file's encoder while the chunks come, leaves none of them written."""
    paths = [Path(p).expanduser() for p in paths]
    if hasattr(chunks, "shape"):  # an array or tensor: one chunk (a stream yields several)
        chunks = [chunks]
    with contextlib.ExitStack() as stack:
        writers = [stack.enter_context(VideoWriter(p, fps, quality)) for p in paths]
        for chunk in chunks:
            if len(chunk) != len(writers):
                raise ValueError(f"a chunk of {len(chunk)} clips for {len(writers)} files")
            for writer, clip in zip(writers, chunk):
                writer.write(clip)
    return paths


class VideoWriter:
    """One video (``video_format``: by its suffix) written as frames come and put in place only when closed whole, as
    a context manager:
    ``write((n, H, W, 3) frames)`` any number of times, the file appears at ``close()`` (the block's normal end),
    checked (every frame decoded back), and a block left by an error leaves the previous file at ``path`` untouched.
    ffmpeg starts at the first ``write``, after its frames are checked."""

    def __init__(self, path: str | Path, fps: float = 8.0, quality: int = 8):
        if not (np.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a finite number > 0, got {fps}")
        self.path = Path(path).expanduser()  # "~/out.mp4" made a folder named "~" here
        if self.path.is_dir():
            raise ValueError(f"output {self.path} is a folder")
        self.format = video_format(self.path)
        self.fps, self.quality = fps, quality
        self.frames, self._size = 0, None  # frames written; the first chunk's (H, W)
        self.state = "new"  # -> "open" at the first frames -> "closed" (the file in place) or "failed"
        self._tmp = self._writer = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, kind, error, tb) -> None:
        if kind is None:
            self.close()
        else:
            self._abort()

    def write(self, frames) -> None:
        if self.state in ("closed", "failed"):
            why = "it is closed" if self.state == "closed" else "an earlier error stopped it"
            raise OutputError(f"cannot write {self.path}: {why}")
        chunk = _video_chunk(frames, self._size, self.format.get("even", False), self.path.suffix)
        if chunk is None or not len(chunk):
            return
        if self.state == "new":
            import imageio_ffmpeg

            f = self.format
            self._tmp, self._size, self.state = _temporary_beside(self.path, self.path.suffix), chunk.shape[1:3], "open"
            try:
                # macro_block_size=1: never let ffmpeg's writer silently rescale the frames
                self._writer = imageio_ffmpeg.write_frames(
                    str(self._tmp), (chunk.shape[2], chunk.shape[1]), fps=self.fps, codec=f["codec"],
                    pix_fmt_out=f["pix_fmt_out"], quality=self.quality if f.get("quality") else None,
                    output_params=f.get("output_params"), macro_block_size=1, ffmpeg_log_level="error")
                self._writer.send(None)  # ffmpeg starts
            except Exception as e:
                self._abort()
                raise _ffmpeg_failed(self.path, e) from None
        try:
            for frame in chunk:
                self._writer.send(np.ascontiguousarray(frame))
        except Exception as e:  # ffmpeg died: broken pipe, no space, bad parameters
            self._abort()
            raise _ffmpeg_failed(self.path, e) from None
        self.frames += len(chunk)

    def close(self) -> Path:
        """Finish the file and put it in place (``path``); raises, writing nothing, if it is not whole."""
        if self.state == "closed":
            return self.path
        if self.state == "failed":
            raise OutputError(f"cannot write {self.path}: an earlier error stopped it; nothing was written")
        if self.state == "new":
            _video_chunk(None, None)  # no frames: says so
        try:
            self._writer.close()
        except Exception as e:
            self._abort()
            raise _ffmpeg_failed(self.path, e) from None
        written = _count_frames(self._tmp)
        if written != self.frames:
            self._abort()
            raise OutputError(f"cannot write {self.path}: the encoded file holds {written} of {self.frames} frames "
                              "(disk full?); nothing was written")
        _put_in_place(self._tmp, self.path)
        self.state = "closed"
        return self.path

    def _abort(self) -> None:
        """Stop ffmpeg and remove the temporary file; the previous file at ``path`` is untouched."""
        if self.state == "open":
            with contextlib.suppress(Exception):
                self._writer.close()
            self._tmp.unlink(missing_ok=True)
        if self.state != "closed":
            self.state = "failed"


def _ffmpeg_failed(path, e: Exception) -> OutputError:
    return OutputError(f"cannot write {path}: ffmpeg failed ({_last_line(e)}); nothing was written")


def _video_chunk(frames, size, even: bool = True, suffix: str = ".mp4") -> np.ndarray | None:
    """One chunk of ``save_video``'s frames -> uint8 (n, H, W, 3), checked; None past the last. ``size``: the first
    chunk's (H, W), which every later one must have (None: this is the first); ``even``: the format's chroma
    subsampling needs an even frame size."""
    if frames is None:
        if size is None:
            raise ValueError("expected frames (T, H, W, 3) with T >= 1, got none")
        return None
    a = to_uint8(frames)
    if a.ndim != 4 or (size is None and len(a) == 0):
        raise ValueError(f"expected frames (T, H, W, 3) with T >= 1, got shape {a.shape}")
    if even and size is None and (a.shape[1] % 2 or a.shape[2] % 2):
        raise ValueError(f"a {suffix} video (yuv420p) needs an even frame size, got {a.shape[1]}x{a.shape[2]}")
    if size is not None and a.shape[1:3] != size:
        raise ValueError(f"every chunk of a video must have the first's frame size {size[0]}x{size[1]}, got "
                         f"{a.shape[1]}x{a.shape[2]}")
    return a


def _count_frames(path: Path) -> int:
    """The frames ffmpeg decodes from ``path`` (0 if it cannot read it)."""
    import imageio_ffmpeg

    try:
        return int(imageio_ffmpeg.count_frames_and_secs(str(path))[0])
    except Exception:
        return 0


def _last_line(e: Exception) -> str:
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(e).__name__)[:200]


def save_image(image, path: str | Path) -> Path:
    """Write an (H, W, 3) image (or any layout ``to_uint8`` takes: grey, RGBA, a (3, H, W) tensor) as PNG, atomically."""
    import imageio.v2 as imageio

    a = to_uint8(image, "image")
    if a.ndim != 3 or 0 in a.shape:
        raise ValueError(f"expected one image (H, W, 3), got shape {tuple(a.shape)}")
    with atomic_path(path, suffix=".png") as tmp:
        try:
            imageio.imwrite(tmp, a, format="PNG")
        except OSError as e:
            raise OutputError(f"cannot write {path}: {e.strerror or e}; nothing was written") from None
    return Path(path).expanduser()


def grid(videos, pad: int = 2, scale: int | None = None, min_side: int = 48) -> np.ndarray:
    """A contact sheet: (B, T, H, W, 3) frames -> one image with a row per clip and a column per frame, ``pad`` white
    pixels between frames. Each frame is magnified ``scale`` times, pixel for pixel (nearest; the values unchanged);
    by default the least whole factor that makes its short side ``min_side`` pixels or more (1 for frames that
    large), so that a 16 x 16 model's sheet can be read at a glance. Images (T = 1) are laid out ceil(sqrt B) to a
    row, read row by row, the last row's empty cells white (a column of B images would be B rows high)."""
    v = to_uint8(videos)  # (B, T, H, W, 3)
    if v.ndim != 5 or 0 in v.shape:
        raise ValueError(f"grid expects frames (B, T, H, W, 3), got shape {tuple(v.shape)}")
    if v.shape[1] == 1 and v.shape[0] > 1:  # images: rows of cols cells
        cols = math.ceil(math.sqrt(v.shape[0]))
        cells = np.full((-(-v.shape[0] // cols) * cols, *v.shape[2:]), 255, np.uint8)  # (rows * cols, H, W, 3)
        cells[: v.shape[0]] = v[:, 0]
        v = cells.reshape(-1, cols, *v.shape[2:])  # (rows, cols, H, W, 3)
    if scale is None:
        scale = max(1, -(-min_side // min(v.shape[2:4])))
    if scale > 1:
        v = v.repeat(scale, axis=2).repeat(scale, axis=3)  # (B, T, H * s, W * s, 3)
    b, t, h, w = v.shape[:4]
    sheet = np.full((b * (h + pad) + pad, t * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(b):
        for j in range(t):
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            sheet[top : top + h, left : left + w] = v[i, j]
    return sheet
