"""Entity linking: cashtags and company names in a text → tickers, from an alias table.

The bundled table (``finpulse/data/companies.csv``) lists large US and HK/China-listed companies with
the columns ``ticker,name,aliases,market,sector`` (aliases separated by ``|``). A user table
(``FINPULSE_ENTITY_ALIASES_CSV``) extends it: it needs a ``ticker`` column and any of ``name``,
``aliases``, ``alias`` (one alias per row), ``market`` and ``sector``; rows for a known ticker add
aliases to it, and where two companies claim the same alias the table loaded last wins.

Matching rules:

* Cashtags (``$AAPL``, ``$aapl``, ``$BRK.B``, ``$BRK-B``, ``$700.HK``) are explicit, so a cashtag is
  kept as a ticker even when the table does not know it. Share-class separators become ``.``, HK codes
  are zero-padded to four digits and Shanghai's ``.SH`` is written ``.SS``. An alias that starts with
  ``$`` in the table is a cashtag alias (``$GOOG`` → ``GOOGL``, ``$9988.HK`` → ``BABA``).
* Names and aliases match as whole words: not preceded or followed by a Latin letter, digit or ``_``.
  CJK characters count as boundaries, so ``腾讯控股`` still matches ``腾讯``. Runs of whitespace in the
  text match one space in an alias, and ``’`` matches ``'``.
* Case: aliases match in any case (``tesla``, ``TESLA``), except aliases that must match exactly as
  written in the table: those of at most three characters (``GM``, ``HP``), those written in capitals
  (``HSBC``, ``AT&T``) and those made only of common English words (``Apple``, ``Target``,
  ``Bank of China``; the words are ``COMMON_WORDS``). So "Apple" links to AAPL, "apple pie" does not.
* A bare ticker (``AAPL`` without ``$``) is an exact-case alias when it is three to five capital
  letters and not a common word in lowercase (``NOW``, ``COST`` and ``ICE`` are not linked).
* At one position the longest alias wins ("Bank of America" over any shorter alias it contains).

Example:
    >>> linker = EntityLinker.default()
    >>> linker.link("Apple and $msft rally; Tencent (腾讯) slips; $XYZQ halted; apple pie recipe")
    ['AAPL', 'MSFT', '0700.HK', 'XYZQ']
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType

# English words that are also (parts of) company names or tickers: an alias made only of these matches
# in exact case only, and a ticker among them is never linked without its "$".
COMMON_WORDS = frozenset(
    """
    a about air airlines all alphabet american an and apple applied arm arts at bank best big blk block
    booking box carnival cat caterpillar chase china coin coke com compass computer cop corp cost delta
    depot discover dish dollar door electric electronic energy express fast first for gap general gild
    global go group hold holdings home hon hood ice in inc insurance is it key life lin lines live low
    lucid mar mart match materials meta micro mmm mobile motors nee new now of on one oracle oxy pep
    ping pop post progressive real rtx see shell shop snap snow snowflake spot square star super target
    tech the to true unh united up ups us visa well workday yum zoom
    """.split()
)

_WORD_CHARS = r"0-9A-Za-z_\u00c0-\u024f"
_CASHTAG = r"\d{1,6}\.[A-Za-z]{2}|[A-Za-z]{1,6}(?:[./-][A-Za-z]{1,2})?"
_BARE_TICKER = re.compile(r"[A-Z]{3,5}")
_HK_OR_CN_CODE = re.compile(r"(\d{1,6})\.(HK|SS|SZ)")
_WORDS = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True, slots=True)
class Company:
    ticker: str
    name: str
    aliases: tuple[str, ...] = ()
    market: str = ""
    sector: str = ""


class EntityTableError(ValueError):
    """An alias table that cannot be loaded; the message names the file and line."""


def normalize_ticker(symbol: str) -> str:
    """Canonical spelling of a ticker or cashtag.

    Example:
        >>> [normalize_ticker(s) for s in ("$brk-b", "700.hk", "600519.sh", " aapl ")]
        ['BRK.B', '0700.HK', '600519.SS', 'AAPL']
    """
    ticker = symbol.strip().lstrip("$").upper().replace("/", ".").replace("-", ".")
    ticker = re.sub(r"\.SH$", ".SS", ticker)
    code = _HK_OR_CN_CODE.fullmatch(ticker)
    if code:
        digits, exchange = code.groups()
        ticker = f"{digits.zfill(4 if exchange == 'HK' else 6)}.{exchange}"
    return ticker


def needs_exact_case(alias: str) -> bool:
    """Whether an alias must match exactly as written (see the module docstring for the rule).

    Example:
        >>> [needs_exact_case(a) for a in ("Apple", "Tesla", "GM", "HSBC", "Bank of China", "Morgan Stanley")]
        [True, False, True, True, True, False]
    """
    if len(alias) <= 3 or alias.isupper():
        return True
    words = _WORDS.findall(alias.lower())
    return bool(words) and all(word in COMMON_WORDS for word in words)


def _alias_key(alias: str) -> str:
    return " ".join(alias.replace("\u2019", "'").split())


@dataclass
class _AliasTarget:
    any_case: str | None = None
    exact: dict[str, str] = field(default_factory=dict)


def _trie_pattern(node: dict[str, dict]) -> str:
    # A trie turned into nested alternations: the engine follows one branch per character instead of
    # trying every alias at every position, which keeps linking cost flat as the table grows.
    ends_here = "" in node
    branches = [_char_pattern(char) + _trie_pattern(child) for char, child in sorted(node.items()) if char]
    if not branches:
        return ""
    if len(branches) == 1 and not ends_here:
        return branches[0]
    return "(?:" + "|".join(branches) + (")?" if ends_here else ")")


def _char_pattern(char: str) -> str:
    if char == " ":
        return r"\s+"
    if char == "'":
        return "['\u2019]"
    return re.escape(char)


def _build_pattern(lowercase_keys: Iterable[str], flags: int = 0) -> re.Pattern[str]:
    trie: dict[str, dict] = {}
    for key in lowercase_keys:
        node = trie
        for char in key:
            node = node.setdefault(char, {})
        node[""] = {}
    names = _trie_pattern(trie) or r"(?!)"
    return re.compile(
        rf"(?<![{_WORD_CHARS}$])(?:\$(?P<cashtag>{_CASHTAG})|(?P<alias>{names}))(?![{_WORD_CHARS}])", flags
    )


class EntityLinker:
    """Links texts to tickers with one compiled pattern over all cashtags and aliases.

    Example:
        >>> EntityLinker.default().link_many(["$AAPL beats", "Bank of America cuts Target to sell"])
        [['AAPL'], ['BAC', 'TGT']]
    """

    def __init__(self, companies: Iterable[Company]) -> None:
        self._companies: dict[str, Company] = {}
        self._aliases: dict[str, _AliasTarget] = {}
        self._cashtags: dict[str, str] = {}
        for company in companies:
            self._add(company)
        # Matching a lowercased copy case-sensitively is about twice as fast as IGNORECASE; the
        # IGNORECASE pattern serves the rare texts whose lowercase has a different length ("İ").
        self._lowercase_pattern = _build_pattern(self._aliases)
        self._any_case_pattern = _build_pattern(self._aliases, re.IGNORECASE)

    @classmethod
    def from_csv(cls, *paths: str | Path, include_bundled: bool = True) -> EntityLinker:
        """The bundled table (unless ``include_bundled=False``) extended by the tables at ``paths``."""
        companies = list(bundled_companies()) if include_bundled else []
        for path in paths:
            companies.extend(load_companies(path))
        return cls(companies)

    @classmethod
    def default(cls, *, extra_csv: Iterable[str | Path] = ()) -> EntityLinker:
        """The bundled table plus ``extra_csv`` (the pipeline passes ``Settings.entity_aliases_csv``)."""
        extra = tuple(Path(path) for path in extra_csv)
        return _cached_linker(extra) if extra else _cached_linker(())

    @property
    def companies(self) -> Mapping[str, Company]:
        """Known companies by ticker, in table order."""
        return MappingProxyType(self._companies)

    def market_of(self, ticker: str) -> str | None:
        """``US``, ``HK``, ``CN``… for a known ticker, ``None`` for one the table does not know."""
        company = self._companies.get(normalize_ticker(ticker))
        return company.market if company else None

    def link(self, text: str) -> list[str]:
        """Tickers mentioned in ``text``, in order of first mention, each once."""
        lowered = text.lower()
        if len(lowered) == len(text):
            search, haystack = self._lowercase_pattern.search, lowered
        else:
            search, haystack = self._any_case_pattern.search, text
        tickers: dict[str, None] = {}
        position = 0
        while match := search(haystack, position):
            ticker = self._resolve(match, text)
            if ticker is None:
                # A longest match in the wrong case ("the Home Depot") may hide a shorter one inside it.
                position = match.start() + 1
            else:
                tickers[ticker] = None
                position = match.end()
        return list(tickers)

    def link_many(self, texts: Sequence[str]) -> list[list[str]]:
        """``link`` over a batch."""
        link = self.link
        return [link(text) for text in texts]

    def _resolve(self, match: re.Match[str], text: str) -> str | None:
        # Spans index the original text too: lowercasing kept its length, so it kept every position.
        start, end = match.span("cashtag")
        if start >= 0:
            ticker = normalize_ticker(text[start:end])
            return self._cashtags.get(ticker, ticker)
        written = _alias_key(text[slice(*match.span("alias"))])
        target = self._aliases.get(written.lower())
        if target is None:
            return None
        return target.exact.get(written, target.any_case)

    def _add(self, company: Company) -> None:
        # Rows are applied in order: a later row for a known ticker extends it, a later claim of an
        # alias takes it over.
        known = self._companies.get(company.ticker)
        self._companies[company.ticker] = company if known is None else _merged(known, company)
        self._cashtags[company.ticker] = company.ticker
        for alias in _aliases_of(company):
            if alias.startswith("$"):
                self._cashtags[normalize_ticker(alias)] = company.ticker
                continue
            key = _alias_key(alias)
            target = self._aliases.setdefault(key.lower(), _AliasTarget())
            if needs_exact_case(key):
                target.exact[key] = company.ticker
            else:
                target.any_case = company.ticker


def _aliases_of(company: Company) -> list[str]:
    aliases = [company.name, *company.aliases]
    if _BARE_TICKER.fullmatch(company.ticker) and company.ticker.lower() not in COMMON_WORDS:
        aliases.append(company.ticker)
    return [alias for alias in aliases if alias.strip()]


@cache
def _cached_linker(extra_csv: tuple[Path, ...]) -> EntityLinker:
    return EntityLinker.from_csv(*extra_csv)


@cache
def bundled_companies() -> tuple[Company, ...]:
    """The companies of the table shipped with finpulse."""
    table = resources.files("finpulse") / "data" / "companies.csv"
    with resources.as_file(table) as path:
        return tuple(load_companies(path))


def load_companies(path: str | Path) -> list[Company]:
    """Read an alias table; raises ``EntityTableError`` naming the file and line of a bad row."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or "ticker" not in reader.fieldnames:
                raise EntityTableError(f"{path}: needs a 'ticker' column, found {reader.fieldnames}")
            return [_company_from_row(path, reader.line_num, row) for row in reader]
    except OSError as err:
        raise EntityTableError(f"{path}: cannot read the alias table: {err}") from err
    except (UnicodeDecodeError, csv.Error) as err:
        raise EntityTableError(f"{path}: not a UTF-8 CSV file: {err}") from err


def _company_from_row(path: Path, line: int, row: dict[str, str | None]) -> Company:
    def cell(column: str) -> str:
        return (row.get(column) or "").strip()

    ticker = normalize_ticker(cell("ticker"))
    if not ticker:
        raise EntityTableError(f"{path}:{line}: empty ticker")
    aliases = [alias.strip() for alias in cell("aliases").split("|") if alias.strip()]
    if cell("alias"):
        aliases.append(cell("alias"))
    return Company(
        ticker=ticker, name=cell("name"), aliases=tuple(aliases), market=cell("market"), sector=cell("sector")
    )


def _merged(known: Company, extra: Company) -> Company:
    extra_names = [extra.name] if extra.name and extra.name != known.name else []
    return Company(
        ticker=known.ticker,
        name=known.name or extra.name,
        aliases=tuple(dict.fromkeys([*known.aliases, *extra_names, *extra.aliases])),
        market=extra.market or known.market,
        sector=extra.sector or known.sector,
    )
