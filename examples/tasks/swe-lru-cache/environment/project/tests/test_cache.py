import pytest
from lrukit import LRUCache


def test_capacity_must_be_positive():
    with pytest.raises(ValueError):
        LRUCache(0)


def test_evicts_least_recently_used():
    c = LRUCache(2)
    c.put("a", 1)
    c.put("b", 2)
    c.put("c", 3)
    assert "a" not in c and c.get("b") == 2 and c.get("c") == 3


def test_get_refreshes_recency():
    c = LRUCache(2)
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1
    c.put("c", 3)
    assert c.keys() == ["c", "a"]


def test_pop_and_missing_keys():
    c = LRUCache(3)
    c.put("a", 1)
    assert c.pop("a") == 1 and len(c) == 0
    assert c.pop("a", None) is None
    with pytest.raises(KeyError):
        c.pop("a")


def test_update_below_capacity():
    c = LRUCache(3)
    c.put("a", 1)
    c.put("a", 2)
    assert c.get("a") == 2 and len(c) == 1 and c.info().evictions == 0
