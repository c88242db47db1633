"""Alert rules files: what validates, and errors that name the file, line, rule and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from finpulse.rules import (
    BuzzSpikeRule,
    NewsEventRule,
    RuleProblem,
    RulesError,
    SentimentZRule,
    SignFlipRule,
    default_rules_path,
    load_rules,
    load_rules_for,
    parse_duration,
    parse_rules,
)
from finpulse.settings import Settings

INDEX_WINDOWS = (60, 300, 3600, 86400)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _problems(path: Path) -> list[RuleProblem]:
    with pytest.raises(RulesError) as caught:
        load_rules(path, index_windows=INDEX_WINDOWS)
    assert str(path) in str(caught.value)
    return caught.value.problems


def test_the_packaged_rules_load_and_cover_every_kind() -> None:
    rules = load_rules_for(Settings())
    assert {type(rule) for rule in rules} == {SentimentZRule, BuzzSpikeRule, SignFlipRule, NewsEventRule}
    crash = next(rule for rule in rules if isinstance(rule, SentimentZRule))
    # the guards the feed's shock/steady scenarios need (see the file's comments)
    assert crash.min_buzz >= 20 and crash.threshold <= -3 and crash.max_net_sentiment is not None
    assert default_rules_path().name == "alert_rules.yaml"


def test_the_settings_path_replaces_the_packaged_rules(tmp_path: Path) -> None:
    path = _write(tmp_path, "mine.yaml", "rules:\n  - {name: only, kind: buzz_spike, threshold: 5, window: 1h}\n")
    rules = load_rules_for(Settings(alert_rules_path=path))
    assert [(rule.name, rule.window) for rule in rules] == [("only", 3600)]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90), ("90", 90), ("90s", 90), ("5m", 300), ("1h30m", 5400), ("1d", 86400), ("1.5h", 5400)],
)
def test_durations_are_seconds_or_unit_strings(text: object, seconds: int) -> None:
    assert parse_duration(text) == seconds


def test_a_well_formed_file_gets_its_defaults_and_normalized_keys(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "rules.yml",
        """
rules:
  - name: crash
    kind: sentiment_z
    threshold: -3
    min_buzz: 20
    keys: [aapl, $tsla]
  - name: news
    kind: news_event
    keys: [$nvda, 0700.hk]
    max_score: -0.9
    keywords: [fraud]
""",
    )
    crash, news = load_rules(path, index_windows=INDEX_WINDOWS)
    assert isinstance(crash, SentimentZRule) and isinstance(news, NewsEventRule)
    assert (crash.scope, crash.window, crash.cooldown, crash.direction, crash.severity) == (
        "ticker", 300, 3600, "below", "warning",
    )  # fmt: skip
    assert crash.keys == ("AAPL", "TSLA") and crash.watches("AAPL") and not crash.watches("MSFT")
    assert news.keys == ("NVDA", "0700.HK")
    assert news.mentions_keyword("Regulators probe FRAUDULENT accounts") and not news.mentions_keyword("defraud")


def test_a_bad_field_is_reported_with_its_line_rule_and_field(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "rules.yaml",
        """rules:
  - name: crash
    kind: sentiment_z
    window: 5m
    threshold: very low
    min_buzz: 20
""",
    )
    [problem] = _problems(path)
    assert (problem.line, problem.rule, problem.field) == (5, "crash", "threshold")
    assert "valid number" in problem.message and "'very low'" in problem.message


def test_every_problem_of_a_file_is_listed_in_one_error(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "rules.yaml",
        """rules:
  - name: crash
    kind: sentiment_z
    window: 7m
    threshold: -3
  - name: spike
    kind: buzz_spike
    threshold: 4
    cooldwn: 1h
  - name: mystery
    kind: sentiment_jump
  - name: flip
    kind: sign_flip
    cooldown: soon
  - name: up
    kind: sentiment_z
    direction: above
    threshold: -2
  - kind: news_event
    keys: [AAPL]
    max_score: -0.9
""",
    )
    problems = _problems(path)
    located = [(p.line, p.rule, p.field) for p in problems]
    assert located == [
        (4, "crash", "window"),
        (9, "spike", "cooldwn"),
        (11, "mystery", "kind"),
        (14, "flip", "cooldown"),
        (18, "up", "threshold"),
        (19, "#6", "name"),
    ]
    messages = {p.field: p.message for p in problems}
    assert "no 420s window" in messages["window"] and "300s" in messages["window"]
    assert "Extra inputs" in messages["cooldwn"]
    assert "sentiment_jump" in messages["kind"] and "sentiment_z" in messages["kind"]
    assert "'soon' is not a duration" in messages["cooldown"]
    assert "positive threshold" in messages["threshold"]
    text = str(RulesError(str(path), problems))
    assert "line 4, rule 'crash', field 'window'" in text and "line 19, rule #6, field 'name'" in text


def test_duplicate_rule_names_are_refused_at_the_second_one(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "rules.yaml",
        "rules:\n  - {name: a, kind: buzz_spike, threshold: 4}\n  - {name: a, kind: buzz_spike, threshold: 5}\n",
    )
    [problem] = _problems(path)
    assert (problem.line, problem.rule, problem.field) == (3, "a", "name") and "unique" in problem.message


def test_a_yaml_syntax_error_names_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "rules.yaml", "rules:\n  - name: a\n    kind: [buzz_spike\n  - name: b\n")
    [problem] = _problems(path)
    assert problem.line is not None and problem.line >= 3 and "not valid YAML" in problem.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "Input should be a valid dictionary"),
        ("- name: a\n", "Input should be a valid dictionary"),
        ("rule: []\n", "Field required"),
    ],
)
def test_a_file_without_a_rules_list_says_so(tmp_path: Path, text: str, expected: str) -> None:
    problems = _problems(_write(tmp_path, "rules.yaml", text))
    assert any(expected in p.message for p in problems)


def test_toml_rules_validate_the_same_with_lines_found_in_the_text(tmp_path: Path) -> None:
    good = _write(
        tmp_path,
        "rules.toml",
        '[[rules]]\nname = "crash"\nkind = "sentiment_z"\nthreshold = -3.0\nmin_buzz = 20\ncooldown = "2h"\n',
    )
    [rule] = load_rules(good, index_windows=INDEX_WINDOWS)
    assert isinstance(rule, SentimentZRule) and rule.cooldown == 7200
    bad = _write(
        tmp_path,
        "bad.toml",
        '[[rules]]\nname = "crash"\nkind = "sentiment_z"\nthreshold = -3.0\n\n'
        '[[rules]]\nname = "flip"\nkind = "sign_flip"\n# comment\nwindow = "2h"\n',
    )
    [problem] = _problems(bad)
    assert (problem.line, problem.rule, problem.field) == (10, "flip", "window")
    broken = _write(tmp_path, "broken.toml", '[[rules]]\nname = "a\n')
    [problem] = _problems(broken)
    assert problem.line == 2 and "not valid TOML" in problem.message


def test_missing_files_and_unknown_types_are_clear_errors(tmp_path: Path) -> None:
    [missing] = _problems(tmp_path / "nowhere.yaml")
    assert "cannot read the file" in missing.message
    [unknown] = _problems(_write(tmp_path, "rules.json", "{}"))
    assert ".yaml, .yml or .toml" in unknown.message


def test_rules_are_checked_against_the_index_windows_only_when_given() -> None:
    text = "rules:\n  - {name: a, kind: buzz_spike, threshold: 4, window: 2h}\n"
    assert parse_rules(text)[0].window == 7200
    with pytest.raises(RulesError, match="no 7200s window"):
        parse_rules(text, index_windows=INDEX_WINDOWS)
