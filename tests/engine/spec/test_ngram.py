"""Prompt-lookup drafting: which earlier occurrence proposes, and what it proposes."""

from array import array

import pytest

from grokd.engine.spec.ngram import NgramProposer


def test_proposes_what_followed_the_suffix():
    p = NgramProposer(num_tokens=3, min_n=2, max_n=3)
    #       0  1  2  3  4  5  6  7  8
    ids = [5, 6, 7, 8, 9, 1, 2, 5, 6]
    assert p.propose(ids) == [7, 8, 9]
    assert p.propose(ids, limit=2) == [7, 8]
    assert p.propose(ids, limit=0) == []


def test_longest_suffix_wins_over_a_more_recent_shorter_one():
    p = NgramProposer(num_tokens=2, min_n=1, max_n=3)
    # the 3-gram (4, 5, 6) occurred at 0 (then 10, 11); the 1-gram 6 more recently at 6 (then 12)
    ids = [4, 5, 6, 10, 11, 0, 6, 12, 3, 4, 5, 6]
    assert p.propose(ids) == [10, 11]


def test_most_recent_occurrence_of_the_same_length():
    p = NgramProposer(num_tokens=1, min_n=2, max_n=2)
    ids = [1, 2, 30, 1, 2, 40, 9, 1, 2]
    assert p.propose(ids) == [40]


def test_no_match_and_too_short():
    p = NgramProposer(num_tokens=4, min_n=2, max_n=4)
    assert p.propose([1, 2, 3, 4, 5]) == []
    assert p.propose([7, 7]) == []  # a suffix of 2 needs an earlier occurrence ending before the last token
    assert p.propose([7, 7, 7]) == [7]


def test_a_byte_match_straddling_two_tokens_is_not_a_token_match():
    p = NgramProposer(num_tokens=2, min_n=2, max_n=2)
    # as little-endian int32, (256, 256, 0) is 00 01 00 00 | 00 01 00 00 | 00 00 00 00: from byte 1
    # on it reads 01 00 00 00 01 00 00 00, the bytes of the pair (1, 1)
    ids = [256, 256, 0, 99, 1, 1]
    assert array("i", [1, 1]).tobytes() in array("i", ids[:3]).tobytes()
    assert p.propose(ids) == []
    ids = [1, 1, 42, 256, 256, 0, 99, 1, 1]  # a real (1, 1) further left still proposes
    assert p.propose(ids) == [42, 256]


def test_rejects_bad_settings():
    with pytest.raises(ValueError, match="min_n <= max_n"):
        NgramProposer(4, 3, 2)
