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


def test_update_existing_key_when_full_keeps_other_entries():
    c = LRUCache(2)
    c.put("a", 1)
    c.put("b", 2)
    c.get("a")
    c.put("a", 10)
    assert c.get("b") == 2
    assert c.get("a") == 10


def test_update_when_full_does_not_count_an_eviction():
    c = LRUCache(3)
    for k in "xyz":
        c.put(k, k.upper())
    c.put("y", "Y2")
    assert c.info().evictions == 0
    assert sorted(c.keys()) == ["x", "y", "z"]


def test_update_moves_key_to_front_when_full():
    c = LRUCache(2)
    c.put("a", 1)
    c.put("b", 2)
    c.put("b", 3)
    assert c.keys() == ["b", "a"]
