"""Listing a dataset folder: its class folders and their files, leaving out what tools, not the user, put there.

A Jupyter ``.ipynb_checkpoints/``, macOS's ``__MACOSX/`` (zip) and ``._name.jpg`` (AppleDouble, tar) entries and any
other hidden name are not data: as a class folder such an entry took id 0 and shifted every real class's label; as a
file it failed to decode mid-training. The layout is ``<class>/<file>`` (ImageNet's, UCF-101's) or, with no class
folder, a flat folder of unlabelled files (label -1); for videos, an item may also be a folder of a clip's frames
(``<class>/<clip>/frame_0001.png``), which is then never a class.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)
NOT_DATA = {"__MACOSX"}
SPLITS = ("train", "val", "validation", "test")


class SplitError(FileNotFoundError):
    """``data.split`` names a folder that is not there, beside other splits' folders."""


def is_data(path: Path) -> bool:
    return not path.name.startswith(".") and path.name not in NOT_DATA


def labelled_files(root: Path, exts: tuple[str, ...],
                   item_folder=None) -> tuple[list[tuple[str, int]], list[str] | None]:
    """``([(path, label)], class names)``: the class folders' files labelled by their folder's sorted index, or a
    flat folder's files with label -1 and no class names. Extensions in any case (IMG_0001.JPG). ``item_folder``
    (a folder -> whether it is one item, a clip's frames): such folders are items beside the files, never classes."""

    def is_item(d: Path) -> bool:
        return item_folder is not None and d.is_dir() and is_data(d) and item_folder(d)

    def files(folder: Path) -> list[Path]:
        return sorted(f for f in folder.iterdir() if is_data(f) and (f.is_file() and f.suffix.lower() in exts
                                                                       or is_item(f)))

    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and is_data(d) and not is_item(d))
    if not classes:
        return [(str(f), -1) for f in files(root)], None
    out = []
    for label, name in enumerate(classes):
        found = files(root / name)
        if not found:
            log.warning("%s: class folder %s holds no %s files; it keeps id %d", root, name, "/".join(exts), label)
        out += [(str(f), label) for f in found]
    return out, classes


def split_folder(root: Path, split: str) -> Path:
    """``root/split`` where it exists, else ``root`` itself, unless ``root`` holds other splits' folders: their
    names would have been taken for classes (a "val" run on a folder of train/ and test/: two classes, train and
    test)."""
    if (root / split).is_dir():
        return root / split
    others = [s for s in SPLITS if (root / s).is_dir()]
    if others:
        raise SplitError(f"{root} holds {', '.join(s + '/' for s in others)} but no {split}/ (data.split={split}): "
                         "set data.split to one of them, or data.root to the folder of classes itself")
    return root
