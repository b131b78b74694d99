"""Masking secrets: the one place that knows what a secret looks like in a URL, a libpq
keyword string or free text (an exception message, a server's answer).

What is masked (replaced by ``***``):

- the password of a URL's user info (``postgresql://user:***@host``); for http(s) and
  ws(s) URLs the whole user info (a token often stands in the user name);
- the value of a query parameter (or a libpq keyword, or a ``"name": value`` pair in JSON
  or a repr) whose name is a secret's: ``password``, ``sslpassword``, ``pwd``, ``secret``,
  ``token``, ``api_key``, ``apikey``, ``access_token``, ``key``, ``sig``, any name ending in
  ``password``, ``secret``, ``token``, ``api_key`` or ``signature`` (case-insensitive), and
  the names a spec adds (``masked_parameters``, see :func:`mask_parameters`);
- the value of an ``Authorization``, ``Proxy-Authorization``, ``Cookie`` or ``X-Api-Key``
  header written as ``name: value``;
- any secret value this process has read from the environment (:func:`remember_secrets_in`,
  :func:`remember_secret`), wherever it appears, e.g. echoed by a server.

:func:`masked_errors` applies this to every exception leaving our code for Dagster (message,
notes, cause and context), since Dagster stores and prints all of them.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import unquote, unquote_plus

from etl_assets.errors import EtlAssetsError
from etl_assets.home import HOME_ENV, expand_home, expand_vars
from etl_assets.logs import Log

MASK = "***"
DEFAULT_PARAMETERS = frozenset({"password", "sslpassword", "pwd", "secret", "token", "api_key",
                                "apikey", "access_token", "key", "sig"})
_SECRET_SUFFIX = re.compile(r"[\w.-]*(?:password|passwd|secret|token|api[_-]?key|signature)",
                            re.IGNORECASE)
_HEADERS = r"(?:proxy-)?authorization|cookie|x-api-key"
_USER_INFO_SCHEMES = frozenset({"http", "https", "ws", "wss"})  # the user name may be a token
_MIN_KNOWN_LENGTH = 6  # shorter values would mask ordinary words

_extra_parameters: set[str] = set()
_known_values: set[str] = set()

# A URL in text: the punctuation that follows one in a sentence (``GET <url>: HTTP 404``) is
# not part of it (the masked value of a last secret parameter would swallow it).
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+(?<![:,;.])")
_QUOTED = r"'(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\""


def mask_parameters(names: Iterable[str]) -> None:
    """Mask the values of parameters named ``names`` too, from now on (case-insensitive)."""
    _extra_parameters.update(name.lower() for name in names)
    _keyword_patterns.cache_clear()


def is_secret_name(name: str, extra: Iterable[str] = ()) -> bool:
    """Whether a parameter, keyword or field named ``name`` holds a secret."""
    lower = name.lower()
    return (lower in DEFAULT_PARAMETERS or lower in _extra_parameters
            or lower in {e.lower() for e in extra} or bool(_SECRET_SUFFIX.fullmatch(lower)))


def remember_secret(value: str | None) -> None:
    """Mask ``value`` wherever it appears from now on (values shorter than 6 characters are
    left to the patterns: they would mask ordinary words)."""
    if value and len(value) >= _MIN_KNOWN_LENGTH:
        _known_values.add(value)


def remember_credential(value: str) -> None:
    """Remember a header's credential (``Bearer <token>``, ``Basic <base64>``, a bare key):
    the whole value and its last word, which a server may echo alone."""
    remember_secret(value)
    words = value.split()
    if words:
        remember_secret(words[-1])


def remember_secrets_in(text: str) -> None:
    """Remember the secret values inside a URL or libpq keyword string (its password, its
    secret parameters), as written and decoded."""
    for value in _secret_values(text):
        remember_secret(value)
        remember_secret(unquote(value))
        remember_secret(unquote_plus(value))


# -- finding secrets --------------------------------------------------------------------------


def _split_url(url: str) -> tuple[str, str | None, str] | None:
    """``scheme://rest`` as (scheme, user info or None, the rest after the user info).

    A password may hold unescaped ``/``, ``?`` or ``#`` (SQLAlchemy accepts them), so when the
    authority as RFC 3986 reads it has no ``@``, an ``@`` later followed by a host still ends
    the user info.
    """
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", url, re.DOTALL)
    if not match:
        return None
    scheme, rest = match.groups()
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        at = authority.rindex("@")
        return scheme, rest[:at], rest[at + 1:]
    loose = re.match(r"([^:@/?#\s]*:.*)@((?:\[[^\]]*\]|[\w.%-]*)(?::\d*)?(?:[/?#].*)?)$", rest,
                     re.DOTALL)
    if loose:
        return scheme, loose.group(1), loose.group(2)
    return scheme, None, rest


def _parameters(query: str) -> Iterator[tuple[str, str | None]]:
    for pair in re.split(r"[&;]", query):
        name, sep, value = pair.partition("=")
        yield name, (value if sep else None)


def _mask_query(query: str) -> str:
    pieces = re.split(r"([&;])", query)
    for i in range(0, len(pieces), 2):
        name, sep, value = pieces[i].partition("=")
        if sep and value and is_secret_name(unquote_plus(name)):
            pieces[i] = f"{name}={MASK}"
    return "".join(pieces)


def _keyword_pairs(text: str) -> Iterator[tuple[str, str]]:
    """(keyword, raw value) of a libpq keyword string, quotes removed."""
    for match in re.finditer(rf"([\w-]+)\s*=\s*({_QUOTED}|\S+)", text):
        value = match.group(2)
        if value[:1] in "'\"" and value[-1:] == value[:1] and len(value) > 1:
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        yield match.group(1), value


def _secret_values(text: str) -> list[str]:
    parts = _split_url(text)
    if parts is None:  # a libpq keyword string
        return [value for name, value in _keyword_pairs(text) if is_secret_name(name)]
    scheme, user_info, rest = parts
    values = []
    if user_info:
        user, _sep, password = user_info.partition(":")
        values.append(password)
        if scheme.lower() in _USER_INFO_SCHEMES:
            values.append(user)
    for section in re.split(r"[?#]", rest)[1:]:
        values += [v for n, v in _parameters(section) if v and is_secret_name(unquote_plus(n))]
    return values


def has_user_info(url: str) -> bool:
    """Whether ``url`` carries user info (``scheme://user[:password]@host``), by RFC 3986."""
    authority = re.split(r"[/?#]", url.partition("://")[2], maxsplit=1)[0]
    return "://" in url and "@" in authority


def secret_parts(text: str, extra: Iterable[str] = ()) -> list[str]:
    """What in a URL or libpq keyword string holds a secret, described for an error message
    (empty: none). ``extra``: more parameter names that hold secrets."""
    extra = list(extra)
    parts = _split_url(text)
    if parts is None:
        return [f"keyword {name}" for name, value in _keyword_pairs(text)
                if value and is_secret_name(name, extra)]
    _scheme, user_info, rest = parts
    found = []
    if user_info and ":" in user_info and user_info.partition(":")[2]:
        found.append("a password in the user info (user:password@)")
    for section in re.split(r"[?#]", rest)[1:]:
        found += [f"parameter {unquote_plus(name)}" for name, value in _parameters(section)
                  if value and is_secret_name(unquote_plus(name), extra)]
    return found


# -- masking ----------------------------------------------------------------------------------


def mask_url(url: str) -> str:
    """``url`` (or a libpq keyword string) with its secrets masked; the rest kept as is."""
    parts = _split_url(url)
    if parts is None:
        return _mask_keywords(url)
    scheme, user_info, rest = parts
    shown = f"{scheme}://"
    if user_info is not None:
        user, sep, _password = user_info.partition(":")
        if scheme.lower() in _USER_INFO_SCHEMES:
            shown += f"{MASK}@"
        else:
            shown += f"{user}:{MASK}@" if sep else f"{user}@"
    sections = re.split(r"([?#])", rest)
    shown += sections[0] + "".join(
        mark + _mask_query(section)
        for mark, section in zip(sections[1::2], sections[2::2], strict=True))
    return _mask_known(shown)


@functools.cache
def _keyword_patterns() -> tuple[re.Pattern[str], ...]:
    names = "|".join([r"[\w.-]*?(?:password|passwd|secret|token|api[_-]?key|signature)",
                      *sorted(map(re.escape, DEFAULT_PARAMETERS | _extra_parameters))])
    return (
        # name=value: libpq keywords, query parameters in text, key=value logs
        re.compile(rf"(?<![\w.-])((?:{names})\s*=\s*)({_QUOTED}|\S+)", re.IGNORECASE),
        # "name": value and 'name': value (JSON, a dict's repr)
        re.compile(rf"""((["'])(?:{names})\2\s*:\s*)({_QUOTED}|[^\s,}}]+)""", re.IGNORECASE),
        # Authorization: Bearer ...
        re.compile(rf"\b((?:{_HEADERS})[\"']?\s*[:=]\s*[\"']?)([^\"'\r\n,}}]+)",
                   re.IGNORECASE),
    )


def _mask_keywords(text: str) -> str:
    for pattern in _keyword_patterns():
        text = pattern.sub(lambda m: m.group(1) + MASK, text)
    return _mask_known(text)


def _mask_known(text: str) -> str:
    for value in sorted(_known_values, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    return text


def mask_text(text: str) -> str:
    """Free text (an exception message, a server's answer, a log line) with every secret
    masked: URLs in it as :func:`mask_url` does, keyword strings, ``"name": value`` pairs,
    authorization headers and the secret values this process knows."""
    pieces = _URL.split(text)
    urls = _URL.findall(text)
    shown = _mask_keywords(pieces[0])
    for url, after in zip(urls, pieces[1:], strict=True):
        shown += mask_url(url) + _mask_keywords(after)
    return shown


class MaskedLog:
    """A logger (Dagster's ``context.log`` or any ``logging.Logger``) whose messages are
    masked with :func:`mask_text`; give it to code that logs other libraries' errors."""

    def __init__(self, log: Log) -> None:
        self._log = log

    def debug(self, msg: object) -> None:
        self._log.debug(mask_text(str(msg)))

    def info(self, msg: object) -> None:
        self._log.info(mask_text(str(msg)))

    def warning(self, msg: object) -> None:
        self._log.warning(mask_text(str(msg)))

    def error(self, msg: object) -> None:
        self._log.error(mask_text(str(msg)))

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 -- wrapped logger attributes
        return getattr(self._log, name)


def masked_log(log: Log) -> MaskedLog:
    """``log`` with its messages masked (a MaskedLog stays as it is)."""
    return log if isinstance(log, MaskedLog) else MaskedLog(log)


# -- exceptions -------------------------------------------------------------------------------


class MaskedError(EtlAssetsError):
    """Stands in for an exception whose text held a secret we could not mask in place."""


def _text_of(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__: nothing to leak through it either
        return ""


def masked_exception(exc: BaseException, _seen: set[int] | None = None) -> BaseException:
    """``exc`` with its message, notes, cause and context masked.

    The exception keeps its type (callers tell transient errors by it) when its text can be
    masked in place (``args``); one that formats its text from other attributes is replaced
    by a :class:`MaskedError` holding its type name and masked text.
    """
    seen = _seen if _seen is not None else set()
    if id(exc) in seen:
        return exc
    seen.add(id(exc))
    if exc.__cause__ is not None:
        exc.__cause__ = masked_exception(exc.__cause__, seen)
    if exc.__context__ is not None:
        exc.__context__ = masked_exception(exc.__context__, seen)
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list):
        notes[:] = [mask_text(str(note)) for note in notes]  # exc.__notes__, in place
    text = _text_of(exc)
    shown = mask_text(text)
    if shown == text:
        return exc
    with contextlib.suppress(Exception):
        exc.args = (shown,)
    if mask_text(_text_of(exc)) == _text_of(exc):
        return exc
    replacement = MaskedError(f"{type(exc).__name__}: {shown}")
    replacement.__cause__ = exc.__cause__
    replacement.__suppress_context__ = True
    return replacement.with_traceback(exc.__traceback__)


@contextlib.contextmanager
def masked_errors() -> Iterator[None]:
    """Let no secret out in an exception: wrap code whose errors go to Dagster (an asset's
    body, an IO manager's method, a sensor); usable as a decorator."""
    try:
        yield
    except Exception as exc:
        masked = masked_exception(exc)
        if masked is exc:
            raise
        raise masked from masked.__cause__




# -- locations shown in metadata and descriptions ---------------------------------------------

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def described_location(template: str) -> str:
    """A path or URL as a spec writes it (``${VAR}`` in it), for an asset's description:
    ``${ETL_ASSETS_HOME}`` expanded, every other ``${VAR}`` left as written, never resolved (a
    description is made where the definitions load, and a variable may hold a secret). A spec
    refuses a secret that is not a whole ``${VAR}``; one that is anyway is masked."""
    shown = expand_home(template)
    if secret_parts(_VARIABLE.sub("", shown)):
        return mask_url(shown)
    return _mask_known(shown)


def shown_location(template: str) -> str:
    """A path or URL as a spec writes it, resolved for a run's metadata but holding no secret:
    the parts where secrets go (a URL's password, an http URL's user info, secret
    parameters) masked as written; a ``${VAR}`` named like a secret (``${API_TOKEN}``, see
    :func:`is_secret_name`) left as written; every other one expanded (an unset one left
    as written); then masked again, since a variable's value may bring a secret itself."""

    def expand(match: re.Match[str]) -> str:
        name = match.group(1)
        if is_secret_name(name) or (name != HOME_ENV and name not in os.environ):
            return match.group(0)
        return expand_vars(match.group(0))

    return mask_url(_VARIABLE.sub(expand, mask_url(template)))
