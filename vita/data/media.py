"""Media -> tensors: image tiling, video frame sampling, audio loading and features.

Every function also has a metadata-only twin (``image_num_tiles``, ``video_num_frames``,
``audio_num_frames``) that reads headers only, so samplers know token lengths without decoding.
Decoding errors become :class:`MediaError` naming the file. ``path`` may also be a file-like object
(a shard member's bytes, :class:`vita.data.shards.reader.Member`); it is decoded in place, not copied.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vita import signal
from vita.data.spec import DataSpec
from vita.errors import DataError

SAMPLE_RATE = 16000


def _open_arg(path):
    """What a decoder opens: the path as a string, or a file-like object (a shard member) rewound to its start."""
    if hasattr(path, "read"):
        path.seek(0)
        return path
    return str(path)


class MediaError(DataError):
    """A media file that cannot be read; ``kind`` is e.g. ``unreadable image``."""

    def __init__(self, kind: str, path: Path, detail: str) -> None:
        self.kind, self.path, self.detail = kind, path, detail
        super().__init__(f"{path}: {kind}: {detail}")


MEDIA_KEYS = ("min_tiles", "max_tiles", "use_thumbnail", "image_aspect_ratio", "min_frames", "max_frames",
              "video_fps", "dither")
"""The keys of ``cfg.data`` that say how media are cut (their defaults and docs: :class:`vita.config.DataConfig`)."""


def _media_options() -> type:
    from dataclasses import MISSING, field, fields, make_dataclass

    from vita.config import DataConfig

    spec = [(f.name, f.type, field(default=f.default)) for f in fields(DataConfig) if f.name in MEDIA_KEYS]
    assert [n for n, _, _ in spec] == list(MEDIA_KEYS) and all(d.default is not MISSING for _, _, d in spec)
    cls = make_dataclass("MediaOptions", spec, frozen=True)
    cls.__module__ = __name__
    cls.__doc__ = ("How media are cut: the media keys of ``cfg.data`` (:data:`MEDIA_KEYS`), with "
                   ":class:`~vita.config.DataConfig`'s defaults and docs.")
    return cls


MediaOptions = _media_options()


def media_options(data_cfg) -> MediaOptions:
    """The :class:`MediaOptions` of ``cfg.data``."""
    return MediaOptions(**{k: getattr(data_cfg, k) for k in MEDIA_KEYS})


# ------------------------------------------------------------------------------------- images
def candidate_grids(min_num: int, max_num: int) -> list[tuple[int, int]]:
    """All (cols, rows) with ``min_num <= cols*rows <= max_num``, by area then cols."""
    grids = {(i, j) for i in range(1, max_num + 1) for j in range(1, max_num + 1) if min_num <= i * j <= max_num}
    return sorted(grids, key=lambda g: (g[0] * g[1], g[0]))


def choose_grid(width: int, height: int, min_num: int, max_num: int, image_size: int) -> tuple[int, int]:
    """The InternVL grid: closest aspect ratio; on an exact tie the later (larger) grid wins
    when the image area exceeds half the grid's pixel area (VITA's tie rule)."""
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_grids(min_num, max_num):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and width * height > 0.5 * image_size * image_size * cols * rows:
            best = (cols, rows)
    return best


def num_tiles_for(width: int, height: int, opts: MediaOptions, image_size: int) -> int:
    """Tiles (thumbnail included) of an image of this size."""
    if opts.image_aspect_ratio == "pad":
        width = height = max(width, height)
    cols, rows = choose_grid(width, height, opts.min_tiles, opts.max_tiles, image_size)
    n = cols * rows
    return n + 1 if opts.use_thumbnail and n > 1 else n


def check_image_size(path: Path, width: int, height: int, patch_size: int) -> None:
    """An image smaller than one patch of the vision tower carries no usable pixels: a bad sample."""
    if min(width, height) < patch_size:
        raise MediaError("image too small", path, f"{width}x{height} px is smaller than one {patch_size}x{patch_size} "
                         "patch of the vision tower; use a larger image or drop the sample")


def image_num_tiles(path: Path, opts: MediaOptions, image_size: int, patch_size: int = 1) -> int:
    """Tiles of the image at ``path``, from its header only."""
    from PIL import Image

    try:
        with Image.open(_open_arg(path)) as im:
            w, h = im.size
    except Exception as e:  # PIL raises many types
        raise MediaError("unreadable image", path, f"{type(e).__name__}: {e}") from None
    check_image_size(path, w, h, patch_size)
    return num_tiles_for(w, h, opts, image_size)


def _to_tensor(im, spec: DataSpec) -> torch.Tensor:
    return _to_tensors([im], spec)[0]


def _to_tensors(ims: list, spec: DataSpec) -> torch.Tensor:
    """Equal-sized PIL images -> normalised float [n, 3, S, S] (see :func:`_normalise`)."""
    return _normalise(np.stack([np.asarray(im.convert("RGB")) for im in ims]), spec)


def _normalise(pixels: np.ndarray, spec: DataSpec) -> torch.Tensor:
    """uint8 [n, H, W, 3] -> normalised float [n, 3, H, W] in one vectorised pass (the same float32
    arithmetic per pixel as one image at a time: ``(x / 255 - mean) / std``; channels first before the
    float conversion, so the transposing copy moves bytes, not floats)."""
    x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))).to(torch.float32).div_(255.0)
    mean = torch.tensor(spec.image_mean, dtype=torch.float32)[:, None, None]
    return x.sub_(mean).div_(torch.tensor(spec.image_std, dtype=torch.float32)[:, None, None])


def _pad_square(im, spec: DataSpec):
    from PIL import Image

    w, h = im.size
    if w == h:
        return im
    side = max(w, h)
    out = Image.new("RGB", (side, side), tuple(int(m * 255) for m in spec.image_mean))
    out.paste(im, ((side - w) // 2, (side - h) // 2))
    return out


def load_image_tiles(path: Path, opts: MediaOptions, spec: DataSpec) -> torch.Tensor:
    """Decode, tile row-major (+ thumbnail last) and normalise: float [n_tiles, 3, S, S]."""
    from PIL import Image

    s = spec.image_size
    try:
        with Image.open(_open_arg(path)) as im:
            im = im.convert("RGB")
            im.load()
    except Exception as e:
        raise MediaError("unreadable image", path, f"{type(e).__name__}: {e}") from None
    check_image_size(path, im.size[0], im.size[1], spec.patch_size)
    if opts.image_aspect_ratio == "pad":
        im = _pad_square(im, spec)
    cols, rows = choose_grid(im.size[0], im.size[1], opts.min_tiles, opts.max_tiles, s)
    big = im.resize((s * cols, s * rows), Image.BICUBIC)
    tiles = [big.crop((c * s, r * s, (c + 1) * s, (r + 1) * s)) for r in range(rows) for c in range(cols)]
    if opts.use_thumbnail and len(tiles) > 1:
        tiles.append(im.resize((s, s), Image.BICUBIC))
    return _to_tensors(tiles, spec)


# ------------------------------------------------------------------------------------- video
def frame_indices(n_frames: int, native_fps: float, opts: MediaOptions) -> list[int]:
    """Every ``round(native_fps / video_fps)``-th frame, then at most ``max_frames`` and at least
    ``min_frames`` by uniform spacing (duplicates allowed for very short clips)."""
    if n_frames < 1:
        return []
    stride = max(1, round(native_fps / opts.video_fps)) if native_fps > 0 else 1
    idx = list(range(0, n_frames, stride))
    if len(idx) > opts.max_frames or len(idx) < opts.min_frames:
        k = opts.max_frames if len(idx) > opts.max_frames else opts.min_frames
        idx = [int(round(x)) for x in np.linspace(0, n_frames - 1, k)]
    return idx


def _video_meta(path: Path) -> tuple[int, float]:
    import av

    try:
        with av.open(_open_arg(path)) as c:
            if not c.streams.video:
                raise MediaError("unreadable video", path, "no video stream")
            st = c.streams.video[0]
            fps = float(st.average_rate or st.guessed_rate or 0)
            n = st.frames
            if not n and st.duration is not None and st.time_base is not None:
                n = int(float(st.duration * st.time_base) * fps)
            if not n and c.duration:
                n = int(c.duration / 1e6 * fps)
    except MediaError:
        raise
    except Exception as e:
        raise MediaError("unreadable video", path, f"{type(e).__name__}: {e}") from None
    if n < 1:
        raise MediaError("unreadable video", path, "no frame count in the header")
    return int(n), fps


def video_num_frames(path: Path, opts: MediaOptions) -> int:
    """Frames that :func:`load_video_frames` will return, from the header only."""
    n, fps = _video_meta(path)
    return len(frame_indices(n, fps, opts))


def video_frames(path: Path, opts: MediaOptions, spec: DataSpec) -> np.ndarray:
    """The sampled frames of a video, each resized to one tile: uint8 [n, S, S, 3] (what
    :func:`load_video_frames` normalises, and what a shard written with ``--video-frames`` stores).

    One pass with threaded decoding up to the last sampled frame; only the sampled frames are
    converted to RGB and resized (PIL bicubic; ffmpeg's scaler differs from it by up to ~60/255 at
    edges, so scaling is not moved into the decoder). Seeking does not pay on these files: each
    key-frame interval holds a sampled frame, and inter frames need every frame since the key frame
    decoded anyway."""
    import av
    from PIL import Image

    n, fps = _video_meta(path)
    want = frame_indices(n, fps, opts)
    wanted = set(want)
    got: dict[int, object] = {}
    try:
        with av.open(_open_arg(path)) as c:
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"  # frame + slice threads where the codec has them
            for i, frame in enumerate(c.decode(stream)):
                if i in wanted:
                    got[i] = frame.to_image()
                if i >= want[-1]:
                    break
    except Exception as e:
        raise MediaError("unreadable video", path, f"{type(e).__name__}: {e}") from None
    if not got:
        raise MediaError("no decodable frame", path, f"the header promises {n} frames but none decodes (a truncated "
                         "or damaged file?); re-encode the video or drop the sample")
    last = None
    tiles: dict[int, np.ndarray] = {}
    frames = []
    for i in want:  # a header that over-counts frames: reuse the last decoded frame of the same clip
        k = i if i in got else (last if last is not None else min(got))
        last = k
        if k not in tiles:
            im = _pad_square(got[k], spec) if opts.image_aspect_ratio == "pad" else got[k]
            tiles[k] = np.asarray(im.convert("RGB").resize((spec.image_size, spec.image_size), Image.BICUBIC))
        frames.append(tiles[k])
    return np.stack(frames)


FRAME_FORMATS = ("png", "jpg", "npy")
"""How a shard stores a video's sampled frames: ``png`` (lossless, ~half of raw), ``npy`` (raw uint8,
lossless, the fastest to read), ``jpg`` (quality 95, ~1/7 of raw, lossy)."""


def encode_frames(frames: np.ndarray, kind: str) -> bytes:
    """uint8 [n, S, S, 3] -> one member's bytes: a ``png``/``jpg`` strip of the frames top to bottom, or ``npy``."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    if kind == "npy":
        np.save(buf, np.ascontiguousarray(frames, dtype=np.uint8), allow_pickle=False)
    elif kind in ("png", "jpg"):
        n, s = frames.shape[0], frames.shape[1]
        strip = Image.fromarray(np.ascontiguousarray(frames).reshape(n * s, s, 3))
        if kind == "png":
            strip.save(buf, "PNG")
        else:
            strip.save(buf, "JPEG", quality=95)
    else:
        raise DataError(f"--video-frames {kind!r}: choose one of off, {', '.join(FRAME_FORMATS)}")
    return buf.getvalue()


class StoredFrames:
    """A video's frames as :func:`video_frames` gave them when its shard was written (``kind``: one of
    :data:`FRAME_FORMATS`); :func:`load_video_frames` reads these instead of decoding a video."""

    def __init__(self, data, kind: str) -> None:
        self.data, self.kind = data, kind

    def __str__(self) -> str:
        return str(self.data)

    def pixels(self, spec: DataSpec) -> np.ndarray:
        """uint8 [n, S, S, 3]; a strip that is not of ``spec.image_size`` frames raises :class:`MediaError`."""
        try:
            if self.kind == "npy":
                x = np.load(_open_arg(self.data), allow_pickle=False)
            else:
                from PIL import Image

                with Image.open(_open_arg(self.data)) as im:
                    x = np.asarray(im.convert("RGB"))
        except Exception as e:
            raise MediaError("unreadable stored frames", self, f"{type(e).__name__}: {e}; re-shard") from None
        s = spec.image_size
        if x.dtype != np.uint8 or x.shape[-1] != 3 or x.shape[-2] != s or x.size % (s * s * 3):
            raise MediaError("unreadable stored frames", self, f"{x.dtype} {list(x.shape)} is not a stack of {s}-px "
                             "RGB frames; re-shard for this model")
        return x.reshape(-1, s, s, 3)


def load_video_frames(path, opts: MediaOptions, spec: DataSpec) -> torch.Tensor:
    """The sampled frames normalised: float [n, 3, S, S]; decoded (:func:`video_frames`), or read from
    :class:`StoredFrames` (a shard written with ``--video-frames``)."""
    pixels = path.pixels(spec) if isinstance(path, StoredFrames) else video_frames(path, opts, spec)
    return _normalise(pixels, spec)


# ------------------------------------------------------------------------------------- audio
def resample(wave: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited (FFT) resampling of a mono float waveform (to 16 kHz unless ``target`` says otherwise)."""
    return signal.resample(wave, rate, target)


def load_audio(path: Path) -> np.ndarray:
    """Mono float32 waveform in [-1, 1] at 16 kHz (wav, flac, ogg via soundfile)."""
    import soundfile as sf

    try:
        wave, rate = sf.read(_open_arg(path), dtype="float32", always_2d=True)
    except Exception as e:
        raise MediaError("unreadable audio", path, f"{type(e).__name__}: {e}") from None
    if wave.shape[0] == 0:
        raise MediaError("empty audio", path, "the file has no samples")
    if not np.isfinite(wave).all():
        raise MediaError("non-finite audio", path, "the waveform holds NaN or inf samples (they would make the loss "
                         "NaN); re-export the file or drop the sample")
    return resample(wave.mean(axis=1), rate)


WINDOW = 400  # one 25 ms analysis window at 16 kHz: Kaldi's frame and Whisper's FFT size


def fbank_frames(n_samples: int) -> int:
    """Kaldi frames (25 ms window, 10 ms shift, snip edges) of ``n_samples`` at 16 kHz."""
    return 0 if n_samples < WINDOW else 1 + (n_samples - WINDOW) // 160


def whisper_frames(n_samples: int) -> int:
    """Whisper log-mel frames that :func:`whisper_logmel` keeps of ``n_samples`` at 16 kHz: none for a clip
    shorter than one FFT window (its reflect padding needs more samples than that), else one per 10 ms."""
    return 0 if n_samples < WINDOW else n_samples // 160


def audio_num_frames(path: Path, spec: DataSpec) -> int:
    """Feature frames of the clip at ``path``, from its header only."""
    import soundfile as sf

    try:
        info = sf.info(_open_arg(path))
    except Exception as e:
        raise MediaError("unreadable audio", path, f"{type(e).__name__}: {e}") from None
    if info.frames == 0:
        raise MediaError("empty audio", path, "the file has no samples")
    n = int(round(info.frames * SAMPLE_RATE / info.samplerate))
    frames = fbank_frames(n) if spec.audio_feature == "fbank" else whisper_frames(n)
    check_audio_length(path, frames, spec)
    return frames


def check_audio_length(path: Path, frames: int, spec: DataSpec) -> None:
    """A clip longer than the audio encoder takes (``spec.max_audio_frames``) is a bad sample, never cut silently."""
    if spec.max_audio_frames and frames > spec.max_audio_frames:
        raise MediaError("audio too long", path, f"{frames / 100:.1f} s ({frames} feature frames) > the encoder's "
                         f"{spec.max_audio_frames / 100:.0f} s ({spec.max_audio_frames} frames); cut the clip or drop "
                         "the sample")


def fbank_options(dither: float = 0.0, n_mels: int = 80):
    """kaldi-native-fbank options pinned to VITA's settings (25/10 ms, povey, energy floor 0)."""
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = SAMPLE_RATE
    opts.frame_opts.frame_length_ms = 25.0
    opts.frame_opts.frame_shift_ms = 10.0
    opts.frame_opts.dither = dither
    opts.frame_opts.window_type = "povey"
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = n_mels
    opts.energy_floor = 0.0
    return opts


def kaldi_fbank(wave: np.ndarray, dither: float = 0.0, n_mels: int = 80) -> torch.Tensor:
    """[T, n_mels] log mel filterbank of a 16 kHz waveform scaled by 2**15 (as VITA does)."""
    import kaldi_native_fbank as knf

    fb = knf.OnlineFbank(fbank_options(dither, n_mels))
    fb.accept_waveform(SAMPLE_RATE, np.ascontiguousarray(wave * 32768.0, dtype=np.float32))
    fb.input_finished()
    return torch.tensor(np.array([fb.get_frame(i) for i in range(fb.num_frames_ready)], dtype=np.float32)).reshape(-1, n_mels)


def whisper_logmel(wave: np.ndarray, n_mels: int = 80) -> torch.Tensor:
    """[T, n_mels] Whisper log-mel (transformers' extractor, not padded to 30 s)."""
    from transformers import WhisperFeatureExtractor

    if whisper_frames(len(wave)) == 0:  # too short for one window: no frame (the caller says "empty audio")
        return torch.zeros(0, n_mels)
    fe = WhisperFeatureExtractor(feature_size=n_mels)
    feats = fe(wave, sampling_rate=SAMPLE_RATE, return_tensors="np", padding="longest")["input_features"][0]
    return torch.from_numpy(feats.T[: whisper_frames(len(wave))].copy())


def load_audio_features(path: Path, opts: MediaOptions, spec: DataSpec) -> torch.Tensor:
    """The encoder's features of one clip: [T, n_mels]."""
    wave = load_audio(path)
    try:
        feats = (kaldi_fbank(wave, opts.dither, spec.n_mels) if spec.audio_feature == "fbank"
                 else whisper_logmel(wave, spec.n_mels))
    except (RuntimeError, ValueError) as e:  # whatever else a clip can do to the feature code: this sample's problem
        raise MediaError("unusable audio", path, f"{spec.audio_feature} features failed: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if feats.shape[0] == 0:
        raise MediaError("empty audio", path, f"{len(wave)} samples is shorter than one 25 ms frame")
    check_audio_length(path, feats.shape[0], spec)
    return feats
