"""Generation speed on CPU: SmolLM2-135M-Instruct through ``vita.infer.generate``, KV cache on vs off.

Every arm generates exactly ``new_tokens`` tokens (no stop sequence) for the same chat prompt,
greedy, fp32; arms alternate ``repeats`` times and the median is reported. Tokens/s counts new
tokens over the wall time of the whole call (prefill included).

    python -m vita.bench generate          # or: python -m vita.bench.generate
"""

from __future__ import annotations

import statistics
import time

PROMPT = "Write a short story about a robot who learns to paint."


def run(new_tokens: int = 64, repeats: int = 3, batch: int = 4) -> dict:
    """``{"setup": ..., "tokens_per_s": {arm: median}}`` for cache on/off (batch 1) and cache on (batch ``batch``)."""
    from vita.infer import Conversation, GenerationConfig, collate_prompts, conversation_prompt, generate, load_target

    loaded = load_target(None, ["experiment=chatterbot_tiny", "model=smol_lm", "data.template=smollm2"])
    conv = Conversation()
    conv.add_user(PROMPT)
    item = conversation_prompt(loaded.processor, conv)
    arms = {"kv cache, batch 1": (True, 1), "no cache, batch 1": (False, 1), f"kv cache, batch {batch}": (True, batch)}
    times: dict[str, list[float]] = {a: [] for a in arms}
    for _ in range(repeats):
        for arm, (cache, bs) in arms.items():
            b = collate_prompts([item] * bs, loaded.pad_id)
            t0 = time.perf_counter()
            rows = generate(loaded.model, b, GenerationConfig(max_new_tokens=new_tokens, use_cache=cache), [],
                            loaded.pad_id)
            dt = time.perf_counter() - t0
            assert all(len(r) == new_tokens for r in rows)
            times[arm].append(bs * new_tokens / dt)
    return {"setup": {"prompt_tokens": len(item["input_ids"]), "new_tokens": new_tokens, "repeats": repeats},
            "tokens_per_s": {a: statistics.median(v) for a, v in times.items()}}


def table(res: dict) -> list[str]:
    rows = res["tokens_per_s"]
    base = rows.get("no cache, batch 1")
    out = ["| arm | tokens/s | vs no cache |", "|---|---:|---:|"]
    for arm, v in rows.items():
        out.append(f"| {arm} | {v:.1f} | {v / base:.2f}× |" if base else f"| {arm} | {v:.1f} | |")
    return out


if __name__ == "__main__":
    r = run()
    print("\n".join(table(r)))
