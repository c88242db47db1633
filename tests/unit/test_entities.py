from pathlib import Path

import pytest

from finpulse.entities import (
    EntityLinker,
    EntityTableError,
    bundled_companies,
    needs_exact_case,
    normalize_ticker,
)


@pytest.fixture(scope="module")
def linker() -> EntityLinker:
    return EntityLinker.default()


@pytest.mark.parametrize(
    ("text", "tickers"),
    [
        ("$AAPL beats estimates", ["AAPL"]),
        ("$aapl and $Msft", ["AAPL", "MSFT"]),
        ("$BRK.B and $brk-b", ["BRK.B"]),
        ("($NVDA) $NVDA's $NVDA.", ["NVDA"]),
        ("$700.HK vs $0700.hk", ["0700.HK"]),
        ("$600519.SH", ["600519.SS"]),
        ("$ALLY - Ally Financial pulls outlook", ["ALLY"]),  # unknown to the table, still a ticker
        ("$GOOG and $9988.HK", ["GOOGL", "BABA"]),  # cashtag aliases
    ],
)
def test_cashtags(linker: EntityLinker, text: str, tickers: list[str]) -> None:
    assert linker.link(text) == tickers


@pytest.mark.parametrize("text", ["costs $5 a share", "a $1.5B buyback", "US$5bn deal", "$ 100", "50$"])
def test_money_is_not_a_cashtag(linker: EntityLinker, text: str) -> None:
    assert linker.link(text) == []


@pytest.mark.parametrize(
    ("text", "tickers"),
    [
        ("Microsoft and Apple report earnings", ["MSFT", "AAPL"]),
        ("tesla deliveries beat, TESLA shares up", ["TSLA"]),
        ("Bank of America cuts Target to sell", ["BAC", "TGT"]),
        ("J.P. Morgan and JPMorgan Chase", ["JPM"]),
        ("Alibaba’s cloud unit and Moody's", ["BABA", "MCO"]),
        ("Goldman   Sachs\nsays", ["GS"]),
        ("腾讯控股 results; 比亚迪 sales", ["0700.HK", "1211.HK"]),
        ("Tencent's profit", ["0700.HK"]),
        ("Industrial and Commercial Bank of China lends more", ["1398.HK"]),
        ("reading the Home Depot 10-Q", ["HD"]),
        ("Coca-Cola and Coca Cola", ["KO"]),
        ("NVDA and AMD rally", ["NVDA", "AMD"]),
    ],
)
def test_names_and_aliases(linker: EntityLinker, text: str, tickers: list[str]) -> None:
    assert linker.link(text) == tickers


def test_order_of_first_mention_without_duplicates(linker: EntityLinker) -> None:
    assert linker.link("Microsoft, then Apple, then $MSFT again, then $AAPL") == ["MSFT", "AAPL"]


@pytest.mark.parametrize(
    "text",
    [
        "apple pie recipe",
        "APPLE PIE",
        "target date funds",
        "the oracle of omaha",
        "gm everyone",
        "nvda",  # a bare ticker needs capitals; with $ it would link
        "NOW is the time to buy",  # tickers that are common words are not bare tickers
        "COST of living",
        "ICE agents",
        "RTX 5090 benchmarks",
        "china mobile phones",
        "ping an analyst",
        "Pineapple and Applebee's",
        "mail tim@apple.com",
        "Teslas everywhere",
    ],
)
def test_no_false_positives_on_common_words(linker: EntityLinker, text: str) -> None:
    assert linker.link(text) == []


def test_exact_case_rule() -> None:
    assert needs_exact_case("Apple")  # a common word
    assert needs_exact_case("Bank of China")  # only common words
    assert needs_exact_case("GM")  # three characters or fewer
    assert needs_exact_case("HSBC")  # written in capitals
    assert not needs_exact_case("Tesla")
    assert not needs_exact_case("Morgan Stanley")


def test_normalize_ticker() -> None:
    assert normalize_ticker("$brk/b") == "BRK.B"
    assert normalize_ticker("5.hk") == "0005.HK"
    assert normalize_ticker("858.SZ") == "000858.SZ"


def test_link_many_matches_link(linker: EntityLinker) -> None:
    texts = ["$AAPL", "nothing here", "Tesla and Nvidia", ""]
    assert linker.link_many(texts) == [linker.link(text) for text in texts]


def test_text_whose_lowercase_changes_length_still_links(linker: EntityLinker) -> None:
    assert linker.link("İstanbul: Apple and $tsla") == ["AAPL", "TSLA"]


def test_bundled_table_shape(linker: EntityLinker) -> None:
    companies = linker.companies
    assert 100 <= len(companies) <= 150
    assert {company.market for company in companies.values()} == {"US", "HK", "CN"}
    assert all(company.name and company.sector for company in companies.values())
    assert linker.market_of("0700.HK") == "HK"
    assert linker.market_of("$700.hk") == "HK"
    assert linker.market_of("600519.SS") == "CN"
    assert linker.market_of("AAPL") == "US"
    assert linker.market_of("ZZZZ") is None


def test_every_bundled_name_and_alias_links_to_its_own_company(linker: EntityLinker) -> None:
    for company in bundled_companies():
        for alias in (company.name, *company.aliases):
            assert linker.link(f"news: {alias} today") == [company.ticker], alias


def test_default_is_built_once() -> None:
    assert EntityLinker.default() is EntityLinker.default()


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_user_csv_extends_the_bundled_table(tmp_path: Path) -> None:
    extra = write(
        tmp_path / "extra.csv",
        "ticker,name,aliases,market,sector\n"
        "ASTS,AST SpaceMobile,SpaceMobile|AST,US,Communication Services\n"
        "NVDA,,Team Green,,\n",
    )
    linker = EntityLinker.from_csv(extra)
    assert linker.link("AST SpaceMobile and Team Green; also spacemobile") == ["ASTS", "NVDA"]
    assert linker.market_of("ASTS") == "US"
    assert linker.link("Nvidia") == ["NVDA"]  # the bundled aliases stay
    assert "Team Green" in linker.companies["NVDA"].aliases
    assert linker.companies["NVDA"].market == "US"


def test_user_csv_in_ticker_alias_market_form(tmp_path: Path) -> None:
    extra = write(tmp_path / "aliases.csv", "ticker,alias,market\nRDDT,Reddit Inc,US\nRDDT,Reddit,US\n")
    linker = EntityLinker.default(extra_csv=[extra])
    assert linker.link("Reddit and reddit inc") == ["RDDT"]
    assert linker.link("$AAPL") == ["AAPL"]


def test_later_table_wins_an_alias(tmp_path: Path) -> None:
    extra = write(tmp_path / "override.csv", "ticker,aliases\nAPLE,Apple\n")
    assert EntityLinker.from_csv(extra).link("Apple") == ["APLE"]


def test_table_without_bundled_companies(tmp_path: Path) -> None:
    only = write(tmp_path / "only.csv", "ticker,name\nXYZ,Xyzzy Corp\n")
    linker = EntityLinker.from_csv(only, include_bundled=False)
    assert list(linker.companies) == ["XYZ"]
    assert linker.link("Xyzzy Corp and Tesla and $TSLA") == ["XYZ", "TSLA"]


def test_table_without_ticker_column_is_refused(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.csv", "symbol,name\nAAPL,Apple\n")
    with pytest.raises(EntityTableError, match="bad.csv.*ticker"):
        EntityLinker.from_csv(bad)


def test_row_without_ticker_names_the_line(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.csv", "ticker,name\nAAPL,Apple\n,Nameless\n")
    with pytest.raises(EntityTableError, match=r"bad.csv:3: empty ticker"):
        EntityLinker.from_csv(bad)


def test_missing_table_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EntityTableError, match="cannot read"):
        EntityLinker.from_csv(tmp_path / "missing.csv")
