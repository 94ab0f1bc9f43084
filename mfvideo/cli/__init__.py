"""Console entry points. Each is a thin layer over the library; user mistakes exit with one line, no traceback."""

from __future__ import annotations

import functools
import logging
import os
import sys


def user_errors(main):
    """Turn the library's user-facing errors into one line on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(argv=None):
        from ..config import ConfigError
        from ..train.checkpoint import CheckpointError
        from ..train.loop import TrainingError

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        # Bad input (configs, checkpoints, videos, arguments) raises ValueError subclasses; MFVIDEO_DEBUG=1 shows
        # the traceback.
        known = (ConfigError, CheckpointError, TrainingError, FileNotFoundError, ValueError, NotImplementedError)
        try:
            return main(argv)
        except known as e:
            if os.environ.get("MFVIDEO_DEBUG"):
                raise
            print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper
