import iniconf
import pytest
from iniconf import ConfigError


def test_typed_getters():
    cfg = iniconf.loads("[s]\nport = 8080\ndebug = yes\nnames = a, b ,c\n")
    assert cfg.getint("s", "port") == 8080
    assert cfg.getbool("s", "debug") is True
    assert cfg.getlist("s", "names") == ["a", "b", "c"]


def test_default_section_is_inherited():
    cfg = iniconf.loads("timeout = 5\n[a]\n[b]\ntimeout = 9\n")
    assert cfg.getint("a", "timeout") == 5
    assert cfg.getint("b", "timeout") == 9


def test_missing_option_and_default():
    cfg = iniconf.loads("[s]\n")
    with pytest.raises(ConfigError):
        cfg.get("s", "nope")
    assert cfg.get("s", "nope", "fallback") == "fallback"


def test_bad_integer_is_reported():
    cfg = iniconf.loads("[s]\nport = eighty\n")
    with pytest.raises(ConfigError, match="not an integer"):
        cfg.getint("s", "port")
