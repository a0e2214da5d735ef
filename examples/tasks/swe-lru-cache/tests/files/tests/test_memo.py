from lrukit import memoize


def test_memoize_counts_hits_and_misses():
    calls = []

    @memoize(maxsize=4)
    def square(x):
        calls.append(x)
        return x * x

    assert [square(2), square(2), square(3)] == [4, 4, 9]
    assert calls == [2, 3]
    info = square.cache_info()
    assert (info.hits, info.misses, info.size) == (1, 2, 2)


def test_memoize_distinguishes_keyword_arguments():
    @memoize()
    def join(a, sep="-"):
        return sep.join(a)

    assert join("ab") == "a-b"
    assert join("ab", sep="+") == "a+b"
