import iniconf
import pytest
from iniconf import ConfigError

SAMPLE = """\
; service configuration
[server]
Host = 127.0.0.1
port: 8080

# static content
[static]
root = /srv/www
"""


def test_sections_and_case_insensitive_keys():
    cfg = iniconf.loads(SAMPLE)
    assert cfg.sections() == ["server", "static"]
    assert cfg.get("server", "HOST") == "127.0.0.1"
    assert cfg.get("server", "port") == "8080"


def test_comments_and_blank_lines_are_ignored():
    cfg = iniconf.loads("# top\n\n[a]\n; inside\nx = 1\n")
    assert cfg.options("a") == {"x": "1"}


def test_continuation_lines():
    cfg = iniconf.loads("[motd]\ntext = hello\n  world\n\tagain\n")
    assert cfg.get("motd", "text") == "hello\nworld\nagain"


def test_duplicate_section_is_an_error():
    with pytest.raises(ConfigError, match="duplicate"):
        iniconf.loads("[a]\n[a]\n")


def test_line_without_separator_is_an_error():
    with pytest.raises(ConfigError, match="line 2"):
        iniconf.loads("[a]\njust some words\n")


def test_value_may_contain_equals_after_colon():
    cfg = iniconf.loads("[q]\nfilter: status=open\n")
    assert cfg.get("q", "filter") == "status=open"
