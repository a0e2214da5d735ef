from semverlite import max_satisfying, satisfies


def test_caret_ranges():
    assert satisfies("1.4.0", "^1.2.0")
    assert not satisfies("2.0.0", "^1.2.0")
    assert satisfies("0.2.5", "^0.2.3") and not satisfies("0.3.0", "^0.2.3")


def test_tilde_and_x_ranges():
    assert satisfies("1.9.9", "~1.9") and not satisfies("1.10.0", "~1.9")
    assert satisfies("3.7.1", "3.x") and not satisfies("4.0.0", "3.x")


def test_comparators_and_alternatives():
    assert satisfies("1.5.0", ">=1.2.0 <2.0.0")
    assert satisfies("3.0.0", "<1.0.0 || >=3.0.0")
    assert not satisfies("2.0.0", "<1.0.0 || >=3.0.0")


def test_prereleases_only_match_same_core():
    assert satisfies("1.2.3-beta.1", ">=1.2.3-alpha.1 <1.3.0")
    assert not satisfies("1.2.4-beta.1", ">=1.2.3-alpha.1 <1.3.0")


def test_max_satisfying_release():
    assert max_satisfying(["1.0.0", "1.9.9", "1.10.0", "2.0.0"], "^1.0.0") == "1.10.0"
