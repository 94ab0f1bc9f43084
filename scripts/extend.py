"""Continue a video: python scripts/extend.py INPUT --num-new-frames N --out OUT.mp4"""

from mfvideo.cli.extend import main

if __name__ == "__main__":
    main()
