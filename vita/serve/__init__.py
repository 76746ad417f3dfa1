"""``python -m vita.serve TARGET``: an OpenAI-compatible API and a web page for a vita model.

    python -m vita.serve outputs/demo/run                       # http://127.0.0.1:8000
    python -m vita.serve model=smol_lm data.template=smollm2 --port 8001 --api-key secret

``POST /v1/chat/completions`` (text, images, video, audio in; streaming), ``GET /v1/models``,
``GET /health``, and a chat page at ``/``. Prompts, media and tokens go through the one inference
path of ``vita.chat`` (:mod:`vita.infer`); concurrent requests share batches (:mod:`vita.serve.batcher`).
The API, its part types and every error: docs/SERVE.md.
"""

from vita.serve.app import Settings, create_app
from vita.serve.errors import CODES, ApiError

__all__ = ["CODES", "ApiError", "Settings", "create_app"]
