"""UCF-101: turn the official split lists into manifests mfvideo reads, then cache Wan latents.

    python datasets/ucf101/prepare.py --root /data/UCF-101 --splits /data/ucfTrainTestlist --out data/ucf101

writes data/ucf101/train.csv and test.csv (path,label; the label is the class name of classInd.txt, so the trained
model knows its classes by name: ``mfvideo-sample --classes Basketball``; ids follow the sorted names). Then:

    mfvideo-cache-latents configs/ucf101_wan.yaml --out data/ucf101_wan_latents \
        data.kind=video_folder data.manifest=data/ucf101/train.csv
"""

import argparse
import csv
from pathlib import Path


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, help="folder of <Class>/<file>.avi")
    p.add_argument("--splits", required=True, help="folder with classInd.txt, trainlist01.txt, testlist01.txt")
    p.add_argument("--split-id", default="01")
    p.add_argument("--out", default="data/ucf101")
    a = p.parse_args()
    root, splits, out = Path(a.root), Path(a.splits), Path(a.out)
    classes = {row.split()[1] for row in (splits / "classInd.txt").read_text().splitlines() if row.strip()}
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        rows = []
        for line in (splits / f"{split}list{a.split_id}.txt").read_text().splitlines():
            if line.strip():
                rel = line.split()[0]
                name = rel.split("/")[0]
                if name not in classes:
                    raise SystemExit(f"error: {split}list{a.split_id}.txt: class {name!r} is not in classInd.txt")
                rows.append((str(root / rel), name))
        with open(out / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label"])
            w.writerows(rows)
        print(f"{split}: {len(rows)} videos -> {out / f'{split}.csv'}")


if __name__ == "__main__":
    main()
