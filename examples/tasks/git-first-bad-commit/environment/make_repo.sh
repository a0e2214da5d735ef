#!/bin/bash
# Build /workspace/repo: a linear history of 40 commits with fixed dates (so hashes are reproducible).
# One of them breaks ./check.sh; the task is to find which.
set -euo pipefail
repo=/workspace/repo
mkdir -p "$repo"
cd "$repo"
git -c init.defaultBranch=main init -q
git config user.name "Dana Developer"
git config user.email "dana@example.com"
n=0
commit() {  # commit MESSAGE: stage everything, commit at a fixed, increasing date
    n=$((n + 1))
    local when="2024-01-$(printf %02d $(( (n + 1) / 2 ))) $(printf %02d $(( 9 + n % 2 * 5 ))):$(printf %02d $(( n * 7 % 60 ))):00 +0000"
    git add -A
    GIT_AUTHOR_DATE="$when" GIT_COMMITTER_DATE="$when" git commit -qm "$1"
}

cat > durations.py <<'EOF'
"""Parse human durations such as "1h30m" or "2d 4h" into seconds."""

import re

_PART = re.compile(r"(\d+)\s*([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse(text):
    text = text.strip().lower()
    parts = _PART.findall(text)
    if not parts or _PART.sub("", text).strip():
        raise ValueError(f"not a duration: {text!r}")
    return sum(int(n) * _UNITS[u] for n, u in parts)
EOF
cat > test_durations.py <<'EOF'
import unittest

from durations import parse


class ParseTest(unittest.TestCase):
    def test_units(self):
        self.assertEqual(parse("45s"), 45)
        self.assertEqual(parse("1h30m"), 5400)
        self.assertEqual(parse("2d 4h"), 2 * 86400 + 4 * 3600)

    def test_invalid(self):
        with self.assertRaises(ValueError):
            parse("soon")


if __name__ == "__main__":
    unittest.main()
EOF
cat > check.sh <<'EOF'
#!/bin/sh
# Exit 0 when the test suite passes.
cd "$(dirname "$0")" && python3 -m unittest -q test_durations 2>/dev/null
EOF
chmod +x check.sh
printf '# durations\n\nParse "1h30m"-style durations.\n' > README.md
commit "Initial durations parser"
printf '__pycache__/\n' > .gitignore
commit "Ignore bytecode"
printf '\nRun ./check.sh before pushing.\n' >> README.md
commit "README: how to run the tests"
cat > CHANGELOG.md <<'EOF'
# Changelog

## 1.0
- First release.
EOF
commit "Changelog for 1.0"
git tag v1.0

i=0
feature() {  # append a changelog line and commit
    i=$((i + 1))
    printf -- '- %s\n' "$1" >> CHANGELOG.md
    commit "$1"
}
cat > cli.py <<'EOF'
import sys

from durations import parse

if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(parse(arg))
EOF
commit "Add a small command line front end"
feature "Document accepted units in the README"
printf '\nUnits: s, m, h, d.\n' >> README.md && commit "README: list units"
sed -i 's/^import re$/import re\n\n__all__ = ["parse"]/' durations.py
commit "Declare the public API"
feature "cli: print one result per line"
printf 'def format_seconds(seconds):\n    return f"{seconds}s"\n' > fmt.py
commit "Add fmt.format_seconds"
feature "fmt: plain seconds output"
sed -i 's/return f"{seconds}s"/return f"{seconds:d}s"/' fmt.py
commit "fmt: integer formatting"
printf 'MIT License\n' > LICENSE
commit "Add license"
feature "Allow upper-case units"
sed -i 's/"""Parse human durations/"""Parse human-readable durations/' durations.py
commit "Docstring wording"
printf '\nContributions welcome.\n' >> README.md
commit "README: contributing"
feature "cli: exit code 2 on bad input"
cat > cli.py <<'EOF'
import sys

from durations import parse

if __name__ == "__main__":
    try:
        for arg in sys.argv[1:]:
            print(parse(arg))
    except ValueError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
EOF
commit "cli: report bad input"
# --- the breaking change: a transposed constant in a refactor ---
python3 - <<'EOF'
src = open("durations.py").read()
src = src.replace('_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}',
                  'MINUTE = 60\nHOUR = 60 * MINUTE\nDAY = 84600\n_UNITS = {"s": 1, "m": MINUTE, "h": HOUR, "d": DAY}')
open("durations.py", "w").write(src)
EOF
commit "Name the unit constants"
feature "Prepare 1.1"
sed -i 's/^def parse(text):$/def parse(text: str) -> int:/' durations.py
commit "Type hints for parse"
printf '\nSee CHANGELOG.md for releases.\n' >> README.md
commit "README: link the changelog"
feature "fmt: add hours output"
printf 'def format_hours(seconds):\n    return f"{seconds / 3600:.1f}h"\n' >> fmt.py
commit "fmt: format_hours"
feature "Accept weeks"
sed -i 's/_PART = re.compile(r"(\\d+)\\s\*(\[smhd\])")/_PART = re.compile(r"(\\d+)\\s*([smhdw])")/' durations.py
sed -i 's/"d": DAY}/"d": DAY, "w": 7 * DAY}/' durations.py
commit "Support weeks (w)"
feature "cli: --help text"
printf '\n# usage: python3 cli.py DURATION...\n' >> cli.py
commit "cli: usage comment"
printf '\nUnits: s, m, h, d, w.\n' >> README.md
commit "README: weeks"
feature "Release 1.1"
sed -i 's/^## 1.0$/## 1.1 (unreleased)\n\n## 1.0/' CHANGELOG.md
commit "Changelog heading for 1.1"
printf 'def format_days(seconds):\n    return f"{seconds / 86400:.2f}d"\n' >> fmt.py
commit "fmt: format_days"
feature "Speed up parsing of long inputs"
sed -i 's/    text = text.strip().lower()/    text = text.strip().lower()  # units are case-insensitive/' durations.py
commit "Comment on case folding"
