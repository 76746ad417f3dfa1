"""``python -m vita.run`` with the stage-3.2 no-hang stand-in replaced by ``0 x decoder.dummy_loss()`` alone (what a
decoder-only dummy does): the negative control of tests/test_stage32.py's 2-rank ZeRO-3 test.

Usage: torchrun --nproc_per_node 2 tests/dist_stage32_nodummy.py <vita.run overrides>
"""

from __future__ import annotations

import vita.model.speech.train_step as train_step

real = train_step.speech_loss


def dummy_only(decoder, hidden, input_ids, embed, codes, code_lengths, spans, *args, **kw):
    if codes is None or codes.shape[0] == 0:
        return 0.0 * decoder.dummy_loss(hidden).float(), 0
    return real(decoder, hidden, input_ids, embed, codes, code_lengths, spans, *args, **kw)


train_step.speech_loss = dummy_only

if __name__ == "__main__":
    import runpy

    runpy.run_module("vita.run", run_name="__main__", alter_sys=True)  # as python -m vita.run (Hydra finds conf/)
