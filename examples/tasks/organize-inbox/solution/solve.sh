#!/bin/bash
# Reference solution.
set -euo pipefail
python3 - <<'PY'
import calendar, hashlib, os, re, shutil

INBOX, ARCHIVE = "/workspace/inbox", "/workspace/archive"
DATE = re.compile(r"(?=(?<!\d)(\d{4})([-.]?)(\d{2})\2(\d{2})(?!\d))")


def month_dir(name):
    for m in DATE.finditer(name):
        y, mo, d = int(m.group(1)), int(m.group(3)), int(m.group(4))
        if 1 <= mo <= 12 and 1 <= d <= calendar.monthrange(y, mo)[1]:
            return f"{y:04d}/{mo:02d}"
    return "undated"


paths = [os.path.join(r, f) for r, _, fs in os.walk(INBOX) for f in fs]
groups = {}
for p in paths:
    groups.setdefault(hashlib.sha256(open(p, "rb").read()).hexdigest(), []).append(p)
duplicates = []
os.makedirs(ARCHIVE, exist_ok=True)
for members in groups.values():
    members.sort(key=lambda p: os.path.basename(p).encode())
    keep, *dups = members
    dest = os.path.join(ARCHIVE, month_dir(os.path.basename(keep)))
    os.makedirs(dest, exist_ok=True)
    shutil.move(keep, os.path.join(dest, os.path.basename(keep)))
    for d in dups:
        duplicates.append(os.path.relpath(d, INBOX))
        os.remove(d)
with open(os.path.join(ARCHIVE, "duplicates.txt"), "w") as fp:
    fp.writelines(d + "\n" for d in sorted(duplicates, key=str.encode))
PY
