"""What ``log_metadata`` may hold: the standard keys and their value shapes, and the keys an organisation
adds.

``log_metadata`` is closed. A key is accepted only in the exact spelling of a
standard key (:data:`STANDARD_KEYS`: what the reference client sends, the usual
versions, locale) or of a key an administrator allowed for the organisation;
each key has a value :class:`Shape` (an enum, a bounded pattern, a number, true
or false, or a short token), so no value can carry a sentence.

Names are normalised (NFKC, case folding, invisible characters and separators
removed, look-alike letters mapped through Unicode's confusables table) only to
*classify* a refusal (a key such as ``PrOmPt``, ``usermessage`` or a Cyrillic
``рrompt`` is ``content_not_allowed`` rather than an unknown key) and to vet the
keys an administrator adds; a look-alike of an accepted key is never accepted.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.audit import record_change
from db.base import utcnow
from db.configs import METADATA_KEYS_MAX_BYTES, agent_json_bytes
from db.identifiers import FORBIDDEN, MAX_METADATA_KEY_CHARS
from db.models import FirewallConfig, OrganizationMetadataKey
from db.rights import Actor, require_admin

if TYPE_CHECKING:
    from db.event_schema import EventError

#: At most this many keys in one event's ``log_metadata``.
MAX_METADATA_KEYS: Final = 32
#: At most this many extra keys per organisation.
MAX_ORGANIZATION_KEYS: Final = 64
#: Values of the enum and token shapes: at most this many of ``[A-Za-z0-9._-]``.
MAX_TOKEN_CHARS: Final = 64
MAX_ENUM_VALUES: Final = 32
#: Numbers must fit a signed 64-bit integer; past it JSON parsers round silently.
MIN_NUMBER: Final = -(2**63)
MAX_NUMBER_EXCLUSIVE: Final = 2**63

#: The shapes an administrator may give a key (the standard keys also use ``pattern``).
ADMIN_SHAPES: Final = ("number", "boolean", "enum", "token")
SHAPE_KINDS: Final = (*ADMIN_SHAPES, "pattern")
#: How an added key must be spelt: lower-case snake case, so it has one canonical spelling.
KEY_PATTERN: Final = re.compile(rf"[a-z][a-z0-9_]{{0,{MAX_METADATA_KEY_CHARS - 1}}}", re.ASCII)
TOKEN_PATTERN: Final = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_TOKEN_CHARS}}}", re.ASCII)


class MetadataKeyError(ValueError):
    """An administrator's key or shape is refused; the message says why."""


@dataclass(frozen=True)
class Shape:
    """What the value of one metadata key may be; ``null`` is always accepted (it says nothing)."""

    kind: str
    values: tuple[str, ...] = ()
    pattern: str = ""
    max_chars: int = MAX_TOKEN_CHARS
    example: str = field(default="", compare=False)
    _choices: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    _match: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in SHAPE_KINDS:
            raise MetadataKeyError(f"shape must be one of {', '.join(ADMIN_SHAPES)}; got {self.kind!r}")
        object.__setattr__(self, "_choices", frozenset(self.values))
        if self.kind == "pattern":
            object.__setattr__(self, "_match", re.compile(self.pattern, re.ASCII).fullmatch)
        elif self.kind == "token":
            object.__setattr__(self, "_match", TOKEN_PATTERN.fullmatch)

    def accepts(self, value: object) -> bool:
        """True if ``value`` (not None) has this shape."""
        kind = self.kind
        if type(value) is str:
            if kind == "enum":
                return value in self._choices
            return (
                (kind == "pattern" or kind == "token")
                and len(value) <= self.max_chars
                and (self._match(value) is not None)
            )
        if kind == "number":
            if type(value) is int:
                return MIN_NUMBER <= value < MAX_NUMBER_EXCLUSIVE
            # Strictly inside: -2^63 as a float may be a rounded -2^63-1. In range also means finite
            # (a NaN fails both comparisons).
            return type(value) is float and MIN_NUMBER < value < MAX_NUMBER_EXCLUSIVE
        return kind == "boolean" and type(value) is bool

    def describe(self) -> str:
        """The shape in words, for error messages: "one of bash, zsh" or "a number"."""
        if self.kind == "enum":
            shown = ", ".join(self.values[:12]) + (", …" if len(self.values) > 12 else "")
            return f"one of {shown}"
        if self.kind == "number":
            return "a number"
        if self.kind == "boolean":
            return "true or false"
        if self.kind == "token":
            return f"a token of at most {MAX_TOKEN_CHARS} letters, digits, '.', '_' or '-'"
        return f"like {self.example}" if self.example else "of the documented form"

    def for_agent(self) -> dict[str, Any]:
        """The shape as sent to agents in ``welcome`` and ``config`` (and read back by
        :func:`shape_from_agent`)."""
        described: dict[str, Any] = {"shape": self.kind}
        if self.kind == "enum":
            described["values"] = list(self.values)
        elif self.kind == "pattern":
            described["pattern"] = self.pattern
            described["max_chars"] = self.max_chars
        elif self.kind == "token":
            described["max_chars"] = MAX_TOKEN_CHARS
        return described


def enum(*values: str) -> Shape:
    return Shape("enum", values=values, max_chars=max(len(value) for value in values))


def pattern(regex: str, *, max_chars: int, example: str) -> Shape:
    return Shape("pattern", pattern=regex, max_chars=max_chars, example=example)


#: A version: digits, up to four dotted parts, an optional pre-release and build (``1.4.2``,
#: ``131.0.6778.86``, ``2.0.0-beta.1+5``).
VERSION_PATTERN: Final = r"v?[0-9]{1,9}(?:\.[0-9A-Za-z]{1,16}){0,4}(?:[-+][0-9A-Za-z][0-9A-Za-z.]{0,31}){0,2}"
BROWSER_NAMES: Final = (
    "Chrome",
    "Chromium",
    "Firefox",
    "Edge",
    "Safari",
    "Opera",
    "Brave",
    "Vivaldi",
    "Arc",
    "Samsung Internet",
    "Yandex",
    "Tor Browser",
    "DuckDuckGo",
    "Other",
)
OS_NAMES: Final = (
    "macOS",
    "Windows",
    "Windows Server",
    "Linux",
    "Ubuntu",
    "Debian",
    "Fedora",
    "RHEL",
    "CentOS",
    "Rocky Linux",
    "AlmaLinux",
    "openSUSE",
    "Arch Linux",
    "NixOS",
    "Alpine",
    "ChromeOS",
    "iOS",
    "iPadOS",
    "Android",
    "FreeBSD",
    "OpenBSD",
    "Other",
)
SHELLS: Final = (
    "bash",
    "zsh",
    "fish",
    "sh",
    "dash",
    "ksh",
    "tcsh",
    "csh",
    "pwsh",
    "powershell",
    "cmd",
    "nu",
    "xonsh",
    "elvish",
)
ARCHITECTURES: Final = ("x86_64", "amd64", "arm64", "aarch64", "x86", "i686", "armv7", "riscv64")


def _named_version(names: Sequence[str]) -> str:
    return "(?:" + "|".join(re.escape(name) for name in names) + f")(?: {VERSION_PATTERN})?"


#: The keys every organisation accepts, each with its value shape (docs/protocol.md lists them).
STANDARD_KEYS: Final[Mapping[str, Shape]] = {
    "browser": pattern(_named_version(BROWSER_NAMES), max_chars=64, example="'Chrome 131'"),
    "browser_version": pattern(VERSION_PATTERN, max_chars=48, example="'131.0.6778.86'"),
    "os": pattern(_named_version(OS_NAMES), max_chars=64, example="'macOS 15' or 'Ubuntu 24.04'"),
    "os_version": pattern(VERSION_PATTERN, max_chars=48, example="'15.1'"),
    "shell": enum(*SHELLS),
    "app_version": pattern(VERSION_PATTERN, max_chars=48, example="'1.4.2'"),
    "extension_version": pattern(VERSION_PATTERN, max_chars=48, example="'3.2.0'"),
    "locale": pattern(
        r"[A-Za-z]{2,3}(?:[-_][A-Za-z]{4})?(?:[-_](?:[A-Za-z]{2}|[0-9]{3}))?", max_chars=16, example="'en-US'"
    ),
    "arch": enum(*ARCHITECTURES),
}


# --- content classification ----------------------------------------------------------------------

#: Words that, as a word of a name, say the field carries prompt or answer content.
CONTENT_WORDS: Final = frozenset(
    {
        "prompt",
        "prompts",
        "content",
        "contents",
        "text",
        "texts",
        "completion",
        "completions",
        "response",
        "responses",
        "message",
        "messages",
        "msg",
        "input",
        "inputs",
        "output",
        "outputs",
        "query",
        "queries",
        "body",
        "answer",
        "answers",
        "reply",
        "replies",
        "question",
        "questions",
        "transcript",
        "conversation",
        "conversations",
        "chat",
        "snippet",
        "snippets",
        "clipboard",
        "selection",
        "instruction",
        "instructions",
        "document",
        "attachment",
        "attachments",
        "payload",
        # A few other languages' words for the same, as agents are not all written in English.
        "texto",
        "mensaje",
        "mensagem",
        "contenido",
        "conteudo",
        "pregunta",
        "respuesta",
        "nachricht",
        "eingabe",
        "inhalt",
        "antwort",
        "frage",
        "contenu",
        "requete",
        "reponse",
        "testo",
        "messaggio",
        "domanda",
        "risposta",
    }
)
#: Content words distinctive enough to spot inside run-together names ("usermessage", "提示词").
CONTENT_STEMS: Final = (
    "prompt",
    "completion",
    "message",
    "transcript",
    "conversation",
    "clipboard",
    "payload",
    "content",
    "instruction",
    "attachment",
    "snippet",
    "texto",
    "mensaje",
    "nachricht",
    "提示",
    "内容",
    "消息",
    "文本",
    "问题",
    "回答",
    "プロンプト",
    "メッセージ",
    "本文",
    "프롬프트",
    "메시지",
    "내용",
    "промпт",
    "запрос",
    "сообщение",
    "текст",
)
#: A last word that makes a content-named field a measure ("prompt_length"), not content, when its value is a
#: number.
MEASURE_WORDS: Final = frozenset(
    {"length", "len", "count", "size", "chars", "characters", "tokens", "bytes", "words", "lines", "ms"}
)
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_SEPARATORS = re.compile(r"[\W_]+")
_LOOKALIKES: dict[str, str] | None = None


def _lookalike_table() -> dict[str, str]:
    """Each character of Unicode's confusables table that looks like one ASCII letter or digit, mapped to it.

    Loaded on first use: only refusals and vetting need it, never an accepted event.
    """
    global _LOOKALIKES
    if _LOOKALIKES is None:
        from confusable_homoglyphs import confusables

        table: dict[str, str] = {}
        for character, homoglyphs in confusables.confusables_data.items():
            if len(character) != 1 or character.isascii():
                continue
            for glyph in homoglyphs:
                if len(glyph["c"]) == 1 and glyph["c"].isascii() and glyph["c"].isalnum():
                    table[character] = glyph["c"]
                    break
        _LOOKALIKES = table
    return _LOOKALIKES


def _is_invisible(character: str) -> bool:
    return (
        unicodedata.category(character) in ("Cf", "Cc", "Mn", "Me") or FORBIDDEN.match(character) is not None
    )


@functools.lru_cache(maxsize=4096)
def name_words(name: str) -> tuple[str, ...]:
    """The words of a field name after normalisation: ``"Pro\\u200bmpt_Text"`` → ``("prompt", "text")``.

    NFKC; then, for non-ASCII names, accents, invisible characters and combining marks
    dropped and look-alike letters mapped to ASCII; camelCase split, case folded, split on
    anything that is not a letter or digit.
    """
    text = unicodedata.normalize("NFKC", name[:200])
    if not text.isascii():
        table = _lookalike_table()
        decomposed = unicodedata.normalize("NFKD", text)
        text = "".join(
            table.get(character, character) for character in decomposed if not _is_invisible(character)
        )
        text = unicodedata.normalize("NFKC", text)  # recompose what NFKD split (Hangul syllables)
    text = _CAMEL.sub(r"\1_\2", text).casefold()
    return tuple(word for word in _SEPARATORS.split(text) if word)


@functools.cache
def _normalised_vocabulary() -> tuple[frozenset[str], tuple[str, ...]]:
    """The content words and stems through the same normalisation as names, so both sides compare alike."""
    words = frozenset(normalise_name(word) for word in CONTENT_WORDS)
    stems = tuple(dict.fromkeys(normalise_name(stem) for stem in CONTENT_STEMS))
    return words, stems


def normalise_name(name: str) -> str:
    """The normalised form of a name (its words run together): ``"User-Prompt"`` → ``"userprompt"``."""
    return "".join(name_words(name))


def names_content(name: str) -> bool:
    """True if the name, normalised, says it carries content (a content word, or a distinctive stem in it)."""
    words = name_words(name)
    content_words, content_stems = _normalised_vocabulary()
    if any(word in content_words for word in words):
        return True
    joined = "".join(words)
    return any(stem in joined for stem in content_stems)


def is_content_key(name: str, value: object) -> bool:
    """True if a field of this name and value may carry prompt or answer content.

    A content name ending in a measure (``prompt_length``, ``response_tokens``) is not
    content when its value is a number; ``prompt_length: "…"`` is.
    """
    if not names_content(name):
        return False
    words = name_words(name)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return not (len(words) > 1 and words[-1] in MEASURE_WORDS and is_number)


def value_problem(key: str, shape: Shape, value: object) -> str | None:
    """Why ``value`` does not fit ``shape`` (a message naming ``log_metadata.<key>``), or None if it does."""
    if value is None:
        return None
    if shape.accepts(value):
        return None
    if shape.kind == "number" and type(value) in (int, float):
        return (
            f"log_metadata.{key} must be a finite number between -2^63 and 2^63 (exclusive); "
            f"got {_shown(value)}"
        )
    if isinstance(value, dict | list):
        return f"log_metadata.{key} must be {shape.describe()} (values are flat: no objects or lists)"
    return f"log_metadata.{key} must be {shape.describe()}; got {_shown(value)}"


def _shown(value: object) -> str:
    if isinstance(value, str):
        return f"{value!r}" if len(value) <= 40 else f"a string of {len(value)} characters"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    return type(value).__name__


def unknown_key_message(key: str) -> str:
    shown = repr(key) if len(key) <= 64 else repr(key[:64] + "…")
    return f"unknown metadata key {shown}; allowed: the standard keys and those the organisation added"


def metadata_problem(
    key: str, value: object, *, allowed: Mapping[str, Shape] | None = None
) -> EventError | None:
    """The refusal one ``log_metadata`` entry gets under today's rules, or None if it is accepted.

    ``allowed`` is the organisation's full key map (:func:`allowed_shapes`); the standard keys
    when None. Used by the validator's error path and to scrub rows stored under older rules.
    """
    from db.event_schema import EventError  # the validator imports this module: import at call time

    shapes = STANDARD_KEYS if allowed is None else allowed
    if not isinstance(key, str):
        return EventError("invalid_event", "log_metadata keys must be strings")
    shape = shapes.get(key)
    if shape is None:
        if is_content_key(key, value):
            return EventError(
                "content_not_allowed",
                f"field 'log_metadata.{key[:64]}' may carry prompt content; it is not accepted",
            )
        return EventError("invalid_event", unknown_key_message(key))
    problem = value_problem(key, shape, value)
    return None if problem is None else EventError("invalid_event", problem)


# --- organisations' keys ---------------------------------------------------------------------------


def shape_of(row: OrganizationMetadataKey) -> Shape:
    """The shape of a stored key."""
    return _cached_shape(row.shape, tuple(row.enum_values or ()))


def allowed_shapes(rows: Iterable[OrganizationMetadataKey]) -> dict[str, Shape]:
    """The standard keys plus an organisation's keys: what its events' ``log_metadata`` may hold."""
    shapes = dict(STANDARD_KEYS)
    for row in rows:
        shapes.setdefault(row.key, shape_of(row))
    return shapes


def keys_for_agent(shapes: Mapping[str, Shape]) -> dict[str, dict[str, Any]]:
    """The key map as agents receive it in ``welcome`` and ``config`` (``config.metadata_keys``)."""
    return {key: shape.for_agent() for key, shape in sorted(shapes.items())}


def shapes_from_agent(described: object) -> dict[str, Shape]:
    """The key map back from its agent form (the server enforces exactly what it told the agent)."""
    if not isinstance(described, Mapping):
        return dict(STANDARD_KEYS)
    shapes: dict[str, Shape] = {}
    for key, item in described.items():
        standard = STANDARD_KEYS.get(key)
        if standard is not None:
            shapes[key] = standard
        elif isinstance(item, Mapping) and item.get("shape") in ADMIN_SHAPES:
            shapes[key] = _cached_shape(item["shape"], tuple(item.get("values") or ()))
    return shapes


@functools.lru_cache(maxsize=1024)
def _cached_shape(kind: str, values: tuple[str, ...]) -> Shape:
    return Shape(kind, values=values) if kind == "enum" else Shape(kind)


def vet_key(key: object, shape: object, values: object = None) -> Shape:
    """Check a key an administrator wants to allow; return its Shape or raise MetadataKeyError.

    The key must be lower-case snake case, not a standard key, and not named for content
    (normalised, so ``user_Prompt`` or ``usermessage`` are refused too); the shape one of
    number, boolean, enum (1-32 tokens) or token.
    """
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise MetadataKeyError(
            f"a metadata key must be 1-{MAX_METADATA_KEY_CHARS} lower-case letters, digits or '_', "
            f"starting with a letter; got {_shown(key)}"
        )
    if key in STANDARD_KEYS:
        raise MetadataKeyError(f"{key!r} is a standard key already (its shape is fixed)")
    if shape not in ADMIN_SHAPES:
        raise MetadataKeyError(f"shape must be one of {', '.join(ADMIN_SHAPES)}; got {_shown(shape)}")
    if is_content_key(key, 0 if shape == "number" else ""):
        raise MetadataKeyError(
            f"{key!r} names prompt or answer content ({normalise_name(key)!r}); it cannot be allowed"
            " (a measure such as prompt_length may be allowed as a number)"
        )
    if shape != "enum":
        if values:
            raise MetadataKeyError("only an enum shape takes values")
        return Shape(str(shape))
    if isinstance(values, str):
        values = [part.strip() for part in values.split(",") if part.strip()]
    if not isinstance(values, list | tuple) or not values:
        raise MetadataKeyError("an enum needs its values (1-32 tokens)")
    if len(values) > MAX_ENUM_VALUES:
        raise MetadataKeyError(f"an enum may have at most {MAX_ENUM_VALUES} values; got {len(values)}")
    for value in values:
        if not isinstance(value, str) or not TOKEN_PATTERN.fullmatch(value):
            raise MetadataKeyError(
                f"enum values must be 1-{MAX_TOKEN_CHARS} letters, digits, '.', '_' or '-'; "
                f"got {_shown(value)}"
            )
    if len(set(values)) != len(values):
        raise MetadataKeyError("enum values must not repeat")
    return Shape("enum", values=tuple(values))


async def list_keys(*, session: AsyncSession, organization_id: str) -> Sequence[OrganizationMetadataKey]:
    """The keys an organisation added, by name."""
    statement = (
        select(OrganizationMetadataKey)
        .where(OrganizationMetadataKey.organization_id == organization_id)
        .order_by(OrganizationMetadataKey.key)
    )
    return (await session.scalars(statement)).all()


async def organization_shapes(*, session: AsyncSession, organization_id: str) -> dict[str, Shape]:
    """The full key map of an organisation: standard keys plus its own."""
    return allowed_shapes(await list_keys(session=session, organization_id=organization_id))


async def _touch_config(session: AsyncSession, organization_id: str, actor: Actor) -> None:
    """A new config version, so agents polling ``config`` pick up the changed key list."""
    row = await session.scalar(
        select(FirewallConfig).where(FirewallConfig.organization_id == organization_id)
    )
    if row is None:
        raise MetadataKeyError(f"organisation {organization_id!r} does not exist")
    row.updated_at = utcnow()
    row.updated_by = actor.name[:64]


def _refuse_past_agent_budget(shapes: Mapping[str, Shape]) -> None:
    """MetadataKeyError if the key map, as sent in ``welcome`` and ``config``, passes its share of the line.

    The counts alone (64 keys of 32 values) would allow about 145 KB; the welcome must fit
    one protocol line (db/configs.py budgets each part of it).
    """
    size = agent_json_bytes(keys_for_agent(shapes), field="metadata keys")
    if size > METADATA_KEYS_MAX_BYTES:
        raise MetadataKeyError(
            f"the organisation's metadata keys would take {size:,} bytes as sent to agents, more than "
            f"{METADATA_KEYS_MAX_BYTES:,}: remove a key or give enums fewer or shorter values"
        )


async def allow_key(
    *,
    session: AsyncSession,
    organization_id: str,
    key: str,
    shape: str,
    values: Sequence[str] | str | None = None,
    actor: Actor,
) -> OrganizationMetadataKey:
    """Allow ``key`` in the organisation's events with the given shape on behalf of ``actor``, audited.

    Raises NotAllowed unless the actor is an administrator now; MetadataKeyError if the
    key is refused (see :func:`vet_key`), exists, or the organisation has
    :data:`MAX_ORGANIZATION_KEYS` keys already.
    """
    vetted = vet_key(key, shape, values)
    await require_admin(session=session, actor=actor, what="allow metadata keys")
    await _touch_config(session, organization_id, actor)
    existing = await list_keys(session=session, organization_id=organization_id)
    if any(row.key == key for row in existing):
        raise MetadataKeyError(f"{key!r} is allowed already; remove it first to change its shape")
    if len(existing) >= MAX_ORGANIZATION_KEYS:
        raise MetadataKeyError(f"an organisation may add at most {MAX_ORGANIZATION_KEYS} keys")
    _refuse_past_agent_budget({**allowed_shapes(existing), key: vetted})
    row = OrganizationMetadataKey(
        organization_id=organization_id,
        key=key,
        shape=vetted.kind,
        enum_values=list(vetted.values),
        created_at=utcnow(),
        created_by=actor.name[:64],
    )
    session.add(row)
    await session.flush()
    await record_change(
        session=session,
        actor=actor,
        action="metadata_key.allow",
        entity_type="config",
        entity_id=organization_id,
        changes={f"metadata_keys.{key}": {"after": vetted.for_agent()}},
    )
    return row


async def remove_key(*, session: AsyncSession, organization_id: str, key: str, actor: Actor) -> bool:
    """Stop accepting an added key on behalf of ``actor``, audited; False if the organisation had no such key.

    Raises NotAllowed unless the actor is an administrator now.
    """
    await require_admin(session=session, actor=actor, what="remove metadata keys")
    row = await session.scalar(
        select(OrganizationMetadataKey).where(
            OrganizationMetadataKey.organization_id == organization_id, OrganizationMetadataKey.key == key
        )
    )
    if row is None:
        return False
    before = shape_of(row).for_agent()
    await session.delete(row)
    await _touch_config(session, organization_id, actor)
    await record_change(
        session=session,
        actor=actor,
        action="metadata_key.remove",
        entity_type="config",
        entity_id=organization_id,
        changes={f"metadata_keys.{key}": {"before": before}},
    )
    return True
