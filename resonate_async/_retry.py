"""Retry policies for local leaf steps (``ctx.run`` of a function that takes no Context)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetryPolicy:
    """Base of the retry policies: ``delay(attempt)`` is the wait before retry ``attempt``.

    ``attempt`` counts from 1 (the first retry). ``None`` means "do not retry any more".
    Exceptions whose type is in ``non_retryable`` are never retried; no retry is ever
    scheduled past the step's deadline.
    """

    max_retries: int = 0
    non_retryable: tuple[type[BaseException], ...] = field(default=())

    def delay(self, attempt: int) -> float | None:
        """The seconds to wait before retry ``attempt`` (1: the first retry), or ``None``
        to give up."""
        raise NotImplementedError

    def should_retry(self, exc: BaseException) -> bool:
        """Whether a step that raised ``exc`` may be retried: not if its type is in
        ``non_retryable``."""
        return not isinstance(exc, self.non_retryable)


@dataclass(frozen=True)
class Exponential(RetryPolicy):
    """``base * factor**(attempt-1)`` seconds, capped at ``max_delay`` (the default policy)."""

    max_retries: int = 30
    base: float = 1.0
    factor: float = 2.0
    max_delay: float = 60.0

    def delay(self, attempt: int) -> float | None:
        if attempt > self.max_retries:
            return None
        return float(min(self.base * self.factor ** (attempt - 1), self.max_delay))


@dataclass(frozen=True)
class Linear(RetryPolicy):
    """``delay * attempt`` seconds."""

    max_retries: int = 5
    step: float = 1.0

    def delay(self, attempt: int) -> float | None:
        return None if attempt > self.max_retries else self.step * attempt


@dataclass(frozen=True)
class Constant(RetryPolicy):
    """The same ``delay`` seconds before every retry."""

    max_retries: int = 5
    wait: float = 1.0

    def delay(self, attempt: int) -> float | None:
        return None if attempt > self.max_retries else self.wait


@dataclass(frozen=True)
class Never(RetryPolicy):
    """Never retry: the first failure settles the step."""

    def delay(self, attempt: int) -> float | None:
        return None
