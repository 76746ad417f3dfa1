"""``python -m vita.bench.data``: data-pipeline throughput and padding, measured (not asserted).

1. Samples/s of one worker process for a 13-tile image, a 16-frame video (decoded, and read from the
   frames a shard stores with ``--video-frames png|npy|jpg``) and a 30 s audio clip at VITA's sizes
   (448-px tiles; fbank-80 and Whisper log-mel), from the demo's real media.
2. Share of non-pad tokens per sampler, and with packing, on a VITA-like length mixture: images
   1-13 tiles x 256 tokens, video 4-16 frames x 256, audio 2-30 s at 12.5 tokens/s, text 50-2,000
   tokens, max_length 6,200; 8 ranks x micro-batch 4.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from vita.data.packing import pack_rows
from vita.registry import SAMPLERS, load_builtins


def _rate(fn, seconds: float = 3.0, min_runs: int = 3) -> tuple[float, float]:
    """Calls per wall second and per CPU second of this process (the latter less skewed by other load)."""
    fn()  # warm-up
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while n < min_runs or time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0), n / max(time.process_time() - c0, 1e-9)


def media_throughput(seconds: float) -> dict[str, dict[str, float]]:
    """``samples_per_s`` in this process (= per data worker) for each media kind, ``samples_per_cpu_s`` (per
    second of this process's CPU time), and ``bytes`` of one 16-frame video as a file and as each stored-frames
    member."""
    import soundfile as sf
    from PIL import Image

    from vita.config import demo_data_dir
    from vita.data.media import (
        FRAME_FORMATS,
        MediaOptions,
        StoredFrames,
        encode_frames,
        load_audio,
        load_audio_features,
        load_image_tiles,
        load_video_frames,
        video_frames,
    )
    from vita.data.shards.reader import Member
    from vita.data.spec import PRESETS

    root = Path(demo_data_dir())
    spec, o = PRESETS["vita"], MediaOptions()
    out, size = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        img = Path(tmp) / "wide.jpg"  # a real photo stretched to 12:1 -> 12 tiles + thumbnail
        Image.open(root / "images" / "hubble_deep_field.jpg").convert("RGB").resize((12 * 448, 448)).save(img, quality=92)
        assert load_image_tiles(img, o, spec).shape[0] == 13
        out["image 13 tiles"] = _rate(lambda: load_image_tiles(img, o, spec), seconds)
        vid = root / "video" / "vtest.avi"
        assert load_video_frames(vid, o, spec).shape[0] == 16
        out["video 16 frames"] = _rate(lambda: load_video_frames(vid, o, spec), seconds)
        size["video 16 frames"] = vid.stat().st_size
        frames = video_frames(vid, o, spec)
        for kind in FRAME_FORMATS:  # a shard member's bytes, read as the stream reads them
            key, data = f"video 16 frames, stored {kind}", encode_frames(frames, kind)
            out[key] = _rate(lambda d=data, k=kind: load_video_frames(StoredFrames(Member(d, "v"), k), o, spec), seconds)
            size[key] = len(data)
        clips = [load_audio(p) for p in sorted((root / "speech" / "librivox").glob("*.wav"))]
        wave = np.concatenate(clips * 2)[: 30 * 16000]
        wav = Path(tmp) / "30s.wav"
        sf.write(wav, wave, 16000)
        out["audio 30 s fbank"] = _rate(lambda: load_audio_features(wav, o, spec), seconds)
        out["audio 30 s whisper"] = _rate(lambda: load_audio_features(wav, o, PRESETS["whisper"]), seconds)
    return {"samples_per_s": {k: v[0] for k, v in out.items()},
            "samples_per_cpu_s": {k: v[1] for k, v in out.items()}, "bytes": size}


def vita_like_lengths(n: int, seed: int = 0, max_length: int = 6200) -> tuple[np.ndarray, np.ndarray]:
    """Token lengths and multimodal flags of a VITA-like mixture (40% image, 10% video, 25% audio, 25% text)."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(4, n, p=[0.4, 0.1, 0.25, 0.25])
    text = np.exp(rng.uniform(np.log(50), np.log(2000), n)).astype(int)
    media = np.select([kind == 0, kind == 1, kind == 2],
                      [rng.integers(1, 14, n) * 256, rng.integers(4, 17, n) * 256,
                       np.ceil(rng.uniform(2, 30, n) * 12.5).astype(int)], 0)
    return np.minimum(text + media, max_length), kind <= 1


def padding_shares(n: int = 20000, max_length: int = 6200, world: int = 8, micro: int = 4) -> dict[str, float]:
    """Non-pad share of the padded micro-batches over one epoch, per sampler (and with packing)."""
    load_builtins()
    lengths, mm = vita_like_lengths(n, max_length=max_length)
    out = {}
    budget = micro * max_length
    runs = [("random", {}, False), ("length_grouped", {}, False), ("modality_length_grouped", {}, False),
            ("token_budget", {"token_budget": budget}, False),
            ("token_budget + packing", {"token_budget": budget, "packing": True, "max_length": max_length}, True)]
    for label, extra, packing in runs:
        s = SAMPLERS.build(label.split(" ")[0], num_samples=n, global_batch_size=world * micro, seed=0,
                           micro_per_step=world, lengths=lengths, modalities=mm, **extra)
        real = padded = 0
        for step in range(s.steps_per_epoch):
            for mb in s.micro_batches(0, step):
                ls = lengths[mb]
                real += int(ls.sum())
                if packing:
                    rows = pack_rows(ls.tolist(), max_length)
                    padded += len(rows) * max(int(ls[r].sum()) for r in rows)
                else:
                    padded += len(mb) * int(ls.max())
        out[label] = real / padded
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="time per media measurement")
    ap.add_argument("--skip-media", action="store_true", help="only the padding figures (no demo data needed)")
    args = ap.parse_args()
    if not args.skip_media:
        print("samples/s per worker (448-px tiles):")
        res = media_throughput(args.seconds)
        for k, v in res["samples_per_s"].items():
            mb = f"  ({res['bytes'][k] / 1e6:.2f} MB)" if k in res["bytes"] else ""
            print(f"  {k:32s} {v:8.2f} ({res['samples_per_cpu_s'][k]:.2f} per CPU s){mb}")
    print("non-pad token share (VITA-like mixture, max_length 6200, 8 ranks x micro-batch 4):")
    for k, v in padding_shares().items():
        print(f"  {k:26s} {v:6.1%}")


if __name__ == "__main__":
    main()
