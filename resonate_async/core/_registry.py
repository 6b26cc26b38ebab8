"""Registered functions, looked up by (name, version)."""

from __future__ import annotations

import inspect
import typing
import weakref
from collections.abc import Callable
from typing import Any

from resonate_async._codec import Codec
from resonate_async._errors import EncodingError, RegistrationError
from resonate_async._retry import RetryPolicy


def _takes_context(fn: Callable[..., Any]) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY,
                                            params[0].POSITIONAL_OR_KEYWORD):
        return False
    first = params[0]
    annotation = first.annotation
    if isinstance(annotation, str):
        return annotation.rsplit(".", 1)[-1] == "Context"
    if getattr(annotation, "__name__", None) == "Context":
        return True
    return annotation is inspect.Parameter.empty and first.name in ("ctx", "context")


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to no conversion
        return {}


class Function:
    """A callable the SDK can run: its name, version, and how to call it."""

    __slots__ = ("bare", "durable", "fn", "hints", "is_async", "name", "retry", "returns",
                 "signature", "version")

    def __init__(self, fn: Callable[..., Any], name: str, version: int,
                 retry: RetryPolicy | None = None) -> None:
        self.fn = fn
        self.name = name
        self.version = version
        self.retry = retry  # the registered default policy of a leaf function, if any
        self.durable = _takes_context(fn)
        self.is_async = inspect.iscoroutinefunction(fn)
        try:
            self.signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            self.signature = None
        # Whether a call without arguments fits: checked once here, not on every step.
        self.bare = self.signature is not None and _binds_bare(self.signature, self.durable)
        hints = _hints(fn)
        self.returns = hints.pop("return", Any)
        self.hints = hints

    def convert_args(self, codec: Codec, args: list[Any], kwargs: dict[str, Any],
                     ) -> tuple[list[Any], dict[str, Any]]:
        """Convert decoded JSON arguments to the parameters' annotated types."""
        if not self.hints or self.signature is None:
            return args, kwargs
        params = list(self.signature.parameters.values())
        if self.durable:
            params = params[1:]
        out_args = list(args)
        for i, value in enumerate(args):
            if i < len(params) and params[i].kind in (params[i].POSITIONAL_ONLY,
                                                      params[i].POSITIONAL_OR_KEYWORD):
                hint = self.hints.get(params[i].name)
                if hint is not None:
                    out_args[i] = codec.convert(value, hint, what=self._what(params[i].name))
        out_kwargs = dict(kwargs)
        for key, value in kwargs.items():
            hint = self.hints.get(key)
            if hint is not None:
                out_kwargs[key] = codec.convert(value, hint, what=self._what(key))
        return out_args, out_kwargs

    def check_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise ``TypeError`` now if ``args``/``kwargs`` do not fit the signature."""
        if self.signature is None or (self.bare and not args and not kwargs):
            return
        try:
            if self.durable:
                self.signature.bind(None, *args, **kwargs)
            else:
                self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}(): {exc}") from None

    def _what(self, param: str) -> str:
        return f"argument {param!r} of {self.name!r}"


def _binds_bare(signature: inspect.Signature, durable: bool) -> bool:
    try:
        if durable:
            signature.bind(None)
        else:
            signature.bind()
    except TypeError:
        return False
    return True


def name_of(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", None) or repr(fn)


class Registry:
    """The functions of one ``Resonate`` instance."""

    def __init__(self, on_module: Callable[[object], None] | None = None) -> None:
        # told the module of each function registered (the codec trusts its package's errors)
        self._on_module = on_module
        self._by_key: dict[tuple[str, int], Function] = {}
        self._by_fn: dict[Callable[..., Any], Function] = {}
        self._described: weakref.WeakKeyDictionary[Callable[..., Any], Function] = (
            weakref.WeakKeyDictionary()
        )

    def add(self, fn: Callable[..., Any], name: str | None = None, version: int = 1,
            retry: RetryPolicy | None = None) -> Function:
        if not callable(fn):
            raise RegistrationError(f"register expects a function, got {fn!r}")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise RegistrationError(f"version must be an int >= 1, got {version!r}")
        if name is not None and not isinstance(name, str):
            raise RegistrationError(f"name must be a str, got {type(name).__name__} {name!r}")
        name = name or name_of(fn)
        if not name or ":" in name:
            raise RegistrationError(f"invalid function name {name!r}: it must be non-empty "
                                    "and must not contain ':'")
        existing = self._by_key.get((name, version))
        if existing is not None and existing.fn is not fn:
            raise RegistrationError(
                f"a different function is already registered as {name!r} version {version}; "
                "give this one another name (register(name=...)) or a new version"
            )
        function = Function(fn, name, version, retry)
        if retry is not None:
            if not isinstance(retry, RetryPolicy):
                raise RegistrationError(
                    f"retry of {name!r} must be a retry policy (Exponential(), Linear(), "
                    f"Constant(), Never()), got {type(retry).__name__} {retry!r:.60}")
            if function.durable:
                raise RegistrationError(
                    f"retry=... applies to leaf functions only, and {name!r} takes a Context: "
                    "a durable function is not retried but replayed. Put the policy on the "
                    "leaf functions it calls (register them with retry=..., or "
                    "ctx.run(leaf).options(retry=...))")
        self._by_key[(name, version)] = function
        self._by_fn[fn] = function
        if self._on_module is not None:
            self._on_module(getattr(fn, "__module__", None))
        return function

    def get(self, name: str, version: int | None = None) -> Function:
        if version is None:
            versions = [v for (n, v) in self._by_key if n == name]
            if versions:
                return self._by_key[(name, max(versions))]
        else:
            found = self._by_key.get((name, version))
            if found is not None:
                return found
        known = sorted({n for n, _ in self._by_key})
        which = f"{name!r}" if version is None else f"{name!r} version {version}"
        raise RegistrationError(
            f"no function registered as {which} (registered: {', '.join(known) or 'none'}); "
            "register it with @resonate.register"
        )

    def lookup_name(self, name: str, version: int | None = None) -> Function | None:
        try:
            return self.get(name, version)
        except RegistrationError:
            return None

    def lookup(self, fn: Callable[..., Any]) -> Function | None:
        return self._by_fn.get(fn)

    def describe(self, fn: Callable[..., Any]) -> Function:
        """The registered entry for ``fn``, or an unregistered description of it."""
        found = self._by_fn.get(fn)
        if found is not None:
            return found
        if not callable(fn):
            raise TypeError(f"expected a function, got {type(fn).__name__} {fn!r:.60}")
        try:
            found = self._described.get(fn)
        except TypeError:  # not weakly referenceable
            return Function(fn, name_of(fn), 1)
        if found is None:
            found = self._described[fn] = Function(fn, name_of(fn), 1)
        return found


__all__ = ["EncodingError", "Function", "Registry", "name_of"]
