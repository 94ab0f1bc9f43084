"""Encode a dataset once: python scripts/cache_latents.py CONFIG [key=value ...] --out DIR"""

from mfvideo.cli.cache_latents import main

if __name__ == "__main__":
    main()
