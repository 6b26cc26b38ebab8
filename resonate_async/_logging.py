"""``configure_logging``: one call that makes a script's logs readable (or machine-readable)."""

from __future__ import annotations

import logging
import sys
from typing import Any, Final, Protocol, TextIO

import structlog
from structlog.typing import Processor

LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Libraries whose records below WARNING are chatter (the event loop's debug lines, one line
# per HTTP request): held back at our handler unless their logger was given a level.
_CHATTY: Final = frozenset(("asyncio", "trio", "anyio", "httpx", "httpcore", "h11", "h2",
                            "hpack", "urllib3"))


class _HoldOthers(logging.Filter):
    """Drops other libraries' chatter at our handler, without touching their loggers."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or record.name.split(".", 1)[0] not in _CHATTY:
            return True
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None and logger is not logging.root:
            if logger.level != logging.NOTSET:
                return True  # someone asked for this library's records
            logger = logger.parent
        return False


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
            ``"ERROR"``, ``"CRITICAL"`` (any case) or a ``logging`` constant. It applies to
            resonate_async, to your code and to stdlib ``logging``; other libraries' loggers
            are left as they are, but the chatter of the event loops and HTTP clients
            (``asyncio``, ``trio``, ``anyio``, ``httpx``, ``httpcore``, ``h11``, ``h2``,
            ``hpack``, ``urllib3``) below ``WARNING`` is held back at the handler, unless you
            gave that library's logger a level yourself
            (``logging.getLogger("httpx").setLevel("DEBUG")``).
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

    handler.addFilter(_HoldOthers())

    root = logging.getLogger()
    if _installed is not None:
        root.removeHandler(_installed)
    root.addHandler(handler)
    root.setLevel(threshold)
    _installed = handler

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


class _Frontier(Protocol):
    live: bool


class ReplayAwareLogger:
    """``ctx.log``: a structlog-style logger that is silent while its durable function replays.

    Methods take an event name and key-value pairs, as structlog's do (``ctx.log.info(
    "order_charged", amount=12)``); ``bind(**values)`` gives a logger with more values bound.
    ``replaying`` says whether an event would be dropped now.
    """

    __slots__ = ("_frontier", "_log")

    def __init__(self, frontier: _Frontier, logger: Any) -> None:
        self._frontier = frontier
        self._log = logger

    @property
    def replaying(self) -> bool:
        """Whether the function is re-running calls an earlier run already made."""
        return not self._frontier.live

    def bind(self, **values: Any) -> ReplayAwareLogger:
        """This logger with ``values`` bound to every event."""
        return ReplayAwareLogger(self._frontier, self._log.bind(**values))

    def debug(self, event: str, *args: Any, **values: Any) -> None:
        """Log ``event`` at DEBUG with ``values``, unless the function is replaying."""
        if self._frontier.live:
            self._log.debug(event, *args, **values)

    def info(self, event: str, *args: Any, **values: Any) -> None:
        """Log ``event`` at INFO with ``values``, unless the function is replaying."""
        if self._frontier.live:
            self._log.info(event, *args, **values)

    def warning(self, event: str, *args: Any, **values: Any) -> None:
        """Log ``event`` at WARNING with ``values``, unless the function is replaying."""
        if self._frontier.live:
            self._log.warning(event, *args, **values)

    def error(self, event: str, *args: Any, **values: Any) -> None:
        """Log ``event`` at ERROR with ``values``, unless the function is replaying."""
        if self._frontier.live:
            self._log.error(event, *args, **values)

    def exception(self, event: str, *args: Any, **values: Any) -> None:
        """``error`` with the exception being handled attached."""
        if self._frontier.live:
            self._log.exception(event, *args, **values)

    def critical(self, event: str, *args: Any, **values: Any) -> None:
        """Log ``event`` at CRITICAL with ``values``, unless the function is replaying."""
        if self._frontier.live:
            self._log.critical(event, *args, **values)

    def __repr__(self) -> str:
        return f"<ReplayAwareLogger replaying={self.replaying}>"
