from wraptext import justify
from wraptext.justify import justify_line


def test_justify_line_leftmost_gaps_first():
    assert justify_line("a b c", 8) == "a   b  c"


def test_single_word_line_is_not_padded():
    assert justify_line("word", 10) == "word"


def test_justified_lines_have_full_width():
    text = "it was the best of times it was the worst of times"
    lines = justify(text, 16)
    assert all(len(line) == 16 for line in lines[:-1])
    assert " ".join(" ".join(lines).split()) == text


def test_last_line_of_paragraph_is_not_justified():
    assert justify("one two three four", 10) == ["one    two", "three four"]
