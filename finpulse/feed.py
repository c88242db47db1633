"""The built-in feed: a seeded generator of finance news and social posts about the bundled companies.

The feed simulates a span of market time (6 hours by default) so that the demo, sent in a few minutes,
fills hourly windows and the 5-minute windows' baselines. Event times advance evenly with a little
jitter, and about one event in a hundred arrives 30 s to 5 min late (out of order).

Every company has a stable opinion mix (bullish/neutral/bearish) and a stable share of the chatter.
Both are spread evenly over time (smooth weighted round-robin) instead of drawn independently per
event, so a company's count and sentiment per 5-minute window stay near their mean and a steady feed
does not look like a shock by chance. With the defaults the eight ``SHOCK_CANDIDATES`` get about 15
events per 5-minute window each and every other company fewer; the shock burst puts about 180 events
per 5-minute window, around 90% of them bearish, on the shocked ticker.

Scenarios (``SCENARIOS``):

* ``steady`` — 20,000 events: mixed opinion, stable per company.
* ``shock``  — 20,000 events: the steady feed plus a burst of strongly negative posts and news about
  one ticker (5% of all events, inside 30 minutes starting 60% into the span). The ticker is
  ``shocked_ticker("shock", seed)`` unless one is given. The burst comes on top of the normal flow,
  so the other companies' volume and sentiment do not move.

At 1–2k events/s through the whole pipeline a default scenario takes 10–20 s of processing.

The same scenario, seed, event count, start and span always give the same events (ids included):
``{scenario}-{seed}-{index:06d}``. Without ``start`` the span ends at the start of the current UTC hour.

Example:
    >>> start = datetime(2025, 3, 3, 9, tzinfo=UTC)
    >>> events = generate("shock", events=200, seed=7, start=start)
    >>> len(events), events[0].id, to_message(events[0])[0] in ("news.raw", "social.raw")
    (200, 'shock-7-000000', True)
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from finpulse.entities import Company, bundled_companies, needs_exact_case
from finpulse.schemas import Label, NewsArticle, SocialPost

T = TypeVar("T")

NEWS_TOPIC = "news.raw"
SOCIAL_TOPIC = "social.raw"


@dataclass(frozen=True)
class Shock:
    """A burst of negative events about one ticker.

    ``ticker`` None means one of ``SHOCK_CANDIDATES`` picked by the seed; ``start`` is a fraction of
    the span; ``share`` is the fraction of all events that belong to the burst.
    """

    ticker: str | None = None
    start: float = 0.6
    duration: timedelta = timedelta(minutes=30)
    share: float = 0.05
    bearish: float = 0.9

    def __post_init__(self) -> None:
        if not 0 <= self.start < 1:
            raise ValueError(f"shock start must be a fraction of the span in [0, 1), got {self.start}")
        if not 0 < self.share < 1 or not 0 <= self.bearish <= 1:
            raise ValueError(
                f"shock share must be in (0, 1) and bearish in [0, 1], got {self.share}, {self.bearish}"
            )


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    default_events: int
    span: timedelta = timedelta(hours=6)
    news_share: float = 0.25
    shock: Shock | None = None


SCENARIOS: dict[str, Scenario] = {
    "steady": Scenario("steady", "mixed news and posts, stable opinion per company", default_events=20_000),
    "shock": Scenario(
        "shock",
        "the steady feed plus a burst of strongly negative news and posts about one ticker",
        default_events=20_000,
        shock=Shock(),
    ),
}

# Heavily discussed names: a shock on one of them has a baseline to stand out against.
SHOCK_CANDIDATES = ("AAPL", "TSLA", "NVDA", "MSFT", "AMZN", "META", "BABA", "0700.HK")
# Relative share of the chatter; every other company gets 1 to 3.
_POPULARITY = {ticker: 24 for ticker in SHOCK_CANDIDATES} | {
    "GOOGL": 6, "AMD": 6, "PLTR": 5, "3690.HK": 4, "1810.HK": 4, "1211.HK": 4, "PDD": 4, "NIO": 4,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """A generated event with what it was generated to say: the stance and the tickers it is about."""

    event: NewsArticle | SocialPost
    stance: Label
    tickers: tuple[str, ...]
    shock: bool


def get_scenario(scenario: str | Scenario) -> Scenario:
    if isinstance(scenario, Scenario):
        return scenario
    try:
        return SCENARIOS[scenario]
    except KeyError:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}") from None


def shocked_ticker(scenario: str | Scenario, seed: int, *, ticker: str | None = None) -> str | None:
    """The ticker a scenario shocks for this seed (``ticker`` overrides it); None without a shock."""
    shock = get_scenario(scenario).shock
    if shock is None:
        return None
    chosen = ticker or shock.ticker
    if chosen is None:
        return random.Random(f"finpulse-shock:{seed}").choice(SHOCK_CANDIDATES)
    known = {company.ticker for company in bundled_companies()}
    if chosen not in known:
        raise ValueError(f"shock ticker {chosen!r} is not in the bundled company table")
    return chosen


def default_start(span: timedelta, now: datetime | None = None) -> datetime:
    """Start of a span that ends at the start of the current UTC hour."""
    hour = (now or datetime.now(UTC)).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return hour - span


def generate(
    scenario: str | Scenario = "steady",
    *,
    events: int | None = None,
    seed: int = 0,
    start: datetime | None = None,
    span: timedelta | None = None,
    shock_ticker: str | None = None,
) -> list[NewsArticle | SocialPost]:
    """The scenario's events in send order (event times ascend apart from jitter and a few late events)."""
    labeled = generate_labeled(
        scenario, events=events, seed=seed, start=start, span=span, shock_ticker=shock_ticker
    )
    return [item.event for item in labeled]


def generate_labeled(
    scenario: str | Scenario = "steady",
    *,
    events: int | None = None,
    seed: int = 0,
    start: datetime | None = None,
    span: timedelta | None = None,
    shock_ticker: str | None = None,
) -> list[FeedEvent]:
    """Like ``generate``, with each event's intended stance and tickers (for tests and evaluation)."""
    plan = get_scenario(scenario)
    count = plan.default_events if events is None else events
    if count < 0:
        raise ValueError(f"events must be >= 0, got {count}")
    span = plan.span if span is None else span
    if span <= timedelta(0):
        raise ValueError(f"span must be positive, got {span}")
    start = _aware(start) if start is not None else default_start(span)
    writer = _Writer(
        plan, seed, shocked_ticker(plan, seed, ticker=shock_ticker), spacing=span / max(count, 1)
    )
    slots = _schedule(plan, count, start, span)
    return [writer.write(index, at, is_shock) for index, (at, is_shock) in enumerate(slots)]


def to_message(event: NewsArticle | SocialPost) -> tuple[str, bytes, bytes]:
    """``(topic name without prefix, key, value)`` for publishing one event: keyed by its id, JSON value."""
    topic = NEWS_TOPIC if isinstance(event, NewsArticle) else SOCIAL_TOPIC
    return topic, event.id.encode(), event.model_dump_json().encode()


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"start must be timezone-aware, got {moment.isoformat()}")
    return moment.astimezone(UTC)


def _schedule(plan: Scenario, count: int, start: datetime, span: timedelta) -> list[tuple[datetime, bool]]:
    """Evenly spaced send slots: the base flow over the span, the shock burst on top inside its window."""
    shock = plan.shock
    shock_count = round(count * shock.share) if shock else 0
    base_count = count - shock_count
    slots = [(start + span * ((i + 0.5) / base_count), False) for i in range(base_count)]
    if shock and shock_count:
        shock_start = start + span * shock.start
        duration = min(shock.duration, start + span - shock_start)
        slots += [(shock_start + duration * ((i + 0.5) / shock_count), True) for i in range(shock_count)]
    slots.sort(key=lambda slot: slot[0])
    return slots


class _Cycle(Generic[T]):
    """Items in proportion to their weights, each spread evenly over the cycle (smooth weighted round-robin).

    Independent draws would let a company's count and opinion per window wander by chance; an even
    spread keeps them at their mean, so a steady feed cannot look like a shock. The seed sets the phases.
    """

    def __init__(self, rng: random.Random, weighted: Sequence[tuple[T, int]]) -> None:
        total = sum(weight for _, weight in weighted)
        current = [rng.uniform(0, total) for _ in weighted]
        self._order: list[T] = []
        for _ in range(total):
            for index, (_, weight) in enumerate(weighted):
                current[index] += weight
            chosen = max(range(len(weighted)), key=current.__getitem__)
            current[chosen] -= total
            self._order.append(weighted[chosen][0])
        self._next = 0

    def draw(self) -> T:
        item = self._order[self._next]
        self._next = (self._next + 1) % len(self._order)
        return item


class _Writer:
    """Turns send slots into events; all randomness comes from one seeded generator."""

    def __init__(self, plan: Scenario, seed: int, shock_ticker: str | None, spacing: timedelta) -> None:
        self._plan = plan
        self._seed = seed
        self._rng = random.Random(f"finpulse-feed:{plan.name}:{seed}")
        self._companies = {company.ticker: company for company in bundled_companies()}
        self._tickers = _Cycle(self._rng, [(t, _popularity(self._rng, t)) for t in self._companies])
        self._stances = {ticker: _stance_bag(self._rng) for ticker in self._companies}
        self._shock_ticker = shock_ticker
        self._shock_bearish = plan.shock.bearish if plan.shock else 0.0
        self._shock_cause = self._rng.choice(_SHOCK_CAUSES)
        self._spacing = spacing

    def write(self, index: int, scheduled: datetime, is_shock: bool) -> FeedEvent:
        rng = self._rng
        at = self._event_time(scheduled)
        event_id = f"{self._plan.name}-{self._seed}-{index:06d}"
        if is_shock and self._shock_ticker:
            stance: Label = "bearish" if rng.random() < self._shock_bearish else "neutral"
            companies = [self._companies[self._shock_ticker]]
            news = rng.random() < 0.3
        else:
            first = self._tickers.draw()
            stance = self._stances[first].draw()
            companies = [self._companies[first]]
            if rng.random() < 0.08:
                second = self._tickers.draw()
                if second != first:
                    companies.append(self._companies[second])
            news = rng.random() < self._plan.news_share
        fields = self._fields(companies)
        if news:
            event: NewsArticle | SocialPost = self._news(event_id, at, stance, companies, fields, is_shock)
        else:
            event = self._post(event_id, at, stance, companies, fields, is_shock)
        return FeedEvent(event, stance, tuple(c.ticker for c in companies), is_shock)

    def _event_time(self, scheduled: datetime) -> datetime:
        rng = self._rng
        at = scheduled + self._spacing * rng.uniform(-0.4, 0.4)
        if rng.random() < 0.01:
            at -= timedelta(seconds=rng.uniform(30, 300))
        return at.replace(microsecond=at.microsecond // 1000 * 1000)

    def _fields(self, companies: list[Company]) -> dict[str, str]:
        rng = self._rng
        first = companies[0]
        second = companies[-1]
        return {
            "name": first.name,
            "name2": second.name,
            "ticker": first.ticker,
            "cashtag": _cashtag(rng, first),
            "cashtag2": _cashtag(rng, second),
            "casual": _casual_name(rng, first),
            "product": rng.choice(_PRODUCTS.get(first.sector, _PRODUCTS[""])),
            "sector": _SECTOR_WORDS.get(first.sector, "equity"),
            "broker": rng.choice(_BROKERS),
            "cause": self._shock_cause,
            "pct": f"{rng.uniform(1.2, 9.5):.1f}",
            "bigpct": f"{rng.uniform(14, 42):.0f}",
            "pct2": f"{rng.randint(5, 60)}",
            "pt": f"{rng.randint(40, 900)}",
            "amount": f"{rng.randint(1, 40)}",
            "jobs": f"{rng.randint(5, 120) * 100:,}",
            "weekday": rng.choice(_WEEKDAYS),
            "month": rng.choice(_MONTHS),
            "conference": rng.choice(_CONFERENCES),
            "e": "",
        }

    def _news(
        self,
        event_id: str,
        at: datetime,
        stance: Label,
        companies: list[Company],
        fields: dict[str, str],
        shock: bool,
    ) -> NewsArticle:
        rng = self._rng
        templates = _SHOCK_NEWS[stance] if shock else (_PAIR_NEWS if len(companies) > 1 else _NEWS)[stance]
        headline = rng.choice(templates).format(**fields)
        opener, closer = rng.choice(_BODY_OPENERS[stance]), rng.choice(_BODY_CLOSERS[stance])
        body = f"{opener} {closer}".format(**fields)
        outlet = rng.choice(_OUTLETS_ASIA if companies[0].market in ("HK", "CN") else _OUTLETS_US)
        return NewsArticle(
            id=event_id,
            source=outlet,
            published_at=at,
            headline=headline,
            body=body,
            url=f"https://www.{_OUTLET_DOMAINS[outlet]}/markets/{_slug(headline)}-{event_id}",
            tickers=[company.ticker for company in companies],
        )

    def _post(
        self,
        event_id: str,
        at: datetime,
        stance: Label,
        companies: list[Company],
        fields: dict[str, str],
        shock: bool,
    ) -> SocialPost:
        rng = self._rng
        templates = _SHOCK_POSTS[stance] if shock else (_PAIR_POSTS if len(companies) > 1 else _POSTS)[stance]
        fields["e"] = rng.choice(_EMOJI[stance])
        text = rng.choice(templates).format(**fields)
        platform = rng.choices(_PLATFORMS, weights=(5, 3, 2))[0]
        if platform == "reddit":
            text = f"{text} {rng.choice(_REDDIT_TAILS[stance])}"
        return SocialPost(
            id=event_id,
            platform=platform,
            author=_author(rng),
            created_at=at,
            text=text,
            # StockTwits tags messages with symbols; X and Reddit leave linking to the pipeline.
            tickers=[company.ticker for company in companies] if platform == "stocktwits" else None,
        )


def _popularity(rng: random.Random, ticker: str) -> int:
    return _POPULARITY.get(ticker) or rng.choice((1, 1, 2, 2, 3))


def _stance_bag(rng: random.Random) -> _Cycle[Label]:
    # A short cycle: a busy company's 5-minute window holds about one, so its opinion barely wanders.
    bullish = rng.randint(3, 4)
    bearish = rng.randint(1, 2)
    mix: list[tuple[Label, int]] = [
        ("bullish", bullish),
        ("bearish", bearish),
        ("neutral", 10 - bullish - bearish),
    ]
    return _Cycle(rng, mix)


def _cashtag(rng: random.Random, company: Company) -> str:
    ticker = company.ticker
    if company.market == "HK" and ticker.startswith("0") and ticker[1] != "0" and rng.random() < 0.3:
        ticker = ticker[1:]  # "$700.HK" is as common as "$0700.HK"
    elif ticker.isalpha() and rng.random() < 0.15:
        ticker = ticker.lower()
    return f"${ticker}"


def _casual_name(rng: random.Random, company: Company) -> str:
    if not needs_exact_case(company.name) and rng.random() < 0.3:
        return company.name.lower()
    return company.name


def _author(rng: random.Random) -> str:
    number = rng.randint(1, 999) if rng.random() < 0.6 else ""
    return f"{rng.choice(_HANDLE_FIRST)}_{rng.choice(_HANDLE_SECOND)}{number}"


def _slug(headline: str) -> str:
    words = "".join(c if c.isalnum() else " " for c in headline.lower()).split()
    return "-".join(words[:8])


_PLATFORMS = ("x", "stocktwits", "reddit")
_OUTLETS_US = ("reuters", "bloomberg", "wsj", "cnbc", "ft", "reuters", "bloomberg")
_OUTLETS_ASIA = ("reuters", "bloomberg", "caixin", "scmp", "ft", "caixin", "scmp")
_OUTLET_DOMAINS = {
    "reuters": "reuters.com",
    "bloomberg": "bloomberg.com",
    "wsj": "wsj.com",
    "cnbc": "cnbc.com",
    "ft": "ft.com",
    "caixin": "caixinglobal.com",
    "scmp": "scmp.com",
}
# None of these is in the company table: a broker in a headline must not become a second ticker.
_BROKERS = (
    "Barclays", "UBS", "Deutsche Bank", "Jefferies", "Bernstein", "Evercore ISI", "Wedbush", "Piper Sandler",
    "Mizuho", "Needham", "CLSA", "CICC", "Macquarie", "Nomura", "Daiwa", "Bernstein", "Raymond James",
)  # fmt: skip
_SHOCK_CAUSES = (
    "an accounting scandal",
    "a short-seller report alleging fraud",
    "a massive data breach",
    "a safety recall",
    "the CEO's sudden resignation",
    "an antitrust lawsuit",
)
_SECTOR_WORDS = {
    "Information Technology": "tech",
    "Communication Services": "media",
    "Consumer Discretionary": "consumer",
    "Consumer Staples": "consumer staples",
    "Financials": "financial",
    "Health Care": "healthcare",
    "Energy": "energy",
    "Industrials": "industrial",
    "Materials": "mining",
    "Real Estate": "property",
    "Utilities": "utility",
}
_PRODUCTS = {
    "Information Technology": ("cloud", "chip", "AI server", "software", "data center", "smartphone"),
    "Communication Services": ("advertising", "streaming", "subscriber", "gaming", "wireless"),
    "Consumer Discretionary": ("EV", "e-commerce", "travel", "restaurant", "sportswear"),
    "Consumer Staples": ("beverage", "grocery", "household goods", "liquor"),
    "Financials": ("lending", "trading", "wealth management", "payments", "insurance"),
    "Health Care": ("drug", "vaccine", "medical device", "obesity drug"),
    "Energy": ("oil", "natural gas", "refining"),
    "Industrials": ("aircraft", "defense", "freight", "equipment", "battery"),
    "Materials": ("copper", "gold"),
    "Real Estate": ("property", "leasing"),
    "Utilities": ("power", "renewables"),
    "": ("core business",),
}
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
_MONTHS = ("March", "April", "June", "September", "October", "November")
_CONFERENCES = (
    "an industry conference",
    "its annual developer conference",
    "a Hong Kong investor forum",
    "CES",
)
_HANDLE_FIRST = (
    "bullish", "diamond", "value", "macro", "quant", "degen", "patient", "contrarian", "tendie", "chart",
    "options", "dividend", "swing", "hk", "asia", "momentum",
)  # fmt: skip
_HANDLE_SECOND = (
    "trader",
    "ape",
    "investor",
    "hunter",
    "bull",
    "bear",
    "whale",
    "analyst",
    "capital",
    "desk",
)
_EMOJI: dict[str, tuple[str, ...]] = {
    "bullish": ("🚀", "📈", "💎🙌", "🔥", "💰", "🐂", "🚀🚀"),
    "bearish": ("📉", "🩸", "🐻", "💀", "😬", "🔻"),
    "neutral": ("🤔", "👀", "📊", "⏳", ""),
}

_NEWS: dict[str, tuple[str, ...]] = {
    "bullish": (
        "{name} shares jump {pct}% after quarterly results beat estimates",
        "{name} raises full-year outlook on strong {product} demand",
        "{broker} upgrades {name} to buy, lifts price target to ${pt}",
        "{name} announces ${amount} billion share buyback",
        "{name} posts record quarterly revenue as {product} sales surge",
        "{name} wins ${amount} billion {product} contract",
        "{name} stock hits all-time high on upbeat {product} outlook",
        "{name} profit rises {pct2}%, tops analyst forecasts",
    ),
    "bearish": (
        "{name} shares slide {pct}% as revenue misses forecasts",
        "{broker} downgrades {name} to sell, cites weakening {product} demand",
        "{name} cuts outlook, warns of slowing {product} sales",
        "{name} faces regulatory probe over {product} practices",
        "{name} to cut {jobs} jobs as profit falls",
        "{name} profit drops {pct2}%, misses estimates",
        "{name} stock falls to 52-week low amid {product} slump",
    ),
    "neutral": (
        "{name} to report quarterly results on {weekday}",
        "{name} names new chief financial officer",
        "{name} schedules investor day for {month}",
        "{name} to present at {conference}",
        "{name} completes previously announced debt offering",
        "{name} files annual report with regulators",
        "{name} board declares regular quarterly dividend",
    ),
}
_PAIR_NEWS: dict[str, tuple[str, ...]] = {
    "bullish": (
        "{name} and {name2} lead gains in {sector} stocks",
        "{name}, {name2} rally as {sector} shares rebound",
    ),
    "bearish": (
        "{name} and {name2} drag {sector} stocks lower",
        "{name}, {name2} slump as {sector} selloff deepens",
    ),
    "neutral": (
        "{name} and {name2} in talks over {product} partnership",
        "{name} and {name2} to report results next week",
    ),
}
_SHOCK_NEWS: dict[str, tuple[str, ...]] = {
    "bearish": (
        "{name} shares plunge {bigpct}% after {cause}",
        "{name} stock tumbles as {cause} rattles investors",
        "Regulators step up scrutiny of {name} after {cause}",
        "{name} suspends guidance following {cause}",
        "{broker} slashes {name} price target to ${pt}, cuts to sell after {cause}",
        "{name} loses ${amount} billion in market value after {cause}",
        "{name} sell-off deepens as fallout from {cause} spreads",
    ),
    "neutral": (
        "{name} says it is reviewing reports of {cause}",
        "{name} to hold call with investors on {weekday}",
    ),
}
_BODY_OPENERS: dict[str, tuple[str, ...]] = {
    "bullish": (
        "Shares of {name} rose {pct}% in early trading.",
        "{name} stock climbed {pct}% after the announcement.",
    ),
    "bearish": (
        "Shares of {name} fell {pct}% in early trading.",
        "{name} stock dropped {pct}% after the announcement.",
    ),
    "neutral": (
        "Shares of {name} were little changed in early trading.",
        "{name} made the announcement in a statement on {weekday}.",
    ),
}
_BODY_CLOSERS: dict[str, tuple[str, ...]] = {
    "bullish": (
        "Analysts at {broker} said the results showed strong {product} momentum.",
        "The company said demand for its {product} business remained robust.",
    ),
    "bearish": (
        "Analysts at {broker} flagged mounting risks to {product} margins.",
        "The company warned that {product} demand would stay weak this year.",
    ),
    "neutral": (
        "The company did not comment further.",
        "Analysts at {broker} kept their rating unchanged.",
    ),
}
_POSTS: dict[str, tuple[str, ...]] = {
    "bullish": (
        "{cashtag} to the moon {e}",
        "loading up on {cashtag} calls, this breakout is real {e}",
        "{casual} crushed earnings, {cashtag} going way higher {e}",
        "bought the dip on {cashtag}. LFG {e}",
        "{cashtag} {product} numbers are insane, long and strong {e}",
        "ngl {cashtag} looks super strong here, adding more {e}",
        "{casual} is a beast, new highs incoming {e}",
        "diamond hands on {cashtag} {e} this is just the beginning",
        "{cashtag} up {pct}% today and still cheap imo {e}",
        "analysts upgrading {cashtag} left and right, very bullish {e}",
    ),
    "bearish": (
        "{cashtag} looks terrible, dumping my shares {e}",
        "{cashtag} puts printing {e}",
        "{casual} guidance was a disaster, selling all my {cashtag}",
        "{cashtag} breaking down hard, bagholders everywhere {e}",
        "this {cashtag} chart is ugly af, going short {e}",
        "{cashtag} down {pct}% and falling, get out while you can {e}",
        "{casual} is losing the {product} race, bearish {e}",
        "cut my losses on {cashtag}, weak demand and zero growth",
        "{cashtag} is overvalued garbage, shorting more {e}",
    ),
    "neutral": (
        "anyone watching {cashtag} today? {e}",
        "{cashtag} earnings next week, what are you expecting?",
        "holding {cashtag} for now, no changes to my position",
        "{cashtag} flat premarket {e}",
        "what's the consensus PT on {cashtag}?",
        "{casual} investor day is on {weekday}, watching {cashtag} {e}",
        "{cashtag} volume looks normal today",
        "reading the {casual} 10-Q tonight {e}",
    ),
}
_PAIR_POSTS: dict[str, tuple[str, ...]] = {
    "bullish": (
        "{cashtag} and {cashtag2} both ripping today {e}",
        "long {cashtag} and {cashtag2}, best setups right now {e}",
    ),
    "bearish": (
        "{cashtag} and {cashtag2} getting crushed {e}",
        "shorting {cashtag} and {cashtag2} into earnings {e}",
    ),
    "neutral": (
        "{cashtag} or {cashtag2}, which one for the long term?",
        "watching {cashtag} and {cashtag2} this week {e}",
    ),
}
_SHOCK_POSTS: dict[str, tuple[str, ...]] = {
    "bearish": (
        "{cashtag} is collapsing {e}{e} {cause} is a disaster",
        "get out of {cashtag} now, {cause} confirmed {e}",
        "{cashtag} down {bigpct}% wtf {e}",
        "{cause} at {casual}?? dumping everything, {cashtag} is done {e}",
        "{cashtag} crashing hard, absolute bloodbath {e}{e}",
        "{cashtag} bagholders rn {e}{e}{e}",
        "wow {casual} just lost {bigpct}% of its value after {cause} {e}",
        "selling every share of {cashtag}, this is a fraud story {e}",
    ),
    "neutral": (
        "what is going on with {cashtag}?? {e}",
        "{cashtag} halted, anyone know why? {e}",
    ),
}
_REDDIT_TAILS: dict[str, tuple[str, ...]] = {
    "bullish": ("Position: 200 shares, adding on dips.", "Not financial advice but I like the stock."),
    "bearish": ("Position: puts expiring next month.", "Not financial advice, just my read of the numbers."),
    "neutral": ("Curious what this sub thinks.", "No position yet, just doing DD."),
}
