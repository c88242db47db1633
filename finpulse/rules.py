"""Alert rules: declared in a YAML (or TOML) file, validated by pydantic when the worker starts.

A rules file is a mapping with one key, ``rules``, holding a list of rules. Every rule has a ``name``, a
``kind`` and a ``cooldown``; the kinds and what each looks at:

* ``sentiment_z`` — the window's sentiment z-score ``below`` (or ``above``) ``threshold``, with at least
  ``min_buzz`` events in the window, optionally only while the net sentiment is at most
  ``max_net_sentiment`` (at least ``min_net_sentiment``): a z-score alone is fragile when the baseline
  barely moves, a level check is not;
* ``buzz_spike`` — the window's buzz z-score at least ``threshold``, with at least ``min_buzz`` events;
* ``sign_flip`` — net sentiment changed sign against the key's previous closed window of the same size,
  both at least ``min_magnitude`` away from zero and both with at least ``min_buzz`` events;
* ``news_event`` — one news event with a score at most ``max_score`` about a watched ticker (``keys``),
  optionally only when its text mentions one of ``keywords``.

Window rules name a ``scope`` (``ticker``, ``source`` or ``market``), a ``window`` (one of the index's
window sizes, ``FINPULSE_INDEX_WINDOWS_S``) and optionally ``keys`` (only these entities). Durations
are seconds or strings such as ``90s``, ``5m``, ``1h30m``, ``1d``. The file is found at
``FINPULSE_ALERT_RULES_PATH``, or is the packaged ``finpulse/data/alert_rules.yaml``.

A file that does not validate raises :class:`RulesError`, whose message names the file and, for every
problem, the line, the rule and the field, e.g.::

    invalid alert rules in /etc/finpulse/rules.yaml:
      line 9, rule 'ticker-crash', field 'threshold': Input should be a valid number (got 'low')

Example:
    >>> rules = parse_rules("rules:\\n- {name: crash, kind: sentiment_z, threshold: -3, min_buzz: 20}\\n")
    >>> rules[0].window, rules[0].cooldown, rules[0].scope
    (300, 3600, 'ticker')
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from finpulse.schemas import Scope
from finpulse.settings import Settings

DEFAULT_RULES_FILE = "alert_rules.yaml"
Severity = Literal["info", "warning", "critical"]

_DURATION = re.compile(r"(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>d|h|m|s)", re.IGNORECASE)
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(value: object) -> object:
    """``300``, ``"300"``, ``"5m"``, ``"1h30m"``, ``"1d"`` → whole seconds; anything else is left to pydantic."""
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if text.isdigit():
            return int(text)
        parts = list(_DURATION.finditer(text))
        if not parts or "".join(part.group(0) for part in parts) != text:
            raise ValueError(f"{value!r} is not a duration: use seconds or e.g. '90s', '5m', '1h30m', '1d'")
        seconds = sum(float(part["amount"]) * _UNIT_SECONDS[part["unit"].lower()] for part in parts)
        if seconds != int(seconds):
            raise ValueError(f"{value!r} is not a whole number of seconds")
        return int(seconds)
    return value


Seconds = Annotated[int, BeforeValidator(parse_duration), Field(ge=0)]


def _ticker(key: str) -> str:
    """As the pipeline writes tickers: ``$aapl`` → ``AAPL``."""
    return key.strip().lstrip("$").upper()


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    description: str = ""
    severity: Severity = "warning"
    cooldown: Seconds = Field(3600, description="No second firing for the same entity within this much event time.")
    keys: tuple[str, ...] | None = Field(None, min_length=1, description="Only these entities; all when absent.")

    def watches(self, key: str) -> bool:
        return self.keys is None or key in self.keys

    def thresholds(self) -> dict[str, float | int]:
        """The rule's thresholds, as an alert reports them."""
        raise NotImplementedError


class _WindowRule(_Rule):
    scope: Scope = "ticker"
    window: Seconds = Field(300, gt=0, description="Window size; must be one the index computes.")
    min_buzz: int = Field(1, ge=1, description="Events the window must hold before the rule looks at it.")

    @field_validator("window")
    @classmethod
    def _window_is_indexed(cls, window: int, info: ValidationInfo) -> int:
        indexed = (info.context or {}).get("index_windows")
        if indexed and window not in indexed:
            sizes = ", ".join(f"{size}s" for size in sorted(indexed))
            raise ValueError(f"the index computes no {window}s window (FINPULSE_INDEX_WINDOWS_S has {sizes})")
        return window

    @model_validator(mode="after")
    def _tickers_are_upper_case(self) -> _WindowRule:
        if self.scope == "ticker" and self.keys is not None:
            object.__setattr__(self, "keys", tuple(_ticker(key) for key in self.keys))
        return self


class SentimentZRule(_WindowRule):
    """Sentiment z-score beyond a threshold, with enough events and, optionally, a net sentiment level."""

    kind: Literal["sentiment_z"]
    direction: Literal["below", "above"] = "below"
    threshold: float
    min_baseline_windows: int = Field(3, ge=1)
    max_net_sentiment: float | None = Field(None, ge=-1, le=1)
    min_net_sentiment: float | None = Field(None, ge=-1, le=1)

    @field_validator("threshold")
    @classmethod
    def _threshold_points_the_right_way(cls, threshold: float, info: ValidationInfo) -> float:
        direction = info.data.get("direction")
        if direction == "below" and threshold >= 0:
            raise ValueError(f"direction 'below' needs a negative threshold, got {threshold}")
        if direction == "above" and threshold <= 0:
            raise ValueError(f"direction 'above' needs a positive threshold, got {threshold}")
        return threshold

    def thresholds(self) -> dict[str, float | int]:
        limits: dict[str, float | int] = {"sentiment_z": self.threshold, "min_buzz": self.min_buzz}
        if self.max_net_sentiment is not None:
            limits["max_net_sentiment"] = self.max_net_sentiment
        if self.min_net_sentiment is not None:
            limits["min_net_sentiment"] = self.min_net_sentiment
        return limits


class BuzzSpikeRule(_WindowRule):
    """Buzz z-score at or above a threshold, with at least ``min_buzz`` events."""

    kind: Literal["buzz_spike"]
    threshold: float = Field(gt=0)
    min_baseline_windows: int = Field(3, ge=1)

    def thresholds(self) -> dict[str, float | int]:
        return {"buzz_z": self.threshold, "min_buzz": self.min_buzz}


class SignFlipRule(_WindowRule):
    """Net sentiment changed sign against the previous closed window of the same key and size."""

    kind: Literal["sign_flip"]
    direction: Literal["to_negative", "to_positive", "any"] = "any"
    min_magnitude: float = Field(0.1, ge=0, lt=1, description="|net sentiment| both windows must reach.")

    def thresholds(self) -> dict[str, float | int]:
        return {"min_magnitude": self.min_magnitude, "min_buzz": self.min_buzz}


class NewsEventRule(_Rule):
    """One very negative news event about a watched ticker."""

    kind: Literal["news_event"]
    keys: tuple[str, ...] = Field(min_length=1, description="The watched tickers.")
    max_score: float = Field(ge=-1, le=1, description="The event's score (p_bullish - p_bearish) at most this.")
    min_confidence: float = Field(0.0, ge=0, le=1)
    keywords: tuple[str, ...] | None = Field(
        None, min_length=1, description="When given, the text must mention one (case-insensitive word prefix)."
    )

    @field_validator("keys")
    @classmethod
    def _upper(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_ticker(key) for key in keys)

    @property
    def scope(self) -> Scope:
        return "ticker"

    def mentions_keyword(self, text: str) -> bool:
        return self.keywords is None or _keyword_pattern(self.keywords).search(text) is not None

    def thresholds(self) -> dict[str, float | int]:
        return {"max_score": self.max_score, "min_confidence": self.min_confidence}


_patterns: dict[tuple[str, ...], re.Pattern[str]] = {}


def _keyword_pattern(keywords: tuple[str, ...]) -> re.Pattern[str]:
    if keywords not in _patterns:
        _patterns[keywords] = re.compile(r"\b(?:" + "|".join(map(re.escape, keywords)) + ")", re.IGNORECASE)
    return _patterns[keywords]


WindowRule = SentimentZRule | BuzzSpikeRule | SignFlipRule
Rule = Annotated[SentimentZRule | BuzzSpikeRule | SignFlipRule | NewsEventRule, Field(discriminator="kind")]


class RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[Rule]


@dataclass(frozen=True)
class RuleProblem:
    """One thing wrong in a rules file, located as precisely as the file format allows."""

    line: int | None
    rule: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = [f"line {self.line}" if self.line else "", _rule_label(self.rule) if self.rule else "",
                 f"field {self.field!r}" if self.field else ""]  # fmt: skip
        prefix = ", ".join(part for part in where if part)
        return f"{prefix}: {self.message}" if prefix else self.message


def _rule_label(rule: str) -> str:
    return f"rule {rule}" if rule.startswith("#") else f"rule {rule!r}"  # '#3': the third rule, which has no name


class RulesError(ValueError):
    """A rules file that cannot be read or does not validate; the message lists every problem."""

    def __init__(self, source: str, problems: Sequence[RuleProblem]) -> None:
        self.source = source
        self.problems = list(problems)
        listed = "\n".join(f"  {problem}" for problem in self.problems)
        super().__init__(f"invalid alert rules in {source}:\n{listed}")


def default_rules_path() -> Path:
    with resources.as_file(resources.files("finpulse") / "data" / DEFAULT_RULES_FILE) as path:
        return Path(path)


def load_rules(path: Path, *, index_windows: Sequence[int] | None = None) -> list[Rule]:
    """Read and validate a ``.yaml``/``.yml`` or ``.toml`` rules file.

    ``index_windows`` (the index's window sizes) makes a window rule on any other size an error.

    Raises:
        RulesError: the file is missing, unreadable, not YAML/TOML, or a rule does not validate.
    """
    source = str(path)
    try:
        text = path.read_text("utf-8")
    except OSError as error:
        raise RulesError(source, [RuleProblem(None, None, None, f"cannot read the file: {error}")]) from error
    except UnicodeDecodeError as error:
        raise RulesError(source, [RuleProblem(None, None, None, f"not UTF-8 text: {error}")]) from error
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return parse_rules(text, source=source, index_windows=index_windows)
    if suffix == ".toml":
        return parse_rules(text, source=source, index_windows=index_windows, format="toml")
    raise RulesError(source, [RuleProblem(None, None, None, "unknown file type: name it .yaml, .yml or .toml")])


def load_rules_for(settings: Settings) -> list[Rule]:
    """The rules the worker runs: ``FINPULSE_ALERT_RULES_PATH``, or the packaged defaults."""
    return load_rules(settings.alert_rules_path or default_rules_path(), index_windows=settings.index_windows_s)


def parse_rules(
    text: str,
    *,
    source: str = "<rules>",
    index_windows: Sequence[int] | None = None,
    format: Literal["yaml", "toml"] = "yaml",
) -> list[Rule]:
    """Validate rules given as text; see :func:`load_rules`."""
    document = _YamlDocument.parse(text, source) if format == "yaml" else _TomlDocument.parse(text, source)
    try:
        parsed = RulesFile.model_validate(document.data, context={"index_windows": index_windows})
    except ValidationError as error:
        raise RulesError(source, [document.problem(detail) for detail in error.errors(include_url=False)]) from None
    _refuse_duplicate_names(parsed.rules, document, source)
    return parsed.rules


def _refuse_duplicate_names(rules: list[Rule], document: _Document, source: str) -> None:
    seen: set[str] = set()
    problems = []
    for index, rule in enumerate(rules):
        if rule.name in seen:
            line = document.line_of(("rules", index, "name"))
            problems.append(RuleProblem(line, rule.name, "name", "another rule has this name; names must be unique"))
        seen.add(rule.name)
    if problems:
        raise RulesError(source, problems)


Loc = tuple[int | str, ...]


class _Document:
    """Parsed rules data plus the means to find the line of any location in it."""

    data: Any

    def line_of(self, loc: Loc) -> int | None:
        raise NotImplementedError

    def problem(self, detail: Any) -> RuleProblem:
        loc: Loc = tuple(detail["loc"])
        field_path = self._field_path(loc)
        if detail["type"] in ("union_tag_invalid", "union_tag_not_found"):
            field_path = "kind"
        message = detail["msg"]
        if detail["type"] == "value_error":
            message = str(detail["ctx"]["error"])  # our own message, which names the bad value already
        elif detail["type"] not in ("missing", "extra_forbidden", "union_tag_not_found") and _is_scalar(
            detail["input"]
        ):
            message = f"{message} (got {detail['input']!r})"
        rule = self._rule_name(loc)
        line = self.line_of(loc if field_path != "kind" else (*loc[:2], "kind"))
        return RuleProblem(line, rule, field_path or None, message)

    def _rule_name(self, loc: Loc) -> str | None:
        if len(loc) < 2 or loc[0] != "rules" or not isinstance(loc[1], int):
            return None
        rules = self.data.get("rules") if isinstance(self.data, dict) else None
        if not isinstance(rules, list) or loc[1] >= len(rules) or not isinstance(rules[loc[1]], dict):
            return f"#{loc[1] + 1}"
        name = rules[loc[1]].get("name")
        return str(name) if name else f"#{loc[1] + 1}"

    def _field_path(self, loc: Loc) -> str:
        """The field a location names: inside a rule, without the rule kind pydantic adds as a step."""
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            rest = list(loc[2:])
            if rest and rest[0] in _KINDS:
                rest = rest[1:]
            return ".".join(str(step) for step in rest)
        return ".".join(str(step) for step in loc)


_KINDS = {"sentiment_z", "buzz_spike", "sign_flip", "news_event"}


def _is_scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


class _YamlDocument(_Document):
    """YAML, composed once for its node marks (line numbers) and constructed once for its data."""

    def __init__(self, data: Any, root: yaml.Node | None) -> None:
        self.data = data
        self._root = root

    @classmethod
    def parse(cls, text: str, source: str) -> _YamlDocument:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            reason = getattr(error, "problem", None) or str(error)
            raise RulesError(source, [RuleProblem(line, None, None, f"not valid YAML: {reason}")]) from None
        return cls(data, root)

    def line_of(self, loc: Loc) -> int | None:
        node = self._root
        if node is None:
            return None
        for step in loc:
            child = _yaml_child(node, step)
            if child is None:
                if isinstance(step, str) and step in _KINDS:
                    continue  # the rule kind pydantic inserts into locations is no node of the file
                break  # a missing field: the line of the mapping that lacks it
            node = child
        return node.start_mark.line + 1


def _yaml_child(node: yaml.Node, step: int | str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(step):
                return value
    if isinstance(node, yaml.SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
        return node.value[step]
    return None


class _TomlDocument(_Document):
    """TOML keeps no positions after parsing; lines are found in the text: the ``[[rules]]`` table, then the key."""

    def __init__(self, data: Any, text: str) -> None:
        self.data = data
        self._lines = text.splitlines()

    @classmethod
    def parse(cls, text: str, source: str) -> _TomlDocument:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            match = re.search(r"line (\d+)", str(error))
            line = int(match.group(1)) if match else None
            raise RulesError(source, [RuleProblem(line, None, None, f"not valid TOML: {error}")]) from None
        return cls(data, text)

    def line_of(self, loc: Loc) -> int | None:
        if len(loc) < 2 or loc[0] != "rules" or not isinstance(loc[1], int):
            return self._key_line(0, len(self._lines), str(loc[0])) if loc else None
        headers = [i for i, line in enumerate(self._lines) if re.match(r"^\s*\[\[\s*rules\s*\]\]", line)]
        if loc[1] >= len(headers):
            return self._key_line(0, len(self._lines), "rules")
        start = headers[loc[1]]
        end = next(
            (i for i in range(start + 1, len(self._lines)) if re.match(r"^\s*\[", self._lines[i])), len(self._lines)
        )
        fields = [step for step in loc[2:] if isinstance(step, str) and step not in _KINDS]
        found = self._key_line(start + 1, end, fields[0]) if fields else None
        return found or start + 1

    def _key_line(self, start: int, end: int, key: str) -> int | None:
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
        return next((i + 1 for i in range(start, end) if pattern.match(self._lines[i])), None)
