import pytest
from wraptext import fill, wrap


def test_empty_text():
    assert wrap("", 10) == []
    assert wrap("   \n  ", 10) == []


def test_width_must_be_positive():
    with pytest.raises(ValueError):
        wrap("abc", 0)


def test_greedy_fill_collapses_whitespace():
    assert wrap("the  quick\tbrown fox jumps", 12) == ["the quick", "brown fox", "jumps"]


def test_long_word_is_split():
    assert wrap("a abcdefghij b", 5) == ["a", "abcde", "fghij", "b"]


def test_paragraphs_are_kept():
    assert wrap("one two\n\n\nthree", 20) == ["one two", "", "three"]


def test_line_of_exactly_width_is_kept():
    assert wrap("hello world", 11) == ["hello world"]


def test_lines_fill_up_to_width():
    text = "aaa bbb ccc ddd eee fff"
    assert wrap(text, 7) == ["aaa bbb", "ccc ddd", "eee fff"]


def test_last_chunk_of_long_word_shares_a_line():
    assert wrap("a abcdefghij b", 4) == ["a", "abcd", "efgh", "ij b"]


def test_fill_exact_fit_paragraphs():
    assert fill("ab cd\n\nef gh ij", 5) == "ab cd\n\nef gh\nij"
