"""The one check of a token's shape, for the clients that send it and the server that wants it.

A token travels as ``Authorization: Bearer <token>`` and in ``head.auth``: it must be a
non-empty run of printable ASCII without spaces (a JWT, or a random secret such as
``secrets.token_urlsafe()``).
"""

from __future__ import annotations


def token_problem(token: str) -> str | None:
    """What is wrong with ``token`` as a bearer token (``None`` if nothing); never echoes it."""
    if not isinstance(token, str):
        return f"the token must be a string, got {type(token).__name__}"
    if not token:
        return "the token must not be empty (leave it out to go without authentication)"
    if not all("!" <= c <= "~" for c in token):
        return ("the token must be printable ASCII without spaces (it is sent in an HTTP "
                "header): use a JWT or a random secret such as secrets.token_urlsafe()")
    return None
