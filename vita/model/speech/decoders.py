"""Speech decoders (``vita.registry.SPEECH_DECODERS``): see :mod:`vita.model.speech.decoder` for the contract.

``SPEECH_DECODERS.build(key, llm_hidden=H, codebooks=K, codebook_size=V, **cfg.model.speech.decoder_overrides)``

==================  ===============================================================================================
key                 what
==================  ===============================================================================================
``nar_ar``          VITA-1.5's NAR + AR decoder (:mod:`vita.model.speech.nar_ar`), CPU-small defaults: width 256,
                    2 NAR + 4 AR layers
``nar_ar-tiny``     the same, a few thousand parameters (tests)
``vita15``          ``nar_ar`` at the paper's sizes: 4 NAR + 4 AR LLaMA layers, width 896 (14 heads), SwiGLU 9,728
                    (the paper gives no MLP width; 9,728 makes the AR part ~120 M as it states); 1,024 codes at 40 Hz
                    come from the codec. ``python -m vita.model.summary`` prints its size
``ctc``             LLaMA-Omni's upsample x lambda + LLaMA layers + CTC over one codebook (:mod:`vita.model.speech.ctc`)
``ctc-tiny``        the same, tiny (tests)
==================  ===============================================================================================

Every option of a decoder's config can be overridden (``model.speech.decoder_overrides={hidden: 512}``); an
unknown one is refused by name.
"""

from __future__ import annotations

from typing import Any

from vita.model.speech import ctc as _ctc
from vita.model.speech.decoder import SpeechDecoder
from vita.model.speech.nar_ar import NarArDecoder, make_config
from vita.registry import SPEECH_DECODERS

NAR_AR_TINY = dict(hidden=16, heads=2, intermediate=32, nar_layers=1, ar_layers=1)
CTC_TINY = dict(hidden=16, heads=2, intermediate=32, layers=1, upsample=4)
VITA15 = dict(hidden=896, heads=14, intermediate=9728, nar_layers=4, ar_layers=4)


@SPEECH_DECODERS.register("nar_ar")
def nar_ar(llm_hidden: int, codebooks: int, codebook_size: int, **overrides: Any) -> SpeechDecoder:
    """NAR + AR decoder with CPU-small defaults (:class:`vita.model.speech.nar_ar.NarArConfig`)."""
    return NarArDecoder(make_config(llm_hidden, codebooks, codebook_size, **overrides))


@SPEECH_DECODERS.register("nar_ar-tiny")
def nar_ar_tiny(llm_hidden: int, codebooks: int, codebook_size: int, **overrides: Any) -> SpeechDecoder:
    """``nar_ar`` with tiny shapes (width 16, one NAR and one AR layer): tests."""
    return NarArDecoder(make_config(llm_hidden, codebooks, codebook_size, **{**NAR_AR_TINY, **overrides}))


@SPEECH_DECODERS.register("vita15")
def vita15(llm_hidden: int, codebooks: int = 1, codebook_size: int = 1024, **overrides: Any) -> SpeechDecoder:
    """``nar_ar`` at VITA-1.5's sizes (4 + 4 LLaMA layers, width 896)."""
    return NarArDecoder(make_config(llm_hidden, codebooks, codebook_size, **{**VITA15, **overrides}))


@SPEECH_DECODERS.register("ctc")
def ctc(llm_hidden: int, codebooks: int, codebook_size: int, **overrides: Any) -> SpeechDecoder:
    """LLaMA-Omni style: upsample x ``upsample`` + causal LLaMA layers + CTC (one codebook only)."""
    return _ctc.CTCDecoder(_ctc.make_config(llm_hidden, codebooks, codebook_size, **overrides))


@SPEECH_DECODERS.register("ctc-tiny")
def ctc_tiny(llm_hidden: int, codebooks: int, codebook_size: int, **overrides: Any) -> SpeechDecoder:
    """``ctc`` with tiny shapes (width 16, one layer, upsample 4): tests."""
    return _ctc.CTCDecoder(_ctc.make_config(llm_hidden, codebooks, codebook_size, **{**CTC_TINY, **overrides}))
