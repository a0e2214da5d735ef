"""Compare /workspace/archive with the expected layout (paths and SHA-256 of contents)."""

import hashlib
import os
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
ARCHIVE = "/workspace/archive"
INBOX = "/workspace/inbox"


def check():
    if not os.path.isdir(ARCHIVE):
        return f"{ARCHIVE} does not exist"
    expected = set(open(os.path.join(TESTS, "expected.txt")).read().splitlines())
    found = set()
    for root, _, files in os.walk(ARCHIVE):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, "/workspace")
            if rel == "archive/duplicates.txt":
                continue
            found.add(f"{rel}\t{hashlib.sha256(open(path, 'rb').read()).hexdigest()}")
    if found != expected:
        missing = sorted(x.split("\t")[0] for x in expected - found)
        extra = sorted(x.split("\t")[0] for x in found - expected)
        return f"archive differs: missing or changed {missing[:5]}, unexpected {extra[:5]}"
    try:
        dups = open(os.path.join(ARCHIVE, "duplicates.txt")).read().splitlines()
    except OSError:
        return "archive/duplicates.txt is missing"
    want = open(os.path.join(TESTS, "duplicates.txt")).read().splitlines()
    if [d for d in dups if d] != want:
        return f"duplicates.txt is {dups!r}, expected {want!r}"
    left = [os.path.join(r, f) for r, _, fs in os.walk(INBOX) for f in fs]
    if left:
        return f"files left in the inbox: {left[:5]}"
    return None


if __name__ == "__main__":
    problem = check()
    print(problem or "archive is correct")
    sys.exit(1 if problem else 0)
