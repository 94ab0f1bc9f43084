"""Generate clips in one step: python scripts/sample.py [--checkpoint DIR] [--classes 0 3 7] --out DIR"""

from mfvideo.cli.sample import main

if __name__ == "__main__":
    main()
