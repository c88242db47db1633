import json
from pathlib import Path

import numpy as np
import pytest

from finpulse.models.data import LabelledTexts, load_labelled, read_texts, split_dev
from finpulse.models.exceptions import DataError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_with_custom_columns_and_named_labels(tmp_path: Path) -> None:
    path = write(
        tmp_path / "d.csv",
        'id,body,sentiment\n1,"Stocks rally, again",Positive\n2,Shares slump,negative\n3,Flat,2\n',
    )
    data = load_labelled(path, text_col="body", label_col="sentiment")
    assert data.texts == ["Stocks rally, again", "Shares slump", "Flat"]
    assert data.labels.tolist() == [1, 0, 2]


def test_jsonl(tmp_path: Path) -> None:
    rows = [{"text": "up", "label": "bullish"}, {"text": "down", "label": 0}]
    path = write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert load_labelled(path).labels.tolist() == [1, 0]


def test_missing_column_names_the_columns_found(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "text,target\nhello,1\n")
    with pytest.raises(DataError, match=r"column 'label' not found \(columns: target, text\)"):
        load_labelled(path)


def test_unknown_label_names_file_row_and_value(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "text,label\nok,1\nbad,very bullish\n")
    with pytest.raises(DataError, match=r"d\.csv:3: label 'very bullish' is neither"):
        load_labelled(path)


@pytest.mark.parametrize(("name", "content"), [("empty.csv", ""), ("header.csv", "text,label\n"), ("e.jsonl", "\n")])
def test_empty_files_are_refused(tmp_path: Path, name: str, content: str) -> None:
    with pytest.raises(DataError, match="empty file|no rows"):
        load_labelled(write(tmp_path / name, content))


def test_missing_file_and_empty_text(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_labelled(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="empty text"):
        load_labelled(write(tmp_path / "d.csv", "text,label\n  ,1\n"))


def test_read_texts_needs_no_labels(tmp_path: Path) -> None:
    assert read_texts(write(tmp_path / "t.csv", "text\na\nb\n")) == ["a", "b"]


def test_dev_split_is_stratified_disjoint_and_deterministic() -> None:
    labels = np.array([0] * 100 + [1] * 200 + [2] * 700)
    data = LabelledTexts([f"t{i}" for i in range(len(labels))], labels)
    train, dev = split_dev(data, fraction=0.1)
    again_train, again_dev = split_dev(data, fraction=0.1)
    assert dev.texts == again_dev.texts and train.texts == again_train.texts
    assert sorted(train.texts + dev.texts) == sorted(data.texts)
    assert not set(train.texts) & set(dev.texts)
    assert dev.class_counts() == {"bearish": 10, "bullish": 20, "neutral": 70}
