"""Speed of the speech decoders alone on this machine (``python -m vita.bench.speech_decoders``).

For each decoder (random weights, ``llm_hidden`` 896 = Qwen2.5-0.5B, 20 answer tokens): the time to its first
code chunk (``chunk`` frames, the decoder side of ``first_chunk_ms``), and the real-time factor of generating
``frames`` frames (decoder seconds per second of speech at ``frame_rate``). The AR decoder's end-of-speech
logit is masked out so every run makes the same number of frames; ``ctc`` always runs all ``upsample x tokens``
positions (at most that many frames come out; random weights collapse to fewer), so its RTF counts that many.
The codec's decode is not included (``vita.bench.speech_codecs``). Prints a Markdown table and the JSON record.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import torch


def _time(decoder, h, e, frames: int, chunk: int) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    first, made = None, 0
    for piece in decoder.generate(h, e, max_frames=frames, chunk=chunk):
        first = first if first is not None else time.perf_counter() - t0
        made += len(piece)
    return first or 0.0, time.perf_counter() - t0, made


def run(keys: list[str], frames: int = 200, chunk: int = 8, tokens: int = 20, frame_rate: float = 40.0,
        repeats: int = 3) -> list[dict[str, Any]]:
    from vita.model.speech.nar_ar import EOS, NarArDecoder
    from vita.registry import SPEECH_DECODERS, load_builtins

    load_builtins()
    rows = []
    for key in keys:
        torch.manual_seed(0)
        dec = SPEECH_DECODERS.build(key, llm_hidden=896, codebooks=1, codebook_size=1024).eval()
        if isinstance(dec, NarArDecoder):
            with torch.no_grad():
                dec.out_fnn.bias[dec.special + EOS] = -1e4
        h, e = torch.randn(tokens, 896), torch.randn(tokens, 896)
        _time(dec, h, e, 4, chunk)                                   # warm-up
        runs = [_time(dec, h, e, frames, chunk) for _ in range(repeats)]
        if not isinstance(dec, NarArDecoder):
            runs = [(f, t, min(frames, tokens * dec.cfg.upsample)) for f, t, _ in runs]
        first = sorted(r[0] for r in runs)
        total = sorted(r[1] / max(r[2], 1) * frame_rate for r in runs)
        rows.append(dict(decoder=key, params=sum(p.numel() for p in dec.parameters()), frames=runs[0][2],
                         first_chunk_ms=[round(1000 * first[0]), round(1000 * first[-1])],
                         rtf=[round(total[0], 3), round(total[-1], 3)]))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m vita.bench.speech_decoders", description=__doc__.split("\n\n")[0])
    ap.add_argument("--decoders", default="nar_ar,ctc,vita15")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--chunk", type=int, default=8)
    a = ap.parse_args(argv)
    rows = run(a.decoders.split(","), a.frames, a.chunk)
    print(f"threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}, chunk {a.chunk} frames, "
          "RTF at 40 Hz (min-max of 3 runs)")
    print("| decoder | parameters | first chunk (ms) | real-time factor |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['decoder']} | {r['params'] / 1e6:.1f} M | {r['first_chunk_ms'][0]}-{r['first_chunk_ms'][1]} "
              f"| {r['rtf'][0]}-{r['rtf'][1]} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
