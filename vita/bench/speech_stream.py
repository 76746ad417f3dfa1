"""Streamed speech on the inference path, end to end (``python -m vita.bench.speech_stream``).

What ``vita.chat --speak`` does after the text answer, timed: :func:`vita.infer.speak.speak_rows` (one LLM
forward over prompt + answer, :func:`~vita.model.speech.spans.gather_spans`) then the decoder's code chunks
streamed through the codec's blockwise decode. Reported per decoder: ``first_chunk_ms`` (end of the text answer
to the first audio piece: forward + first codes + first codec block) and the real-time factor (compute seconds
per second of audio, the forward included).

The LLM is SmolLM2-135M-Instruct (``model=smol_lm``, real weights); the decoders are random (their cost does not
depend on their weights): the AR decoder's end-of-speech logit is masked so that every run speaks ``--seconds``;
``ctc`` speaks what its ``upsample x tokens`` positions give. Codecs: ``mel_rvq`` with random codebooks of the
shipped shape (4 x 256 at 62.5 Hz for ``nar_ar``/``vita15``, 1 x 1,024 for ``ctc``: CTC takes one codebook),
Griffin-Lim iterations as configured (``--gl-iters``). Prints a Markdown table and the JSON record.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import torch

ANSWER = ("The quick brown fox jumps over the lazy dog, and then it runs back into the green forest to sleep "
          "until the sun rises again tomorrow morning.")


def _attach(model, key: str, seconds: float, gl_iters: int) -> None:
    from vita.model.speech.nar_ar import EOS, NarArDecoder
    from vita.registry import SPEECH_CODECS, SPEECH_DECODERS, load_builtins

    load_builtins()
    one = key.startswith("ctc")
    codec = SPEECH_CODECS.build("mel_rvq", codebooks=1 if one else 4, codebook_size=1024 if one else 256,
                                gl_iters=gl_iters)
    torch.manual_seed(0)
    hidden = model.llm.config.get_text_config().hidden_size
    dec = SPEECH_DECODERS.build(key, llm_hidden=hidden, codebooks=codec.codebooks,
                                codebook_size=codec.codebook_size).eval()
    dec.max_frames = int(seconds * codec.frame_rate)
    if isinstance(dec, NarArDecoder):
        with torch.no_grad():
            dec.out_fnn.bias[dec.special + EOS] = -1e4
    model.speech_decoder, model.speech_codec = dec, codec


def run(keys: list[str], seconds: float = 4.0, chunk: int = 8, repeats: int = 3, gl_iters: int = 32
        ) -> list[dict[str, Any]]:
    from vita.infer import Conversation, collate_prompts, conversation_prompt, load_target
    from vita.infer.speak import speak_rows

    loaded = load_target(None, ["model=smol_lm", "data=chatterbot"])
    conv = Conversation()
    conv.add_user("Tell me a short story about a fox.")
    batch = collate_prompts([conversation_prompt(loaded.processor, conv)], loaded.pad_id)
    answer = loaded.tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    rows = []
    for key in keys:
        _attach(loaded.model, key, seconds, gl_iters)
        speak_rows(loaded.model, batch, [answer[:4]], loaded.pad_id, chunk)[0].wave()  # warm-up
        stats = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            sp = speak_rows(loaded.model, batch, [answer], loaded.pad_id, chunk)[0]
            sp.wave()
            stats.append((sp.stats, time.perf_counter() - t0))
        first = sorted(s.first_chunk_ms for s, _ in stats)
        rtf = sorted(s.rtf for s, _ in stats)
        dec = loaded.model.speech_decoder
        rows.append(dict(decoder=key, params=sum(p.numel() for p in dec.parameters()), tokens=len(answer),
                         audio_s=round(stats[0][0].audio_s, 2), frames_at_first=stats[0][0].frames_at_first,
                         first_chunk_ms=[round(first[0]), round(first[-1])], rtf=[round(rtf[0], 3), round(rtf[-1], 3)],
                         codec=f"mel_rvq {loaded.model.speech_codec.codebooks}x{loaded.model.speech_codec.codebook_size}"))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m vita.bench.speech_stream", description=__doc__.split("\n\n")[0])
    ap.add_argument("--decoders", default="nar_ar,ctc,vita15")
    ap.add_argument("--seconds", type=float, default=4.0, help="speech per answer (the AR decoder's frame cap)")
    ap.add_argument("--chunk", type=int, default=8, help="code frames per decoder chunk")
    ap.add_argument("--gl-iters", type=int, default=32, help="Griffin-Lim iterations per codec block")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    load0 = os.getloadavg()[0]
    rows = run(a.decoders.split(","), a.seconds, a.chunk, a.repeats, a.gl_iters)
    print(f"threads {torch.get_num_threads()}, load average {load0:.1f} -> {os.getloadavg()[0]:.1f}, chunk {a.chunk} "
          f"frames, SmolLM2-135M forward included (min-max of {a.repeats} runs)")
    print("| decoder | parameters | codec | speech | first chunk (ms) | real-time factor |\n|---|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['decoder']} | {r['params'] / 1e6:.1f} M | {r['codec']} | {r['audio_s']} s | "
              f"{r['first_chunk_ms'][0]}-{r['first_chunk_ms'][1]} | {r['rtf'][0]}-{r['rtf'][1]} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
