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
    root, splits, out = Path(a.root).expanduser(), Path(a.splits).expanduser(), Path(a.out).expanduser()
    lists = [splits / name for name in ("classInd.txt", f"trainlist{a.split_id}.txt", f"testlist{a.split_id}.txt")]
    for path in lists:
        if not path.is_file():
            raise SystemExit(f"error: {path}: missing (--splits is the folder of the official ucfTrainTestlist)")
    if not root.is_dir():
        raise SystemExit(f"error: --root {root}: not a folder (it holds <Class>/<file>.avi)")
    root = root.resolve()  # absolute paths: a manifest's relative ones are read from the manifest's own folder
    classes = {row.split()[1] for row in lists[0].read_text().splitlines() if row.strip()}
    splits_rows = {}
    for split, path in zip(("train", "test"), lists[1:]):
        rows = []
        for line in path.read_text().splitlines():
            if line.strip():
                rel = line.split()[0]
                name = rel.split("/")[0]
                if name not in classes:
                    raise SystemExit(f"error: {path.name}: class {name!r} is not in classInd.txt")
                rows.append((str(root / rel), name))
        missing = [p for p, _ in rows if not Path(p).is_file()]
        if missing:  # every listed video is checked before a manifest is written: a wrong --root says so here
            raise SystemExit(f"error: {path.name}: {len(missing)} of its {len(rows)} videos are not under --root "
                             f"{root}, the first {missing[0]}")
        splits_rows[split] = rows
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in splits_rows.items():
        tmp = out / f".{split}.csv.tmp"  # written whole, then renamed: a kill leaves no half manifest
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label"])
            w.writerows(rows)
        tmp.replace(out / f"{split}.csv")
        print(f"{split}: {len(rows)} videos -> {out / f'{split}.csv'}")


if __name__ == "__main__":
    main()
