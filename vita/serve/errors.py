"""API errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with a 4xx/5xx status.

Every way a request can be wrong has a ``code`` here (the table of docs/SERVE.md); a handler raises
:class:`ApiError` and the app turns it into the JSON answer, so no bad request reaches a 500.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
         415: "invalid_request_error", 503: "server_busy", 504: "timeout_error"}
"""OpenAI's error ``type`` for each status (``server_error`` for any other)."""

CODES: dict[str, int] = {
    "invalid_json": 400, "invalid_content_type": 415, "body_too_large": 413, "invalid_messages": 400,
    "invalid_conversation": 400, "invalid_text": 400, "unsupported_part": 400, "invalid_parameter": 400,
    "invalid_base64": 400, "invalid_media": 400, "media_too_large": 413, "unsupported_modality": 400,
    "remote_url": 400, "path_not_allowed": 403, "model_not_found": 404, "no_speech_decoder": 400,
    "context_length_exceeded": 400, "invalid_api_key": 401, "not_found": 404, "method_not_allowed": 405,
    "server_busy": 503, "timeout": 504, "internal_error": 500,
}
"""Every error code vita.serve answers, with its HTTP status."""


@dataclass
class ApiError(Exception):
    """A request vita.serve refuses: ``code`` (a key of :data:`CODES`, which gives the status), a one-line
    ``message`` naming the problem and the fix, the request field it is about (``param``), extra headers."""

    code: str
    message: str
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)
        if self.code not in CODES:
            raise ValueError(f"unknown API error code {self.code!r}; add it to vita.serve.errors.CODES")

    @property
    def status(self) -> int:
        return CODES[self.code]

    def body(self) -> dict:
        """The JSON body, as OpenAI writes it."""
        return {"error": {"message": self.message, "type": TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.code}}
