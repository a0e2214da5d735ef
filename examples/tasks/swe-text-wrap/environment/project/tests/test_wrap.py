import pytest
from wraptext import wrap


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
