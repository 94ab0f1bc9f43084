"""In-between frames, or a bridge between two clips: python scripts/interpolate.py START END --out OUT.mp4"""

from mfvideo.cli.interpolate import main

if __name__ == "__main__":
    main()
