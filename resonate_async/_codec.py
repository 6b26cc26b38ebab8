"""The one place that encodes values: arguments, results and errors <-> ``{headers, data}``.

Values are msgspec JSON, base64-encoded into ``data`` (the convention every Resonate SDK
follows). Decoding converts to the annotated type when one is known: msgspec Structs,
dataclasses, attrs classes, pydantic models, enums, datetimes, tuples and sets round-trip.
Errors travel as ``{"__type": "error", "type", "module", "message", "args"}`` and are rebuilt
only for builtin exception types, types registered with ``register_error`` and the
application's own exception classes (see ``Codec.app_class``): never pickle, never import.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

import msgspec

from resonate_async import _errors
from resonate_async._errors import (
    ApplicationError,
    CanceledError,
    DecryptionError,
    EncodingError,
    ResonateError,
    TimedOutError,
)
from resonate_async.protocol import Promise, Value

_NO_VALUE: Final = Value()


class _Unencodable(TypeError):
    def __init__(self, obj: Any) -> None:
        super().__init__(type(obj).__qualname__)
        self.type = type(obj)


def _enc_hook(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)  # pydantic v2 models
    if callable(dump):
        return dump(mode="json")
    raise _Unencodable(obj)


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
_decode_json = msgspec.json.decode


class Invocation(msgspec.Struct, frozen=True):
    """A function invocation as it travels in a root or rpc promise's ``param``."""

    func: str
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    version: int = 1


class _InvocationOut(msgspec.Struct, frozen=True):
    args: Sequence[Any]
    kwargs: Mapping[str, Any]
    func: str
    version: int


_invocation_decoder = msgspec.json.Decoder(Invocation)


class Encryptor(Protocol):
    """Encrypts values before they leave the process (params, results, errors).

    Applied between JSON and base64, so the engine or server stores only ciphertext. Every
    process of an application needs an equivalent one. ``decrypt`` raises on data it did not
    encrypt (wrong key, tampering).
    """

    def encrypt(self, data: bytes) -> bytes:
        """The ciphertext of ``data``."""
        ...

    def decrypt(self, data: bytes) -> bytes:
        """The plaintext of ``data``; raises if this key did not encrypt it (wrong key,
        tampering)."""
        ...


class Codec:
    """Encodes and decodes values and errors for one ``Resonate`` instance."""

    def __init__(self, encryptor: Encryptor | None = None) -> None:
        self.encryptor = encryptor
        self._errors: dict[tuple[str, str], type[BaseException]] = {}
        # Top-level packages (or modules) holding registered functions: the application's.
        self._app_packages: set[str] = set()
        for cls in [*_errors.ResonateError.__subclasses__(), ResonateError]:
            self.register_error(cls)  # the SDK's own errors keep their type across boundaries

    def register_error(self, cls: type[BaseException]) -> None:
        """Rebuild errors of type ``cls`` (instead of ``ApplicationError``) when decoded."""
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise TypeError(f"register_error expects an exception class, got {cls!r}")
        self._errors[(cls.__module__, cls.__qualname__)] = cls

    def trust_module(self, module: object) -> None:
        """Count ``module``'s top-level package as the application's (it holds a registered
        function): its exception classes are rebuilt as themselves (see ``app_class``)."""
        if isinstance(module, str) and module:
            top = module.split(".", 1)[0]
            if top not in ("builtins", "resonate_async"):
                self._app_packages.add(top)

    def app_class(self, module: str, qualname: str) -> type[Exception] | None:
        """The application's exception class ``module.qualname``, if it can be found safely.

        Found only in a module already imported (nothing is ever imported because stored data
        names it) whose top-level package holds a registered function, by reading module and
        class namespaces (no ``__getattr__`` runs), and only if it is an ``Exception`` that
        names itself so: a class defined inside a function (``<locals>``) is never found.
        """
        if not module or not qualname or "<" in qualname:
            return None
        if module.split(".", 1)[0] not in self._app_packages:
            return None
        found: Any = sys.modules.get(module)
        for part in qualname.split("."):
            namespace = getattr(found, "__dict__", None)
            if not isinstance(namespace, Mapping):
                return None
            found = namespace.get(part)
        if (isinstance(found, type) and issubclass(found, Exception)
                and not issubclass(found, ApplicationError)
                and found.__module__ == module and found.__qualname__ == qualname):
            return found
        return None

    # the envelope of every value: JSON, optionally encrypted, then base64 ---------------------
    def _seal(self, raw: bytes) -> str:
        if self.encryptor is not None:
            raw = self.encryptor.encrypt(raw)
        return _b64(raw)

    def _open(self, data: str, what: str) -> bytes:
        raw = base64.b64decode(data)
        if self.encryptor is None:
            return raw
        try:
            return self.encryptor.decrypt(raw)
        except Exception as exc:  # each cipher library raises its own types
            raise DecryptionError(
                f"{what}: cannot decrypt the stored value ({type(exc).__name__}: {exc}); was it "
                "written with another key, or without encryption? Every process of an "
                "application needs the same Encryptor"
            ) from None

    # values -----------------------------------------------------------------------------------
    def encode(self, value: Any, *, what: str) -> Value:
        """Encode a result or argument; ``what`` names the call in the error message."""
        if value is None:
            return _NO_VALUE
        return Value(data=self._seal(self.dumps(value, what=what)))

    def dumps(self, value: Any, *, what: str) -> bytes:
        try:
            return _encoder.encode(value)
        except _Unencodable as exc:
            raise EncodingError(
                f"{what}: cannot encode a value of type {exc.type.__qualname__}; "
                "durable values must be JSON-like: builtins, msgspec Structs, dataclasses, "
                "attrs classes, pydantic models, enums or datetimes"
            ) from None
        except RecursionError:
            raise EncodingError(
                f"{what}: the value is nested too deeply to encode (lists or dicts inside "
                "each other beyond Python's recursion limit, about 1,000 levels); flatten it, "
                "or store it elsewhere and pass a reference"
            ) from None
        except UnicodeEncodeError as exc:
            raise EncodingError(
                f"{what}: a string in it is not valid Unicode text (it holds the lone "
                f"surrogate {exc.object[exc.start:exc.end]!r}, from bytes decoded with "
                "errors='surrogateescape'?), and values travel as UTF-8 JSON; decode the bytes "
                "properly, or pass them base64-encoded"
            ) from None
        except (NotImplementedError, TypeError, OverflowError, msgspec.EncodeError) as exc:
            raise EncodingError(
                f"{what}: cannot encode a value of type {type(value).__qualname__} ({exc}); "
                "durable values must be JSON-like: builtins, msgspec Structs, dataclasses, "
                "attrs classes, pydantic models, enums or datetimes"
            ) from None

    def decode(self, value: Value, type_: Any = Any, *, what: str = "value") -> Any:
        """Decode a ``Value`` (``None`` when it has no data), converting to ``type_``."""
        if not value.data:
            return None
        try:
            obj = _decode_json(self._open(value.data, what))
        except (ValueError, msgspec.DecodeError) as exc:
            raise EncodingError(f"{what}: stored value is not base64 JSON ({exc})") from None
        except RecursionError:
            raise EncodingError(f"{what}: the stored value is nested too deeply to decode "
                                "(beyond Python's recursion limit)") from None
        return self.convert(obj, type_, what=what)

    def convert(self, obj: Any, type_: Any, *, what: str = "value") -> Any:
        if type_ is Any or type_ is None or obj is None:
            return obj
        validate = getattr(type_, "model_validate", None)
        try:
            if callable(validate):
                return validate(obj)
            return msgspec.convert(obj, type_, strict=False)
        except Exception as exc:  # msgspec.ValidationError, pydantic's ValidationError, ...
            raise EncodingError(
                f"{what}: cannot decode {obj!r:.80} as {getattr(type_, '__name__', type_)}: {exc}"
            ) from None

    # invocations ------------------------------------------------------------------------------
    def encode_invocation(self, func: str, args: Sequence[Any], kwargs: Mapping[str, Any],
                          version: int) -> Value:
        what = f"arguments of {func!r}"
        return Value(data=self._seal(self.dumps(_InvocationOut(args, kwargs, func, version),
                                                what=what)))

    def decode_invocation(self, value: Value) -> Invocation:
        if not value.data:
            raise EncodingError("the promise carries no function invocation in its param")
        try:
            return _invocation_decoder.decode(self._open(value.data, "the promise's param"))
        except (ValueError, msgspec.DecodeError) as exc:
            raise EncodingError(f"the promise's param is not a function invocation ({exc})") \
                from None

    # errors -----------------------------------------------------------------------------------
    def encode_error(self, exc: BaseException) -> Value:
        """Encode an error as ``{type, module, message, args}``; never raises (a message or
        arguments that cannot be encoded are replaced by what can)."""
        cls = type(exc)
        payload: dict[str, Any] = {
            "__type": "error",
            "type": cls.__qualname__,
            "module": cls.__module__,
            "message": _message(exc),
        }
        if isinstance(exc, ApplicationError):  # keep the original type through re-raises
            payload["type"], payload["module"] = exc.type_name, exc.module
            payload["message"] = exc.message
        else:
            with contextlib.suppress(Exception):  # args are optional: keep them if they fit
                args = msgspec.to_builtins(exc.args)
                _encoder.encode(args)
                payload["args"] = args
        try:
            raw = _encoder.encode(payload)
        except (UnicodeEncodeError, msgspec.EncodeError, TypeError):
            payload.pop("args", None)
            payload = {k: (v.encode("utf-8", "backslashreplace").decode("utf-8")
                           if isinstance(v, str) else v) for k, v in payload.items()}
            raw = _encoder.encode(payload)
        return Value(data=self._seal(raw))

    def decode_error(self, value: Value) -> BaseException:
        try:
            obj = _decode_json(self._open(value.data or "", "the rejection"))
        except (ValueError, msgspec.DecodeError):
            obj = None
        except EncodingError as exc:  # a key mismatch: say so rather than lose the error
            return exc
        if not isinstance(obj, dict):
            return ApplicationError(f"rejected with a value that is not an error: {obj!r:.200}")
        message = str(obj.get("message", ""))
        type_name = obj.get("type") or obj.get("name") or ""
        module = obj.get("module") or ""
        args = obj.get("args")
        cls = self._errors.get((module, type_name))
        if cls is None and module == "builtins":
            candidate = getattr(builtins, type_name, None)
            if isinstance(candidate, type) and issubclass(candidate, Exception):
                cls = candidate
        if cls is None and isinstance(module, str) and isinstance(type_name, str):
            cls = self.app_class(module, type_name)
        # Only Exceptions are rebuilt: a SystemExit or KeyboardInterrupt from user code must
        # not unwind the caller's process; it arrives as ApplicationError naming its type.
        if cls is not None and issubclass(cls, Exception) and not issubclass(
                cls, ApplicationError):
            for attempt in (tuple(args) if isinstance(args, list) else None, (message,)):
                if attempt is None:
                    continue
                try:
                    return cls(*attempt)
                except Exception:  # the type's constructor wants other arguments
                    continue
        return ApplicationError(message, type_name=str(type_name), module=str(module),
                                hint=_unrebuilt_hint(str(module), str(type_name), cls))

    def outcome(self, promise: Promise, type_: Any = Any, *, what: str = "value") -> Any:
        """The value of a settled promise, or raise the error it was rejected with."""
        state = promise.state
        if state == "resolved":
            return self.decode(promise.value, type_, what=what)
        if state == "rejected":
            raise self.decode_error(promise.value)
        if state == "rejected_timedout":
            raise TimedOutError(f"promise {promise.id!r} timed out before it was settled")
        if state == "rejected_canceled":
            raise CanceledError(f"promise {promise.id!r} was canceled")
        raise AssertionError(f"promise {promise.id!r} is still pending")  # pragma: no cover


def _unrebuilt_hint(module: str, type_name: str, cls: type[BaseException] | None) -> str:
    """Why an error of type ``module.type_name`` arrives as ``ApplicationError``."""
    short = type_name.rsplit(".", 1)[-1] or "MyError"
    if cls is None and module == "builtins":
        cls = getattr(builtins, type_name, None)
    if isinstance(cls, type) and not issubclass(cls, Exception):
        return ("a BaseException from user code: it fails only the step or function that "
                "raised it, and is never re-raised as itself")
    if not type_name or module == "builtins":
        return ""
    if cls is not None:
        return (f"{short} was found, but {short}(*args) refused the stored arguments and "
                f"{short}(message) too: give it a constructor that accepts the arguments it "
                "passes to Exception.__init__")
    if "<locals>" in type_name:
        return (f"{short} is defined inside a function, where no other run can find it: "
                "define it at module level in your application, or register it with "
                f"resonate.register_error({short}), to catch it as itself")
    return (f"{module}.{type_name} is not registered, and not a class of a module of this "
            f"process's registered functions: register it with resonate.register_error({short})"
            " to catch it as itself")


def _message(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # a broken __str__ must not lose the error itself
        return f"<{type(exc).__name__} whose message cannot be shown>"
    if not text and not isinstance(exc, Exception):
        return "raised by user code (it fails only the step or function that raised it)"
    return text


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
