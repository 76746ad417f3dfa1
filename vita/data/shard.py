"""``python -m vita.data.shard [overrides] --out DIR``: convert a VITA mixture to tar shards.

    python -m vita.data.shard data=demo model=tiny_omni --out ~/shards/demo            # ~1 GB shards
    python -m vita.data.shard data=demo --out DIR --shard-size 200MB --samples-per-shard 10000
    python -m vita.data.shard data=demo model=tiny_omni --out DIR --video-frames png   # no video decode in training

The overrides compose the config as ``vita.run`` does (the data config, and the model whose
tokenizer and encoders set the token counts). Bad samples are left out and listed in
``DIR/bad_samples.jsonl``; re-running continues after the last finished shard. Train on the result
with ``data.format=shards data.shards=[{name:NAME,url:DIR}]`` (README, Data: Shards).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vita.errors import one_line_errors


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    """Exit 0 when written, 2 on an error (one line)."""
    from vita.cli import compose_cli
    from vita.data.media import FRAME_FORMATS
    from vita.data.shards.writer import parse_size, write_shards

    ap = argparse.ArgumentParser(prog="python -m vita.data.shard", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder of the shards and manifest.json")
    ap.add_argument("--shard-size", default="1GB", help="most bytes per shard (1GB, 200MB, 512KiB ...)")
    ap.add_argument("--samples-per-shard", type=int, default=0, help="most samples per shard (0 = by size only)")
    ap.add_argument("--video-frames", default="off", choices=["off", *FRAME_FORMATS],
                    help="store each video's sampled, resized frames instead of the video, so training never "
                         "decodes it: png (lossless), npy (raw uint8, lossless, fastest, largest), jpg (q95, "
                         "lossy, smallest); off (default) keeps the video file as on disk")
    ap.add_argument("--overwrite", action="store_true", help="replace shards of other data or settings in --out")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args, overrides = ap.parse_known_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = compose_cli(overrides)
    man = write_shards(cfg, Path(args.out).expanduser(), shard_size=parse_size(args.shard_size),
                       samples_per_shard=args.samples_per_shard, args=overrides,
                       progress=not args.no_progress, overwrite=args.overwrite,
                       video_frames=args.video_frames)
    print(f"{args.out}: {man['samples']} samples in {len(man['shards'])} shard(s), {man['bytes'] / 1e6:.1f} MB, "
          f"{man['bad_samples']} bad sample(s) left out (bad_samples.jsonl)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
