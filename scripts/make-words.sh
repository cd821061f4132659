#!/usr/bin/env bash
# Rebuilds gateway/src/cache/verify/words.txt, the English word list the
# cache verifier uses to tell a typo from another word (`docs/cache.md`,
# "Typos"). The list is committed; this script only documents and repeats
# how it was made.
#
# Source: SCOWL 2020.12.07 (Kevin Atkinson), as Debian's `scowl` package
# 2020.12.07-2 ships it. Words and names of sizes 10 to 50 (the size of
# Debian's `wamerican`), English plus American spellings (no British or
# variant spellings, so that "colour" stays a typo-tolerant form of
# "color"), lower-cased, letters only, without possessives. Licence:
# gateway/src/cache/verify/WORDS-LICENSE.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download scowl=2020.12.07-2 >/dev/null && dpkg -x scowl_*.deb x)
d="$work/x/usr/share/dict/scowl"
cat "$d"/english-words.{10,20,35,40,50} "$d"/american-words.{10,20,35,40,50} \
    "$d"/english-upper.{10,35,40,50} "$d"/american-upper.50 \
    "$d"/english-proper-names.{35,40,50} "$d"/american-proper-names.50 |
    python3 -c '
import sys
words = set()
for line in sys.stdin:
    w = line.strip().lower()
    if w and "\x27" not in w and all(c.isalpha() for c in w):
        words.add(w)
sys.stdout.write("\n".join(sorted(words)) + "\n")
' >gateway/src/cache/verify/words.txt
wc -l gateway/src/cache/verify/words.txt
