"""``python -m vita.data.demo``: write the demo data set from real media installed on this machine.

Media are referenced where they are installed (symlinked folders), never copied into the repo:

* images: scikit-image's bundled photos, captioned with the first line of their loader's docstring;
* speech: LibriVox and card-call clips with transcripts (Debian ``pocketsphinx-testdata``), also split
  into ``speech_train.jsonl`` and ``speech_heldout.jsonl`` (:data:`HELD_OUT_SPEECH`);
* card calls: spoken by Debian ``flite`` voices with some rank/suit pairs held out, and the real human card
  recordings as a second held-out set (:mod:`vita.data.cards`): ``make demo``'s task;
* video: OpenCV's sample AVIs, extracted from Debian ``opencv-doc`` (``apt-get download``);
* spoken questions: synthesised with ``espeak-ng`` and resampled with ``sox``;
* text: chatterbot-corpus conversations;
* spoken answers (speech out): flite-spoken answers and a codec fitted on them (:mod:`vita.data.demo_answers`).

It also writes a corpus of bad samples (``bad/``, one per kind of problem, plus good ones) that
``vita.check`` and the bad-sample tests use. ``conf/data/demo.yaml`` and ``demo_bad.yaml`` point here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from vita.config import demo_data_dir

SPEECH_ROOT = Path("/usr/share/pocketsphinx/test/data")
OPENCV_VIDEOS = ("vtest.avi", "tree.avi", "Megamind.avi")
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "camera", "coins",
                  "horse", "moon")
VIDEO_CAPTIONS = {
    "vtest.avi": "People walking through a pedestrian area, filmed by a fixed camera.",
    "tree.avi": "A short sample clip from the OpenCV examples.",
    "Megamind.avi": "A scene from an animated film trailer.",
}
HELD_OUT_SPEECH = ("sense_and_sensibility_01_austen_64kb-0930", "003")
"""Speech clips kept out of ``speech_train.jsonl`` (in ``speech_heldout.jsonl``): one LibriVox line, one card call."""
SPOKEN_QUESTIONS = [
    ("What is in this picture?", "astronaut"),
    ("Can you describe this image?", "coffee"),
    ("What do you see here?", "chelsea"),
]


class MissingFixture(RuntimeError):
    """A package the demo needs is not installed; the message says how to install it."""


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise MissingFixture(f"{what} (run `make demo-data`, which installs the Debian packages and extracts the media)")


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _link(dst: Path, src: Path) -> None:
    if dst.is_symlink() or dst.exists():
        dst.unlink() if dst.is_symlink() else shutil.rmtree(dst)
    dst.symlink_to(src, target_is_directory=True)


def image_records(root: Path) -> list[dict]:
    import skimage
    import skimage.data as sd

    src = Path(skimage.__file__).parent / "data"
    _link(root / "images", src)
    recs = []
    for name in SKIMAGE_PHOTOS:
        files = sorted(src.glob(f"{name}.*"))
        if not files:
            continue
        caption = (getattr(sd, name).__doc__ or name).strip().splitlines()[0].strip()
        recs.append({"id": f"image-{name}", "image": files[0].name,
                     "conversations": [{"from": "human", "value": "<image>\nDescribe the image briefly."},
                                       {"from": "gpt", "value": caption}]})
    return recs


def _transcripts(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if "(" in line:
            text, fid = line.rsplit("(", 1)
            out[fid.strip(") ")] = text.replace("<s>", "").replace("</s>", "").strip()
    return out


def speech_records(root: Path) -> list[dict]:
    _need(SPEECH_ROOT.is_dir(), f"{SPEECH_ROOT} is missing: apt-get install pocketsphinx-testdata")
    _link(root / "speech", SPEECH_ROOT)
    recs = []
    for sub, tfile in (("librivox", "transcription"), ("cards", "cards.transcription")):
        for fid, text in _transcripts(SPEECH_ROOT / sub / tfile).items():
            wav = f"{sub}/{fid}.wav"
            if (SPEECH_ROOT / wav).is_file():
                recs.append({"id": f"asr-{sub}-{fid}", "audio": wav,
                             "conversations": [{"from": "human", "value": "<audio>\nTranscribe the speech."},
                                               {"from": "gpt", "value": text.capitalize() + "."}]})
    return recs


def split_speech(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(train, held out) speech records: :data:`HELD_OUT_SPEECH` go to the held-out side."""
    held = {f"asr-{sub}-{fid}" for sub in ("librivox", "cards") for fid in HELD_OUT_SPEECH}
    return [r for r in records if r["id"] not in held], [r for r in records if r["id"] in held]


def write_speech(ann: Path, records: list[dict]) -> None:
    """``speech.jsonl`` (every clip), ``speech_train.jsonl`` and ``speech_heldout.jsonl`` (the demo's split)."""
    train, held = split_speech(records)
    _write_jsonl(ann / "speech.jsonl", records)
    _write_jsonl(ann / "speech_train.jsonl", train)
    _write_jsonl(ann / "speech_heldout.jsonl", held)


def extract_videos(root: Path) -> Path:
    """Extract the sample AVIs of Debian ``opencv-doc`` into ``root/video`` (downloads the .deb once)."""
    out = root / "video"
    if all((out / v).is_file() for v in OPENCV_VIDEOS):
        return out
    _need(shutil.which("apt-get") and shutil.which("dpkg-deb"), "apt-get and dpkg-deb are needed for the videos")
    debs = root / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    deb = next(iter(sorted(debs.glob("opencv-doc_*.deb"))), None)
    if deb is None:
        subprocess.run(["apt-get", "download", "opencv-doc"], cwd=debs, check=True, capture_output=True)
        deb = next(iter(sorted(debs.glob("opencv-doc_*.deb"))))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        members = [f"./usr/share/doc/opencv-doc/examples/data/{v}" for v in OPENCV_VIDEOS]
        tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", tmp, *members], stdin=tar.stdout, check=True)
        tar.wait()
        for v in OPENCV_VIDEOS:
            shutil.move(str(Path(tmp) / members[0].rsplit("/", 1)[0].lstrip("./") / v), out / v)
    return out


def video_records(root: Path) -> list[dict]:
    extract_videos(root)
    return [{"id": f"video-{v.split('.')[0]}", "video": v,
             "conversations": [{"from": "human", "value": "<video>\nWhat does the video show?"},
                               {"from": "gpt", "value": VIDEO_CAPTIONS[v]}]} for v in OPENCV_VIDEOS]


def synthesise(text: str, wav: Path) -> Path:
    """Speak ``text`` with espeak-ng into a 16 kHz mono WAV."""
    _need(bool(shutil.which("espeak-ng") and shutil.which("sox")), "espeak-ng and sox are missing: apt-get install espeak-ng sox")
    wav.parent.mkdir(parents=True, exist_ok=True)
    raw = wav.with_suffix(".22k.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(raw), text], check=True, capture_output=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", str(wav)], check=True, capture_output=True)
    raw.unlink()
    return wav


def spoken_records(root: Path, captions: dict[str, str]) -> list[dict]:
    """Spoken questions about images (``<image>\\n<audio>``), and spoken chat turns."""
    from vita.data.chatterbot import load_conversations

    recs = []
    for k, (q, img) in enumerate(SPOKEN_QUESTIONS):
        synthesise(q, root / "spoken" / f"image_q{k}.wav")
        if img in captions:
            recs.append({"id": f"spoken-image-{k}", "image": f"{img}.png" if (root / "images" / f"{img}.png").exists()
                         else f"{img}.jpg", "audio": f"image_q{k}.wav",
                         "conversations": [{"from": "human", "value": "<image>\n<audio>\n"},
                                           {"from": "gpt", "value": captions[img]}]})
    for k, conv in enumerate(load_conversations(files=["greetings.yml"])[:8]):
        q, a = conv["conversations"][0]["value"], conv["conversations"][1]["value"]
        synthesise(q, root / "spoken" / f"chat_q{k}.wav")
        recs.append({"id": f"spoken-chat-{k}", "audio": f"chat_q{k}.wav",
                     "conversations": [{"from": "human", "value": "<audio>\n"}, {"from": "gpt", "value": a}]})
    return recs


def text_records(n: int = 300) -> list[dict]:
    from vita.data.chatterbot import load_conversations

    return load_conversations()[:n]


def build(root: Path | None = None) -> Path:
    """Write the demo set (and the bad-sample corpus) under ``root``; returns it."""
    from vita.data.bad_corpus import write_bad_corpus
    from vita.data.cards import write_cards
    from vita.data.demo_answers import write_spoken_answers

    root = Path(root or demo_data_dir())
    root.mkdir(parents=True, exist_ok=True)
    ann = root / "annotations"
    images = image_records(root)
    captions = {r["id"].removeprefix("image-"): r["conversations"][1]["value"] for r in images}
    _write_jsonl(ann / "images.jsonl", images)
    write_speech(ann, speech_records(root))
    write_cards(root)
    _write_jsonl(ann / "video.jsonl", video_records(root))
    (root / "spoken").mkdir(exist_ok=True)
    spoken = spoken_records(root, captions)
    # spoken questions reference images and audio: one dataset entry with both roots
    _write_jsonl(ann / "spoken.jsonl", spoken)
    _write_jsonl(ann / "text.jsonl", text_records())
    write_bad_corpus(root)
    _need(bool(shutil.which("flite")), "flite is missing: apt-get install flite")
    write_spoken_answers(root)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=None, help="output folder (default: $VITA_DEMO_DIR or ~/.cache/vita/demo)")
    args = ap.parse_args()
    try:
        print(build(args.root))
    except MissingFixture as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
