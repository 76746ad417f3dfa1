"""The model-data contract (vita/spec.py): each encoder and projector owns its token count, and the count the
data spec carries (pickled to the data workers) is what the modules really produce."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from vita.model.projectors import Projector, build_projector
from vita.registry import AUDIO_ENCODERS, load_builtins
from vita.spec import AudioTokens, StridedTokens

load_builtins()


@pytest.mark.parametrize("encoder", ["tiny-vita", "tiny-whisper"])
@pytest.mark.parametrize("adapter", ["linear", "mlp2x_gelu", "subsampling"])
def test_the_composed_count_is_what_encoder_and_adapter_produce(encoder, adapter):
    torch.manual_seed(0)
    enc = AUDIO_ENCODERS.build(encoder).eval()
    proj = build_projector(adapter, enc.hidden_size, 16).eval()
    count = pickle.loads(pickle.dumps(AudioTokens(enc.token_count(), proj.token_count(), prompts=3)))
    for frames in (40, 97, 150):
        with torch.no_grad():
            out, n = enc(torch.randn(1, frames, enc.n_mels), torch.tensor([frames]))
            got = proj(out[:, : int(n[0])]).shape[1]
        assert count(frames) == got + 3, (frames, got)


def test_a_new_projector_counts_without_the_model_knowing_its_class():
    """OmniModel asks projectors for their count (no isinstance): a projector defined here is counted right."""

    class Halve(Projector):
        def __init__(self) -> None:
            super().__init__(8, 8)
            self.conv = nn.Conv1d(8, 8, 2, 2)

        def token_count(self) -> StridedTokens:
            return StridedTokens(kernel=2, stride=2)

        def forward(self, x, lengths=None):
            return self.conv(nn.functional.pad(x.transpose(1, 2), (0, 1))).transpose(1, 2)

    p = Halve()
    for n in (1, 6, 7):
        assert p.num_tokens(n) == p(torch.zeros(1, n, 8)).shape[1]
