"""Class names for class folders named by code: ImageNet's ``n01440764`` is "tench, Tinca tinca".

``data.class_names`` names a file that maps folder names to the names a model's classes go by (its ``id2label``,
``--classes tench``): ImageNet's ``LOC_synset_mapping.txt`` as it is distributed (``<folder> <name>`` per line, split
at the first space), or a JSON object ``{"<folder>": "<name>"}``. Ids stay the sorted folder order; a folder the file
does not name keeps its folder name.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def read_class_names(path, what: str = "data.class_names") -> dict[str, str]:
    """``{folder: name}`` from a mapping file; a line without a name, or JSON that is not an object of strings, is a
    ValueError naming the file and line (``what``: the setting that named the file, for the messages)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}={path}: no such file")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json":
        try:
            names = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not JSON ({e})") from None
        if not isinstance(names, dict) or not all(isinstance(v, str) for v in names.values()):
            raise ValueError(f"{path}: expected a JSON object of folder names to class names")
        return {str(k): v.strip() for k, v in names.items()}
    names = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) < 2:
            raise ValueError(f"{path}, line {n}: expected '<folder> <class name>', got {line.strip()!r}")
        names[parts[0]] = parts[1].strip()
    return names


def named_classes(classes: list[str] | None, path, what: str = "data.class_names") -> list[str] | None:
    """The class list with each folder's name from the file at ``path`` (None: as it is)."""
    if path is None:
        return classes
    if not classes:
        raise ValueError(f"{what}={path}: this data has no class folders to name (unlabelled)")
    names = read_class_names(path, what)
    named = set(names.values())  # a latent cache of named data holds the names already
    missing = [c for c in classes if c not in names and c not in named]
    if len(missing) == len(classes):
        raise ValueError(f"{what}={path} names none of the {len(classes)} class folders (such as "
                         f"{classes[0]!r}): a mapping of other data")
    if missing:
        log.warning("%s=%s does not name %d of %d class folders (%s): they keep their folder names", what,
                    path, len(missing), len(classes), ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else ""))
    return [names.get(c, c) for c in classes]
