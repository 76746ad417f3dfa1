"""Media: golden tiling grids, tile layout, video frame sampling with PyAV, audio loading,
fbank settings pinned to VITA's, and header-based token counts equal to decoded ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.data_fixtures import SPEECH, demo_root
from vita.data.media import (
    MediaOptions,
    audio_num_frames,
    choose_grid,
    fbank_options,
    frame_indices,
    image_num_tiles,
    kaldi_fbank,
    load_audio,
    load_audio_features,
    load_image_tiles,
    load_video_frames,
    num_tiles_for,
    resample,
    video_num_frames,
    whisper_logmel,
)
from vita.data.spec import PRESETS, DataSpec, vita_audio_num_tokens

# (width, height) -> (cols, rows) of the InternVL grid with min 1, max 12 tiles at 448 px, worked by hand
GOLDEN = {
    (448, 448): (1, 1), (500, 500): (1, 1), (896, 448): (2, 1),  # exact tie, area too small -> keep (2, 1)
    (1792, 896): (4, 2),  # exact tie (2,1)/(4,2), area > 0.5*448^2*8 -> the larger grid
    (1000, 1000): (3, 3),  # ties (1,1)->(2,2)->(3,3), area beats both thresholds
    (800, 800): (2, 2),  # beats (2,2)'s threshold (401,408) but not (3,3)'s (903,168)
    (1000, 872): (2, 2), (640, 427): (3, 2), (427, 640): (2, 3), (600, 400): (3, 2), (3000, 200): (12, 1),
    (200, 3000): (1, 12), (512, 384): (4, 3), (1280, 720): (4, 2),  # tie (2,1)/(4,2) at diff 0.22; 921,600 > 802,816
}


@pytest.mark.parametrize("size", sorted(GOLDEN), ids=lambda s: f"{s[0]}x{s[1]}")
def test_tiling_grid_golden(size):
    """The grid of each size matches the hand-worked InternVL/VITA answer (tie rule included)."""
    assert choose_grid(*size, 1, 12, 448) == GOLDEN[size]


def test_tile_counts_thumbnail_and_pad_mode():
    """Thumbnail only when tiled; max 13 tiles; pad mode tiles the padded square."""
    o = MediaOptions()
    assert num_tiles_for(448, 448, o, 448) == 1
    assert num_tiles_for(1792, 896, o, 448) == 9
    assert num_tiles_for(3000, 200, o, 448) == 13
    assert num_tiles_for(3000, 200, MediaOptions(use_thumbnail=False), 448) == 12
    assert num_tiles_for(1792, 896, MediaOptions(image_aspect_ratio="pad"), 448) == 10  # 1792^2 -> 3x3 + 1


def test_tiles_are_row_major_crops_then_thumbnail(tmp_path):
    """A 2x1 image of two flat colours gives [left, right, thumbnail], normalised by mean/std."""
    spec = DataSpec(image_size=8, image_mean=(0.0, 0.0, 0.0), image_std=(1.0, 1.0, 1.0), patch_size=4)
    im = Image.new("RGB", (16, 8), (255, 0, 0))  # 2:1 at 8-px tiles: grid (2, 1) (too small for (4, 2))
    im.paste((0, 0, 255), (8, 0, 16, 8))
    im.save(tmp_path / "x.png")
    tiles = load_image_tiles(tmp_path / "x.png", MediaOptions(), spec)
    assert tiles.shape == (3, 3, 8, 8)
    assert torch.allclose(tiles[0, :, 2:6, 2:6].mean((1, 2)), torch.tensor([1.0, 0, 0]), atol=0.02)
    assert torch.allclose(tiles[1, :, 2:6, 2:6].mean((1, 2)), torch.tensor([0, 0, 1.0]), atol=0.02)
    assert image_num_tiles(tmp_path / "x.png", MediaOptions(), 8) == 3


def test_frame_indices():
    """Stride by fps, then clamp to max (uniform) or min (uniform, duplicates allowed)."""
    o = MediaOptions(min_frames=4, max_frames=16, video_fps=3)
    assert frame_indices(30, 30.0, o) == [0, 10, 19, 29]  # 3 strided frames < min 4 -> uniform 4
    assert len(frame_indices(795, 10.0, o)) == 16 and frame_indices(795, 10.0, o)[-1] == 794
    assert frame_indices(40, 10.0, o) == [0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36, 39]
    assert frame_indices(3, 10.0, o) == [0, 1, 1, 2]
    assert frame_indices(12, 30.0, o) == [0, 4, 7, 11]


@pytest.mark.parametrize("name", ["tree.avi", "vtest.avi", "Megamind.avi"])
def test_real_video_decodes_to_frames(name):
    """OpenCV's sample AVIs decode with PyAV into the header-predicted number of tiles."""
    path = demo_root() / "video" / name
    spec, o = PRESETS["tiny"], MediaOptions()
    frames = load_video_frames(path, o, spec)
    assert frames.shape == (video_num_frames(path, o), 3, 28, 28)
    assert o.min_frames <= frames.shape[0] <= o.max_frames
    assert frames.std() > 0.1  # real pictures, not a constant


def test_audio_load_resample_and_counts(tmp_path):
    """A real 16 kHz clip loads unchanged; a 48 kHz copy resamples to the same length; header counts match."""
    import soundfile as sf

    path = SPEECH / "librivox" / "sense_and_sensibility_01_austen_64kb-0880.wav"
    if not path.is_file():
        pytest.skip("apt-get install pocketsphinx-testdata")
    wave = load_audio(path)
    raw, rate = sf.read(path, dtype="float32")
    assert rate == 16000 and np.allclose(wave, raw)
    sf.write(tmp_path / "x48.wav", resample(raw, 16000, 48000), 48000)
    back = load_audio(tmp_path / "x48.wav")
    assert len(back) == len(raw)
    assert np.abs(back - raw).max() < 2e-3 * max(1.0, np.abs(raw).max() * 50)
    spec = PRESETS["tiny"]
    feats = load_audio_features(path, MediaOptions(), spec)
    assert feats.shape == (audio_num_frames(path, spec), 80)
    assert feats.shape[0] == 1 + (len(raw) - 400) // 160


def test_fbank_settings_pinned_to_vita():
    """kaldi-native-fbank is called with VITA's settings: 16 kHz, 25/10 ms, povey, 80 bins, energy floor 0."""
    o = fbank_options(dither=0.0)
    assert o.frame_opts.samp_freq == 16000 and o.frame_opts.frame_length_ms == 25.0
    assert o.frame_opts.frame_shift_ms == 10.0 and o.frame_opts.window_type == "povey"
    assert o.frame_opts.dither == 0.0 and o.mel_opts.num_bins == 80 and o.energy_floor == 0.0
    assert o.frame_opts.snip_edges


def test_fbank_scaling_and_values():
    """Features of a 1 kHz tone peak in the mel bin around 1 kHz; scaling x32768 (log energy ~ int16 range)."""
    t = np.arange(16000) / 16000
    feats = kaldi_fbank((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32))
    assert feats.shape == (98, 80)
    peak = int(feats.mean(0).argmax())
    assert 25 <= peak <= 29  # 1 kHz = mel 1000: bin (1000 - mel(20)) / ((mel(8000) - mel(20)) / 81) - 1 = 26.9
    quiet = kaldi_fbank((0.5 / 32768 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32))
    assert abs(float(feats.max() - quiet.max()) - 2 * np.log(32768)) < 0.05  # log power scales by 2 ln(32768)


def test_whisper_logmel_shape():
    """Whisper log-mel: [T, n_mels] at 100 frames/s, not padded to 30 s."""
    feats = whisper_logmel(np.zeros(32000, dtype=np.float32) + 0.01, 80)
    assert feats.shape == (200, 80)


@pytest.mark.parametrize("n", [1, 160, 399])
def test_clip_shorter_than_whisper_window_is_empty_audio_not_a_padding_error(tmp_path, n):
    """A clip under one 25 ms window: 0 frames from its header (the index calls it empty media) and, decoded,
    "empty audio" naming the file; never the feature code's reflect-padding error."""
    import soundfile as sf

    from vita.data.media import MediaError, audio_num_frames, load_audio_features, whisper_frames

    clip = tmp_path / "short.wav"
    sf.write(clip, np.full(n, 0.1, dtype=np.float32), 16000)
    spec = PRESETS["whisper"]
    assert whisper_frames(n) == 0 and audio_num_frames(clip, spec) == 0
    with pytest.raises(MediaError, match="shorter than one 25 ms frame") as e:
        load_audio_features(clip, None, spec)
    assert e.value.kind == "empty audio" and e.value.path == clip
    assert whisper_frames(400) == 2 == whisper_logmel(np.full(400, 0.1, dtype=np.float32), 80).shape[0]


def test_vita_audio_tokens():
    """VITA's encoder keeps len(ones(T)[2::2][2::2][0::2]) tokens (~T/8)."""
    assert vita_audio_num_tokens(400) == 50
    assert [vita_audio_num_tokens(t) for t in (0, 2, 3, 5, 7, 8, 100)] == [0, 0, 0, 0, 1, 1, 12]


# real demo files -> placeholder tokens at VITA's sizes (448-px tiles x 256 tokens), worked by hand
GOLDEN_TOKENS = {
    "images/astronaut.png": 256,  # 512x512: (2,2) tie fails (262,144 <= 401,408) -> 1 tile
    "images/coffee.png": 7 * 256,  # 600x400 = 3:2 -> 3x2 + thumbnail
    "images/chelsea.png": 7 * 256,  # 451x300 ~ 1.503 -> 3x2 + thumbnail
    "images/hubble_deep_field.jpg": 5 * 256,  # 1000x872: tie (1,1)/(2,2) -> 2x2 + thumbnail
    "images/retina.jpg": 10 * 256,  # 1411x1411: ties up to (3,3) -> 9 + thumbnail
    "video/vtest.avi": 16 * 256,  # 795 frames at 10 fps, stride 3 -> 265 > 16 -> 16 frames
    "video/Megamind.avi": 16 * 256,  # 270 frames at 23.976 fps, stride 8 -> 34 -> 16
    "speech/cards/001.wav": 13,  # 17,526 samples -> 108 fbank frames -> [2::2][2::2][0::2] -> 13
}


@pytest.mark.parametrize("rel", sorted(GOLDEN_TOKENS))
def test_exact_tokens_of_real_media(rel):
    """Header-based placeholder counts of real files at VITA's sizes equal the hand-worked numbers,
    and decoding gives the same count."""
    path = demo_root() / rel
    spec, o = PRESETS["vita"], MediaOptions()
    if rel.startswith("images"):
        n, decoded = image_num_tiles(path, o, 448) * 256, load_image_tiles(path, o, spec).shape[0] * 256
    elif rel.startswith("video"):
        n, decoded = video_num_frames(path, o) * 256, load_video_frames(path, o, spec).shape[0] * 256
    else:
        n = vita_audio_num_tokens(audio_num_frames(path, spec))
        decoded = vita_audio_num_tokens(load_audio_features(path, o, spec).shape[0])
    assert n == decoded == GOLDEN_TOKENS[rel]


def _reference_video_frames(path, opts, spec):
    """The decode before issue 14, written out plainly: every frame decoded in order, the sampled ones (by
    decode index) converted, padded if asked, resized PIL-bicubic and normalised one at a time."""
    import av

    from vita.data.media import _pad_square, _video_meta, frame_indices

    n, fps = _video_meta(path)
    want = frame_indices(n, fps, opts)
    with av.open(str(path)) as c:
        decoded = [f.to_image() for f in c.decode(video=0)]
    mean, std = np.array(spec.image_mean, np.float32), np.array(spec.image_std, np.float32)
    out, last = [], None
    for i in want:
        last = decoded[i] if i < len(decoded) else (last if last is not None else decoded[0])
        im = _pad_square(last, spec) if opts.image_aspect_ratio == "pad" else last
        arr = np.asarray(im.resize((spec.image_size, spec.image_size), Image.BICUBIC).convert("RGB"), np.float32) / 255.0
        out.append(torch.from_numpy((arr - mean) / std).permute(2, 0, 1))
    return want, torch.stack(out)


@pytest.mark.parametrize("name,aspect", [("vtest.avi", "square"), ("Megamind.avi", "pad"), ("tree.avi", "square"),
                                         ("tree.avi", "pad")])
def test_video_decode_equals_the_plain_decode(name, aspect):
    """The fast decode (threaded, sampled frames only, vectorised normalisation) gives the same frames as the
    plain one on every demo video, at VITA's 448-px tiles: the same count (tree.avi's header over-counts, so
    its last frame repeats) and pixels equal within 1e-6 (float rounding; in 0-255 levels: exact)."""
    path = demo_root() / "video" / name
    opts, spec = MediaOptions(image_aspect_ratio=aspect), PRESETS["vita"]
    want, ref = _reference_video_frames(path, opts, spec)
    got = load_video_frames(path, opts, spec)
    assert got.shape == ref.shape == (len(want), 3, 448, 448)
    assert (got - ref).abs().max() <= 1e-6
