#!/usr/bin/env bash
# The oldest versions setup.cfg admits, installed in a fresh virtual environment, then the test suite on them
# (arguments go to pytest). Users' environments are older than ours: numpy 1.x, the ffmpeg 4.2 that imageio-ffmpeg
# 0.5 bundles, diffusers 0.33 each broke a path that the newest versions hide (docs/tests.md, "Lower bounds").
# torch stays at constraints.txt's 2.13: it is the one CPU build this machine installs (no older CPU wheel on PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-/tmp/mfvideo-lower-bounds}
pins=$(python3 - <<'PY'
import configparser, re
cfg = configparser.ConfigParser()
cfg.read("setup.cfg")
for line in cfg["options"]["install_requires"].split("\n"):
    m = re.match(r"\s*([\w-]+)\s*>=\s*([\w.]+)", line)
    if m and m[1] == "numpy":  # the newest 1.x: decord2's wheels and scipy's do not resolve with 1.26.0
        print(f"numpy>={m[2]},<2")
    elif m and m[1] != "torch":
        print(f"{m[1]}=={m[2]}")
PY
)
python3 -m venv --clear "$venv"
echo "+ lower bounds: $(echo $pins)"
"$venv/bin/pip" install -q --prefer-binary -c constraints.txt $pins pytest scipy decord2
"$venv/bin/pip" install -q --no-deps -e .
"$venv/bin/python" -m pytest -p no:cacheprovider "$@"
