"""``python -m vita.serve TARGET [overrides] [--host 127.0.0.1] [--port 8000] [--media-root DIR] [--api-key KEY]``.

TARGET is what ``vita.chat`` takes: a run dir, an export, a VITA folder, a HF folder, or nothing (the
model of the overrides, e.g. ``model=smol_lm data.template=smollm2``). The key may also come from
``$VITA_SERVE_API_KEY``. ``--port 0`` picks a free port; the line ``vita.serve: ready on URL`` says which.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

from vita.errors import ConfigError, one_line_errors

KEY_ENV = "VITA_SERVE_API_KEY"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m vita.serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("args", nargs="*", help="TARGET (run dir, export, HF or VITA folder; optional) and key=value overrides")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    ap.add_argument("--port", type=int, default=8000, help="port (0 = any free one)")
    ap.add_argument("--media-root", help="folder image/video paths in requests may point into (default: paths refused)")
    ap.add_argument("--api-key", default=os.environ.get(KEY_ENV),
                    help=f"require 'Authorization: Bearer KEY' on every API route (default: ${KEY_ENV})")
    ap.add_argument("--model-name", help="the model id clients send (default: the target's folder or model= name)")
    ap.add_argument("--max-batch", type=int, default=16, help="most requests per forward pass (1 = sequential)")
    ap.add_argument("--batch-window-ms", type=float, default=50.0,
                    help="a batch waits this long for one more request (four times at most)")
    ap.add_argument("--max-queue", type=int, default=64, help="most waiting requests; more get 503 + Retry-After")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds a request may take (504 after)")
    ap.add_argument("--max-tokens", type=int, default=1024, help="largest max_tokens a request may ask for")
    ap.add_argument("--default-max-tokens", type=int, default=256, help="max_tokens of a request that gives none")
    ap.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body")
    ap.add_argument("--max-media-mb", type=float, default=16.0, help="largest decoded media item")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--config-dir", "-cd", help="a config folder added to the search path (as for vita.run)")
    return ap


def model_name(target: str | None, overrides: list[str]) -> str:
    """The default model id: the target folder's name (``final`` -> its run's), else the ``model=`` choice."""
    if target:
        p = Path(target).expanduser().resolve()
        return p.parent.name if p.name == "final" else p.name
    return next((o.split("=", 1)[1] for o in overrides if o.startswith("model=")), "vita")


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    import uvicorn

    from vita.infer import load_target, split_target
    from vita.serve.app import Settings, create_app
    from vita.serve.request import Limits

    target, overrides = split_target(args.args)
    if args.config_dir:
        overrides = ["--config-dir", args.config_dir, *overrides]
    root = Path(args.media_root).expanduser() if args.media_root else None
    if root is not None and not root.is_dir():
        raise ConfigError(f"--media-root {root} is not a folder; pass the folder request paths may point into")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"warning: serving on {args.host} without --api-key: anyone who reaches this port can use the model",
              file=sys.stderr)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        sock = socket.create_server((args.host, args.port), family=socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    except OSError as e:
        raise ConfigError(f"cannot listen on {args.host}:{args.port} ({e.strerror}); pick another --port") from None
    print(f"vita.serve: loading {target or ' '.join(overrides)} ...", flush=True)
    loaded = load_target(target, overrides, dtype=args.dtype)
    settings = Settings(model_name=args.model_name or model_name(target, overrides), api_key=args.api_key or None,
                        media_root=root, limits=Limits(int(args.max_media_mb * 2**20), args.max_tokens),
                        max_body_bytes=int(args.max_body_mb * 2**20), default_max_tokens=args.default_max_tokens,
                        timeout_s=args.timeout, max_batch=args.max_batch, window_s=args.batch_window_ms / 1000,
                        max_queue=args.max_queue)
    host, port = sock.getsockname()[:2]
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    settings.announce = f"vita.serve: ready on {url} (model {settings.model_name!r}, {loaded.kind} {loaded.source})"
    app = create_app(loaded, settings)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5))
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
