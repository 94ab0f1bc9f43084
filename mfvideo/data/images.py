"""Image folders in the ImageNet layout: ``root/<split>/<class>/<file>``; the class index is the sorted folder order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..frames import pil_rgb
from .listing import labelled_files, split_folder
from .transforms import grey_if

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")  # any case: IMG_0001.JPG too


def center_crop_arr(image: Image.Image, size: int) -> np.ndarray:
    """ADM's centre crop: halve with BOX while the short side >= 2 size, BICUBIC to size, then crop (H, W, 3)."""
    while min(*image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = size / min(*image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    arr = np.array(image)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top : top + size, left : left + size]


class ImageFolder(torch.utils.data.Dataset):
    """(3, H, W) images in [-1, 1] with class labels ((1, H, W) grey, the channels' mean, for ``channels=1``). Index
    i + epoch * N flips deterministically per epoch."""

    def __init__(self, root, split: str = "train", resolution: int = 256, hflip: bool = False, seed: int = 0,
                 channels: int = 3):
        if not Path(root).is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist")
        base = split_folder(Path(root), split)
        files, self.classes = labelled_files(base, IMAGE_EXTS)  # <class>/<file>, or flat: unlabelled
        self.files = [(Path(f), y) for f, y in files]
        if not self.files:
            raise FileNotFoundError(f"image folder {base} holds no images ({', '.join(IMAGE_EXTS)}) in <class>/<file> "
                                    "layout or directly")
        self.num_classes = len(self.classes) if self.classes else 0
        self.resolution, self.hflip, self.seed, self.channels = resolution, hflip, seed, channels

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        i, epoch = index % len(self.files), index // len(self.files)
        path, label = self.files[i]
        with Image.open(path) as im:
            arr = center_crop_arr(Image.fromarray(pil_rgb(im)), self.resolution)  # 16-bit grey too
        if self.hflip and np.random.default_rng([self.seed, epoch, i]).random() < 0.5:
            arr = arr[:, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float() / 127.5 - 1
        return {"x": grey_if(x, self.channels), "y": label, "index": i}
