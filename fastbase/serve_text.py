"""Layer 8: what `fastbase serve` reads from a request to a text classifier: a JSON body
`{"text": "..."}` (UTF-8). Each way it can be wrong gets a 4xx naming the problem: a body that is
not JSON (400), not an object, without a "text" field, a text that is not a string or is empty
(422), a text over the server's limit of characters (413)."""
from __future__ import annotations

import json

from .serve_guard import ClientError

__all__ = ["MAX_TEXT_CHARS", "decode_text_request"]

MAX_TEXT_CHARS = 100_000  # about 20,000 words: ten times IMDB's longest review


def decode_text_request(body: bytes, max_chars: int = MAX_TEXT_CHARS) -> str:
    """The text of the JSON request `body`, or a `ClientError` saying what is wrong with it."""
    if not body:
        raise ClientError(422, 'The request body is empty; send JSON {"text": "..."}.')
    try:
        request = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ClientError(400, f"The request body is not UTF-8 (byte {e.start}); send JSON in UTF-8.") from e
    except json.JSONDecodeError as e:
        raise ClientError(400, f'The request body is not JSON ({e}); send {{"text": "..."}}.') from e
    if not isinstance(request, dict) or "text" not in request:
        got = (", ".join(map(repr, request)) or "none") if isinstance(request, dict) else \
            f"a JSON {type(request).__name__}"
        raise ClientError(422, f'The JSON body has no "text" field (got {got}); send {{"text": "..."}}.')
    text = request["text"]
    if not isinstance(text, str):
        raise ClientError(422, f'"text" is a JSON {type(text).__name__}, not a string.')
    if not text.strip():
        raise ClientError(422, '"text" is empty; send the text to classify.')
    if len(text) > max_chars:
        raise ClientError(413, f'"text" has {len(text):,} characters, over the server\'s limit of {max_chars:,}; '
                               "send a shorter text.")
    return text
