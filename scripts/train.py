"""Train a MeanFlow STDiT: python scripts/train.py CONFIG [key=value ...] [--dry-run]"""

from mfvideo.cli.train import main

if __name__ == "__main__":
    main()
