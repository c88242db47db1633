import numpy as np

from finpulse.models.tokenization import bucketed_batches, length_buckets, load_tokenizer, pad_bucket
from finpulse.models.weights import default_base_model


def test_buckets_cover_every_row_once_sorted_by_length() -> None:
    lengths = np.array([5, 1, 9, 3, 3, 7, 2])
    buckets = length_buckets(lengths, batch_size=3)
    assert [len(b) for b in buckets] == [3, 3, 1]
    assert sorted(np.concatenate(buckets).tolist()) == list(range(7))
    assert [lengths[b].tolist() for b in buckets] == [[1, 2, 3], [3, 5, 7], [9]]


def test_pad_bucket_pads_to_the_longest_row_of_the_bucket() -> None:
    ids = [np.array([101, 7, 102]), np.array([101, 102]), np.array([101, 5, 6, 7, 102])]
    batch = pad_bucket(ids, np.array([1, 0]))
    assert batch.input_ids.tolist() == [[101, 102, 0], [101, 7, 102]]
    assert batch.attention_mask.tolist() == [[1, 1, 0], [1, 1, 1]]


def test_real_tokenizer_truncates_and_never_pads_on_its_own() -> None:
    tokenizer = load_tokenizer(default_base_model(), max_length=16)
    texts = ["$AAPL up", "a much longer headline " * 10, "down"]
    batches = list(bucketed_batches(tokenizer, texts, batch_size=2))
    assert [b.indices.tolist() for b in batches] == [[2, 0], [1]]  # "down" is shortest
    assert batches[0].input_ids.shape[1] < 16
    assert batches[1].input_ids.shape == (1, 16)
    assert batches[0].input_ids[0, 0] == tokenizer.token_to_id("[CLS]")
