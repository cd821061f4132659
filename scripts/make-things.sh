#!/usr/bin/env bash
# Rebuilds gateway/src/cache/verify/things.txt, the English nouns that name
# a thing (an animal, a plant, a food, a substance, an object, a body part,
# a place or a person) the cache verifier uses to tell a swapped subject
# ("cancel my subscription" against "cancel my gym membership") from a
# reworded question ("Who painted…" against "Which artist created…"):
# `docs/cache.md`, "Substitution". The list is committed; this script only
# documents and repeats how it was made.
#
# Source: WordNet 3.0 (Princeton University), as Debian's `wordnet-base`
# package 1:3.0-37 ships it. A word is listed when its most frequent sense
# (WordNet's sense-tagged counts, `cntlist.rev`; the first sense on a tie,
# nouns first) is a noun in one of the lexicographer files below. Single
# words only, lower-cased, letters only. Licence:
# gateway/src/cache/verify/THINGS-LICENSE.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download wordnet-base=1:3.0-37 >/dev/null && dpkg -x wordnet-base_*.deb x)
python3 - "$work/x/usr/share/wordnet" >gateway/src/cache/verify/things.txt <<'PY'
import sys
d = sys.argv[1]
# Lexicographer files (lexnames(5WN)) whose nouns name things.
THINGS = {5: "animal", 6: "artifact", 8: "body", 13: "food", 15: "location",
          17: "object", 18: "person", 20: "plant", 27: "substance"}
count = {}
for line in open(f"{d}/cntlist.rev"):
    key, sense, tags = line.split()
    lemma, rest = key.split("%")
    pos = {"1": "n", "2": "v", "3": "a", "4": "r", "5": "a"}[rest[0]]
    count[(lemma, pos, int(sense))] = count.get((lemma, pos, int(sense)), 0) + int(tags)
lexfile = {}
for pos, name in [("n", "noun"), ("v", "verb"), ("a", "adj"), ("r", "adv")]:
    for line in open(f"{d}/data.{name}"):
        if not line.startswith("  "):
            f = line.split()
            lexfile[(pos, f[0])] = int(f[1])
senses = {}
for pos, name in [("n", "noun"), ("v", "verb"), ("a", "adj"), ("r", "adv")]:
    for line in open(f"{d}/index.{name}"):
        if line.startswith("  "):
            continue
        f = line.split()
        lemma, n = f[0], int(f[2])
        for i, off in enumerate(f[-n:], start=1):
            senses.setdefault(lemma, []).append(
                (count.get((lemma, pos, i), 0), i, "nvar".index(pos), pos, lexfile[(pos, off)]))
out = []
for lemma, ss in senses.items():
    if not lemma.isalpha() or not lemma.isascii():
        continue
    tags, i, _, pos, lex = max(ss, key=lambda s: (s[0], -s[1], -s[2]))
    if pos == "n" and lex in THINGS:
        out.append(lemma.lower())
sys.stdout.write("\n".join(sorted(set(out))) + "\n")
PY
