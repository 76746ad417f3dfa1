"""``python -m vita.chat [TARGET] [overrides]``: talk to a model (REPL), ask once, or answer a file.

TARGET is a run dir (newest checkpoint), an export (``<run>/final``), a HF folder, or nothing
(the model the overrides describe, e.g. ``model=smol_omni``); see :func:`vita.infer.load_target`.

    python -m vita.chat outputs/demo/run                     # REPL
    python -m vita.chat model=smol_lm --prompt "What is AI?"  # one answer
    python -m vita.chat RUN --prompt "What is this?" --image cat.png
    python -m vita.chat RUN --input questions.jsonl --output preds.jsonl   # VITA-format file
    python -m vita.chat RUN --prompt "Say hello" --speak hello.wav   # a model with a speech decoder: spoken too

REPL commands: ``/image PATH``, ``/video PATH``, ``/audio PATH`` (attach to your next message),
``/speak on|off|FOLDER`` (a WAV per answer, streamed as the speech decoder makes it; its path is printed),
``/system TEXT``, ``/reset``, ``/quit``. Prompts are built by the training code (template,
tiling, frames, audio features), so the model sees what it was trained on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from vita.errors import VitaError, one_line_errors

COMMANDS = "/image PATH, /video PATH, /audio PATH, /speak on|off|FOLDER, /system TEXT, /reset, /quit"
SPEECH_DIR = "vita_speech"
"""Where the REPL's ``/speak on`` writes its WAVs without ``--speak``."""
FIXES = {"image": "pass an image file (PNG, JPEG ...)", "video": "pass a video file PyAV can decode (AVI, MP4 ...)",
         "audio": "pass an audio file (WAV, FLAC, OGG)"}


def media_problem(loaded, modality: str, path: str) -> str | None:
    """One line saying why ``path`` cannot be attached as ``modality`` (None if it can): missing,
    undecodable, or no encoder for it. Decodes it with the training code."""
    from vita.data.schema import BadSample
    from vita.infer import Conversation, conversation_prompt

    p = Path(path).expanduser()
    if not p.is_file():
        return f"{p}: no such file; check the path (nothing was attached)"
    if not loaded.supports(modality):
        enc = "audio encoder (model.audio.encoder)" if modality == "audio" else "vision tower (model.vision.tower)"
        return (f"{p}: this model has no {enc}, so it cannot take {modality} input; load a model that has one "
                "(e.g. model=smol_omni)")
    conv = Conversation()
    conv.add_user("", **{modality: [p]})
    try:
        conversation_prompt(loaded.processor, conv)
    except BadSample as e:
        return f"{p}: {e.kind}: {e.detail.split(': ', 1)[-1]}; {FIXES[modality]}"
    return None


def _gen(args):
    from vita.infer import GenerationConfig

    return GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                            repetition_penalty=args.repetition_penalty, use_cache=not args.no_cache, seed=args.seed)


def _say(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def repl(loaded, args) -> int:
    """The interactive loop; every error is one line and the loop goes on."""
    from vita.infer import Conversation
    from vita.infer.answer import chat_turn

    conv = Conversation(system=args.system)
    pending: dict[str, list[Path]] = {}
    voice = Voice(loaded, args)
    if args.speak:
        print(voice.command(args.speak), flush=True)
    print(f"vita.chat: {loaded.source} ({loaded.kind}). Commands: {COMMANDS}", flush=True)
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not line:
            continue
        if line.startswith("/"):
            cmd, _, rest = line.partition(" ")
            rest = rest.strip()
            if cmd == "/quit":
                return 0
            if cmd == "/reset":
                conv, pending = Conversation(system=conv.system), {}
                print("(conversation cleared)", flush=True)
            elif cmd == "/speak":
                print(voice.command(rest), flush=True)
            elif cmd == "/system":
                conv.system = rest
                print("(system prompt set)", flush=True)
            elif cmd in ("/image", "/video", "/audio") and rest:
                mod = cmd[1:]
                why = media_problem(loaded, mod, rest)
                if why:
                    print(f"error: {why}", flush=True)
                else:
                    pending.setdefault(mod, []).append(Path(rest).expanduser())
                    print(f"({mod} attached to your next message: {rest})", flush=True)
            else:
                print(f"error: unknown command {line!r}; commands: {COMMANDS}", flush=True)
            continue
        conv.add_user(line, **pending)
        _say("assistant> ")
        t0 = time.perf_counter()
        try:
            reply, ids, batch = chat_turn(loaded, conv, _gen(args), on_text=_say)
            n = len(ids)
        except Exception as e:  # noqa: BLE001  (one line, and the REPL goes on)
            conv.turns.pop()
            for mod, files in pending.items():
                del conv.media[mod][-len(files):]
            msg = str(e) if isinstance(e, VitaError) else f"{type(e).__name__}: {e} (an internal error; please report it)"
            print(f"\nerror: {msg}", flush=True)
            pending = {}
            continue
        pending = {}
        conv.add_assistant(reply)
        dt = time.perf_counter() - t0
        print(f"\n[{n} tokens, {n / max(dt, 1e-9):.1f} tokens/s]", flush=True)
        if voice.on:
            print(voice.speak(batch, ids), flush=True)


class Voice:
    """The REPL's spoken answers: ``/speak on|off|FOLDER``; a WAV per answer in the folder, one line each."""

    def __init__(self, loaded, args) -> None:
        self.loaded, self.chunk = loaded, args.speech_chunk
        self.folder, self.on, self.count = Path(args.speak or SPEECH_DIR).expanduser(), False, 0

    def command(self, arg: str) -> str:
        """Handle ``/speak ARG``; returns the line to print (an ``error:`` line leaves the state as it was)."""
        from vita.infer.speak import speech_problem, wav_path_problem

        if arg == "off":
            self.on = False
            return "(speech off)"
        if arg in ("", "on"):
            folder = self.folder
        else:
            folder = Path(arg).expanduser()
        why = speech_problem(self.loaded.model) or wav_path_problem(folder, folder=True)
        if why:
            return f"error: {why}"
        try:
            folder.mkdir(exist_ok=True)
        except OSError as e:
            return f"error: {folder}: cannot create the folder ({e.strerror}); give another path"
        self.folder, self.on = folder, True
        return f"(speech on: a WAV per answer in {folder}/)"

    def speak(self, batch: dict, ids: list[int]) -> str:
        """Speak one answer into the next WAV of the folder; returns the line to print."""
        from vita.infer.speak import speak_rows, write_speech

        self.count += 1
        while (self.folder / f"answer_{self.count:03d}.wav").exists():  # an earlier session's answers stay
            self.count += 1
        path = self.folder / f"answer_{self.count:03d}.wav"
        try:
            stats = write_speech(speak_rows(self.loaded.model, batch, [ids], self.loaded.pad_id, self.chunk)[0], path)
        except OSError as e:
            return f"error: {path}: cannot write the speech ({e}); /speak FOLDER picks another folder"
        except Exception as e:  # noqa: BLE001  (one line, and the REPL goes on)
            msg = str(e) if isinstance(e, VitaError) else f"{type(e).__name__}: {e} (an internal error; please report it)"
            return f"error: speech failed: {msg}"
        return f"(speech: {path}, {stats.line()})"


def one_shot(loaded, args) -> int:
    """``--prompt``: stream one answer (``--json``: print a JSON line with the text and token ids)."""
    from vita.infer import (
        Conversation,
        GenerationConfig,
        chat_reply,
        collate_prompts,
        conversation_prompt,
        decode,
        generate,
    )

    for mod in ("image", "video", "audio"):
        for p in getattr(args, mod) or []:
            why = media_problem(loaded, mod, p)
            if why:
                print(f"error: {why}", file=sys.stderr)
                return 2
    if args.speak:
        from vita.infer.speak import speech_problem, wav_path_problem

        why = speech_problem(loaded.model) or wav_path_problem(args.speak)
        if why:
            print(f"error: --speak: {why}", file=sys.stderr)
            return 2
    conv = Conversation(system=args.system)
    conv.add_user(args.prompt, image=args.image, video=args.video, audio=args.audio)
    gen: GenerationConfig = _gen(args)
    if not args.json:  # stream the answer as it comes
        if not args.speak:
            chat_reply(loaded, conv, gen, on_text=_say)
            print(flush=True)
            return 0
        from vita.infer.answer import chat_turn
        from vita.infer.speak import speak_rows, write_speech

        _, ids, batch = chat_turn(loaded, conv, gen, on_text=_say)
        print(flush=True)
        stats = write_speech(speak_rows(loaded.model, batch, [ids], loaded.pad_id, args.speech_chunk)[0], args.speak)
        print(f"(speech: {args.speak}, {stats.line()})", flush=True)
        return 0
    batch = collate_prompts([conversation_prompt(loaded.processor, conv)], loaded.pad_id)
    ids = generate(loaded.model, batch, gen, loaded.stop, loaded.pad_id)[0]
    row = {"prediction": decode(loaded, ids), "ids": ids, "prompt_ids": batch["input_ids"][0].tolist()}
    if args.speak:
        from vita.infer.speak import speak_rows, write_speech

        st = write_speech(speak_rows(loaded.model, batch, [ids], loaded.pad_id, args.speech_chunk)[0], args.speak)
        row.update(speech=str(args.speak), **st.record())
    print(json.dumps(row))
    return 0


def batch_file(loaded, args) -> int:
    """``--input FILE --output PREDS``: answer every record of a VITA-format file (its last user turn;
    a final assistant turn is kept as ``reference``)."""
    from omegaconf import OmegaConf

    from vita.config import EvalSetConfig
    from vita.eval.sets import load_eval_set
    from vita.infer.answer import answer_items
    from vita.infer.prompt import build_prompt, split_answer

    src = Path(args.input)
    root = str(src.resolve().parent)
    es_cfg = OmegaConf.structured(EvalSetConfig(
        annotations=[str(src)], image_root=args.media_root or root, video_root=args.media_root or root,
        audio_root=args.media_root or root, metric="exact", max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size))
    es = load_eval_set(src.stem, es_cfg, loaded.processor, require_answer=False)  # checks every record first
    items = [build_prompt(loaded.processor, split_answer(raw)[0], where, roots) for raw, where, roots in es.records]
    spoken: dict[int, dict] = {}
    on_batch = None
    if args.speak:
        from vita.infer.speak import speak_rows, speech_problem, wav_path_problem, write_speech

        why = speech_problem(loaded.model) or wav_path_problem(args.speak, folder=True)
        if why:
            raise VitaError(f"--speak: {why}")
        folder = Path(args.speak).expanduser()
        folder.mkdir(exist_ok=True)

        def on_batch(first: int, batch: dict, rows: list[list[int]]) -> None:
            for k, sp in enumerate(speak_rows(loaded.model, batch, rows, loaded.pad_id, args.speech_chunk)):
                path = folder / f"{first + k:05d}.wav"
                st = write_speech(sp, path)
                spoken[first + k] = {"speech": str(path), **st.record()}
    got = answer_items(loaded, items, _gen(args), args.batch_size, progress=True, on_batch=on_batch)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for i, ((raw, where, _), ids) in enumerate(zip(es.records, got, strict=True)):
            row = {"index": i, "id": str(raw.get("id", where)),
                   "prediction": loaded.tokenizer.decode(ids, skip_special_tokens=True).strip(),
                   "reference": split_answer(raw)[1], **spoken.get(i, {})}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(got)} answers written to {out}" + (f", their speech to {args.speak}/" if args.speak else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m vita.chat", description=__doc__.split("\n\n")[0])
    ap.add_argument("args", nargs="*", help="TARGET (run dir, export, HF folder, VITA folder; optional) and key=value overrides")
    ap.add_argument("--prompt", help="ask once and print the answer")
    ap.add_argument("--image", action="append", help="image for --prompt (repeatable)")
    ap.add_argument("--video", action="append", help="video for --prompt (repeatable)")
    ap.add_argument("--audio", action="append", help="audio clip for --prompt (repeatable)")
    ap.add_argument("--system", help="system prompt (default: the template's)")
    ap.add_argument("--input", help="VITA-format .jsonl/.json file to answer")
    ap.add_argument("--output", help="predictions .jsonl for --input")
    ap.add_argument("--media-root", help="folder the --input file's media paths are relative to (default: its folder)")
    ap.add_argument("--batch-size", type=int, default=4, help="prompts per generate call for --input")
    ap.add_argument("--speak", metavar="PATH", help="speak the answers (a model with a speech decoder): --prompt: the "
                    "WAV file to write; --input: a folder for a WAV per row; REPL: the folder of /speak (speech on)")
    ap.add_argument("--speech-chunk", type=int, default=8, help="code frames per speech decoder chunk (streaming)")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--repetition-penalty", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=None, help="sampling seed")
    ap.add_argument("--no-cache", action="store_true", help="recompute the whole sequence each step (no KV cache)")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--config-dir", "-cd", help="a config folder added to the search path (as for vita.run)")
    ap.add_argument("--json", action="store_true", help="--prompt: print a JSON line with the answer and token ids")
    return ap


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    from vita.infer import load_target, split_target

    if bool(args.input) != bool(args.output):
        raise VitaError("--input and --output go together (a VITA-format file in, predictions JSONL out)")
    target, overrides = split_target(args.args)
    if args.config_dir:
        overrides = ["--config-dir", args.config_dir, *overrides]
    loaded = load_target(target, overrides, dtype=args.dtype)
    if args.input:
        return batch_file(loaded, args)
    if args.prompt is not None:
        return one_shot(loaded, args)
    return repl(loaded, args)


if __name__ == "__main__":
    sys.exit(main())
