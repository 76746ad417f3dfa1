"""Round-trip ASR word error rate of each speech codec that runs here (``python -m vita.bench.speech_codecs``).

Held-out flite sentences (``vita/assets/speech/sentences.txt``, ``heldout:``, voice slt) go through
each codec (encode, then the streamed/blockwise decode) and are transcribed by the shipped Whisper
tiny.en (:class:`vita.eval.asr.WhisperASR`); the corpus WER (:func:`vita.eval.metrics.wer`) against the
sentence text is reported next to the original speech's. ``mel_rvq`` is fitted on the ``train:``
sentences (same voice) with :func:`vita.model.speech.mel_rvq.fit_mel_rvq`. Mimi / EnCodec need
weights, which do not install offline: pass ``--mimi DIR`` / ``--encodec DIR`` to include them.
Prints a Markdown table and the JSON record; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import torch


def run(voice: str = "slt", mimi: str | None = None, encodec: str | None = None, gl_iters: int = 32,
        fit_voice: str | None = None) -> dict[str, Any]:
    """WER rows for ``voice``'s held-out sentences; ``mel_rvq`` is fitted on ``fit_voice``'s (default: the same voice)."""
    from vita.data.speak import flite_speech, sentences
    from vita.eval.asr import WhisperASR
    from vita.eval.metrics import wer
    from vita.model.speech.mel_rvq import fit_mel_rvq
    from vita.registry import SPEECH_CODECS, load_builtins

    load_builtins()
    load = [os.getloadavg()[0]]
    texts = sentences("heldout")
    held = [(torch.from_numpy(w), r) for w, r in (flite_speech(t, voice) for t in texts)]
    fit_voice = fit_voice or voice
    train = [(torch.from_numpy(w), r) for w, r in (flite_speech(t, fit_voice) for t in sentences("train"))]
    asr = WhisperASR()
    t0 = time.process_time()
    fitted = {k: fit_mel_rvq(train, codebooks=k, codebook_size=s, gl_iters=gl_iters) for k, s in ((2, 256), (4, 256), (8, 256))}
    fit_cpu_s = time.process_time() - t0

    def ceiling(wave: torch.Tensor, rate: int) -> tuple[torch.Tensor, int]:
        c = fitted[4]  # unquantised log-mel through the same blockwise Griffin-Lim: the mel codec's ceiling
        return c.decode_logmel(c.logmel(wave, rate)), c.sample_rate

    arms: dict[str, Any] = {"original (flite 16 kHz)": lambda w, r: (w, r), "80-mel -> blockwise Griffin-Lim, no codes": ceiling}
    arms["mel_rvq 4 x 256, unfitted (random codebooks)"] = SPEECH_CODECS.build("mel_rvq", gl_iters=gl_iters)
    for k, c in fitted.items():
        arms[f"mel_rvq {k} x 256, fitted on {len(train)} {fit_voice} sentences"] = c
    arms["codec2 3200"] = SPEECH_CODECS.build("codec2", mode=3200)
    arms["codec2 1300"] = SPEECH_CODECS.build("codec2", mode=1300)
    if mimi:
        arms["mimi (8 codebooks)"] = SPEECH_CODECS.build("mimi", path=mimi)
    if encodec:
        arms["encodec"] = SPEECH_CODECS.build("encodec", path=encodec)
    rows = []
    for name, arm in arms.items():
        t0, hyps = time.process_time(), []
        for wave, rate in held:
            if callable(arm) and not hasattr(arm, "encode"):
                out, out_rate = arm(wave, rate)
            else:
                out, out_rate = arm.decode(arm.encode(wave, rate)), arm.sample_rate
            hyps.append(asr(out.numpy(), out_rate))
        kbps = (arm.codebooks * arm.frame_rate * torch.log2(torch.tensor(float(arm.codebook_size))).item() / 1000
                if hasattr(arm, "encode") else None)
        rows.append({"speech": name, "wer": wer(hyps, texts), "kbps": kbps,
                     "frame_rate": getattr(arm, "frame_rate", None), "cpu_s": time.process_time() - t0,
                     "examples": hyps[:2]})
        load.append(os.getloadavg()[0])
        print(f"{name}: WER {rows[-1]['wer']:.3f}", flush=True)
    return {"voice": voice, "fit_voice": fit_voice, "sentences": len(texts), "fit_cpu_s": fit_cpu_s, "gl_iters": gl_iters, "rows": rows,
            "loadavg_1min": [min(load), max(load)], "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset")}


def table(rec: dict) -> str:
    lines = [f"| speech ({rec['sentences']} held-out flite {rec['voice']} sentences) | code rate | kbit/s | ASR WER |",
             "|---|---:|---:|---:|"]
    for r in rec["rows"]:
        rate = f"{r['frame_rate']:g} Hz" if r["frame_rate"] else ""
        kbps = f"{r['kbps']:.2f}" if r["kbps"] else ""
        lines.append(f"| {r['speech']} | {rate} | {kbps} | {r['wer']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voice", default="slt")
    ap.add_argument("--mimi", help="a MimiModel folder (save_pretrained layout)")
    ap.add_argument("--encodec", help="an EncodecModel folder")
    ap.add_argument("--gl-iters", type=int, default=32)
    ap.add_argument("--fit-voice", help="flite voice whose train sentences fit mel_rvq (default: --voice)")
    args = ap.parse_args()
    rec = run(args.voice, args.mimi, args.encodec, args.gl_iters, args.fit_voice)
    print(table(rec))
    print(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
