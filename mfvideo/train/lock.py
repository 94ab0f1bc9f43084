"""One training run per run folder at a time.

A second run launched into the folder a live run writes (the same command in two terminals, a requeued job whose
first attempt still runs) would take the first's checkpoint in progress for one "left by an interrupted save" and
delete it, then interleave both runs' checkpoints and log records. The main process of a run holds an exclusive
``flock`` on ``<train.output_dir>/.lock`` for the run; the kernel drops it when the process ends however it ends
(a SIGKILL leaves an unlocked file, which the next run takes). The lock file goes when the run ends, and so does a
run folder the run made and left empty (a run that failed to start leaves nothing behind).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from ..config import ConfigError

log = logging.getLogger("mfvideo.train")


@contextlib.contextmanager
def run_lock(run_dir: Path, main: bool = True):
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        fcntl = None
    if not main or fcntl is None or (run_dir.exists() and not run_dir.is_dir()):  # a file: the run says so itself
        yield
        return
    made = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ConfigError(f"train.output_dir {run_dir} is in use by another training run (pid {holder}): wait for it "
                          "to end, or give another train.output_dir") from None
    except OSError as e:  # a file system without locks (an NFS mount without lockd: ENOLCK): train, unguarded
        log.warning("train.output_dir %s: cannot lock %s (%s); a second run into this folder would not be refused",
                    run_dir, path.name, e.strerror or e)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # held (no other run can have taken it), or never taken
        os.close(fd)
        if made and not any(run_dir.iterdir()):
            run_dir.rmdir()
