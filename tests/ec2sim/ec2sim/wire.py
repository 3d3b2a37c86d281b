"""EC2 wire details shared by the front, the fault injector and the throttler.

Real EC2 answers every error with the same small XML document (no namespace),
HTTP 400 for client errors and 500/503 for server-side ones; aws-sdk-ec2 parses
exactly that shape. moto's errors carry an xmlns and a fixed request id
("request-id"), so the front rewrites them through `normalise_error` and gives
every answer a fresh request id, as EC2 does.
"""

from __future__ import annotations

import re
import uuid
from xml.sax.saxutils import escape

XML_HEADERS = [("Content-Type", "text/xml;charset=UTF-8")]

_CODE_RE = re.compile(rb"<Code>(.*?)</Code>", re.S)
_MESSAGE_RE = re.compile(rb"<Message>(.*?)</Message>", re.S)
_MOTO_REQUEST_ID = re.compile(rb"<(requestId|RequestID|RequestId)>request-id</\1>")


def new_request_id() -> str:
    return str(uuid.uuid4())


def error_body(code: str, message: str, request_id: str | None = None) -> bytes:
    """The exact error document real EC2 returns."""
    rid = request_id or new_request_id()
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Errors><Error><Code>{escape(code)}</Code>"
        f"<Message>{escape(message)}</Message></Error></Errors>"
        f"<RequestID>{rid}</RequestID></Response>"
    ).encode()


def normalise_error(body: bytes, request_id: str) -> bytes:
    """Re-emit a moto error document in EC2's exact shape (keeps code and message)."""
    code = _CODE_RE.search(body)
    message = _MESSAGE_RE.search(body)
    if not code:
        return error_body("InternalError", "An internal error has occurred", request_id)
    # Code and message are already XML-escaped text inside moto's document.
    msg = message.group(1) if message else b""
    return (
        b'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>'
        + code.group(1)
        + b"</Code><Message>"
        + msg
        + b"</Message></Error></Errors><RequestID>"
        + request_id.encode()
        + b"</RequestID></Response>"
    )


def stamp_request_id(body: bytes, request_id: str) -> bytes:
    """Replace moto's constant request id with a real one."""
    return _MOTO_REQUEST_ID.sub(
        lambda m: b"<" + m.group(1) + b">" + request_id.encode() + b"</" + m.group(1) + b">",
        body,
    )


# Errors the layer injects or returns itself: (HTTP status, code, message).
THROTTLED = (503, "RequestLimitExceeded", "Request limit exceeded.")
INTERNAL = (500, "InternalError", "An internal error has occurred.")
UNAVAILABLE = (503, "Unavailable", "The server is overloaded and can't handle the request.")
