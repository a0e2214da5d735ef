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


def test_url_value_after_equals():
    cfg = iniconf.loads("[upstream]\nurl = http://localhost:9000/api\n")
    assert cfg.options("upstream") == {"url": "http://localhost:9000/api"}


def test_time_value_after_equals():
    cfg = iniconf.loads("[backup]\nstart = 02:30\n")
    assert cfg.get("backup", "start") == "02:30"


def test_key_ends_at_first_separator():
    cfg = iniconf.loads("[m]\nratio = 16:9 = wide\nlabel: a=b:c\n")
    assert cfg.get("m", "ratio") == "16:9 = wide"
    assert cfg.get("m", "label") == "a=b:c"
