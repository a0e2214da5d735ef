import pytest
from semverlite import InvalidVersion, Version

V = Version.parse


def test_parse_and_str_round_trip():
    v = V("1.2.3-rc.1+build.5")
    assert (v.major, v.minor, v.patch, v.prerelease, v.build) == (1, 2, 3, ("rc", "1"), ("build", "5"))
    assert str(v) == "1.2.3-rc.1+build.5"


def test_invalid_versions():
    for text in ("1.2", "01.2.3", "1.2.3-", "1.2.3-01", "a.b.c"):
        with pytest.raises(InvalidVersion):
            V(text)


def test_core_compares_numerically():
    assert V("1.10.0") > V("1.9.0") > V("1.2.10")


def test_prerelease_is_lower_than_release():
    assert V("1.0.0-rc.1") < V("1.0.0")


def test_build_metadata_is_ignored():
    assert V("1.0.0+a") == V("1.0.0+b")


def test_spec_example_alpha_and_rc():
    order = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-rc.1", "1.0.0"]
    assert sorted(order[::-1], key=V) == order
