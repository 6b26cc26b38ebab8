"""Credentials out of anything the SDK prints: logs, reprs, error messages, the CLI.

A server URL may carry secrets: ``http://user:password@host`` (httpx turns the user info into
Basic auth) or a query parameter such as ``?token=...``. ``redact`` is the one function that
hides them; every place that shows a URL, or text that may contain one, goes through it.
"""

from __future__ import annotations

import re
from typing import Final

MASK: Final = "***"

# scheme://userinfo@ : the user info runs to the last "@" of the authority (a password may
# hold an unescaped "@"). Resonate's own poll addresses (poll://any@group/pid) are not URLs
# with credentials: their "any@"/"uni@" is the delivery mode.
_USERINFO: Final = re.compile(
    r"(?P<scheme>\b(?!poll://)[A-Za-z][A-Za-z0-9+.\-]*://)[^/?#\s]*@")
# a query parameter whose name says it holds a secret (token=, access_token=, password=, ...)
_SECRET_PARAM: Final = re.compile(
    r"(?P<name>[?&;](?:[A-Za-z0-9_\-]*(?:token|password|passwd|secret|signature|apikey|"
    r"api_key|auth|key|sig)))=[^&#\s'\"]*",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``.

    ``http://user:pw@host:8001/x?token=abc&group=g`` becomes
    ``http://***@host:8001/x?token=***&group=g``; text without URLs is returned unchanged.
    """
    if "@" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: m.group("scheme") + MASK + "@", text)
    return _SECRET_PARAM.sub(lambda m: m.group("name") + "=" + MASK, text)
