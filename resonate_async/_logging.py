"""``configure_logging``: one call that makes a script's logs readable (or machine-readable)."""

from __future__ import annotations

import logging
import sys
from typing import Any, Final, TextIO

import structlog
from structlog.typing import Processor

LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Libraries that log every request at INFO/DEBUG: held at WARNING unless DEBUG is asked for.
_CHATTY: Final = ("httpx", "httpcore")


class _CurrentStderr(logging.Handler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (pytest's capture,
    a redirected stream...), not the one that existed at configuration time."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


_installed: logging.Handler | None = None


def _level(level: str | int) -> int:
    if isinstance(level, bool) or not isinstance(level, str | int):
        raise ValueError(f"level must be a level name such as 'INFO' or a logging constant, "
                         f"got {level!r}")
    if isinstance(level, int):
        return level
    name = level.strip().upper()
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(LEVELS)}")
    return int(getattr(logging, name))


def configure_logging(level: str | int = "INFO", *, json: bool = False,
                      stream: TextIO | None = None) -> None:
    """Send the logs of resonate_async, of your code and of stdlib ``logging`` to one place.

    After ``configure_logging()``, every ``structlog.get_logger(...)`` event (the ones
    resonate_async emits, such as ``execution_started`` with its ``promise_id``) and every
    stdlib ``logging`` record go through one handler on the root logger, rendered alike:

    * ``json=False`` (default): one readable, aligned line per event (colours on a terminal);
    * ``json=True``: one JSON object per line, with ``event``, ``level``, ``logger``,
      ``timestamp`` (ISO 8601, UTC) and every bound key (``promise_id``, ``task_id``, ...),
      for log shippers. Exceptions are rendered as text under ``exception``.

    Arguments:
        level: the least severe level shown: ``"DEBUG"``, ``"INFO"``, ``"WARNING"``,
            ``"ERROR"``, ``"CRITICAL"`` (any case) or a ``logging`` constant. ``httpx`` and
            ``httpcore``, which log every request, are held at ``WARNING`` unless the level is
            ``DEBUG``.
        json: render JSON lines instead of console lines.
        stream: where to write (default: ``sys.stderr``, looked up at each write).

    Calling it again replaces the previous configuration (the handler it installed is
    removed; handlers installed by others are kept). Raises ``ValueError`` for an unknown
    level. Call it once at start-up, before logging; libraries should not call it.
    """
    global _installed
    threshold = _level(level)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    final: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if json:
        final.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        out = stream if stream is not None else sys.stderr
        renderer = structlog.dev.ConsoleRenderer(colors=_isatty(out))
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[*final, renderer],
    )
    handler: logging.Handler = (logging.StreamHandler(stream) if stream is not None
                                else _CurrentStderr())
    handler.setFormatter(formatter)

    root = logging.getLogger()
    if _installed is not None:
        root.removeHandler(_installed)
    root.addHandler(handler)
    root.setLevel(threshold)
    _installed = handler
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(threshold, logging.WARNING)
                                         if threshold > logging.DEBUG else logging.NOTSET)

    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.stdlib.LoggerFactory(),
        context_class=dict,
        cache_logger_on_first_use=False,
    )


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def quiet_by_default() -> None:
    """Show only warnings and errors (on stderr) while nobody has configured structlog.

    Like a library under stdlib logging, resonate_async stays quiet unless asked: call
    ``configure_logging("INFO")`` (or configure structlog yourself) to see every execution's
    state changes. Does nothing once structlog is configured.
    """
    if not structlog.is_configured():
        structlog.configure(
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        )
