"""Plain-cosine baseline for the semantic cache on ../shared/data/cache-eval.

What a single similarity threshold gives with all-MiniLM-L6-v2 (through
sentence-transformers, whose vectors Switchyard's embedder matches to a
cosine of 0.999): hit rate against false-hit rate, and the similarity of each
category. The cache's verification step (issue #4) must beat this curve.

    .venv-ref/bin/python benches/cache_eval_baseline.py [path/to/dev_pairs.tsv]
"""

import csv
import sys

import numpy as np
from sentence_transformers import SentenceTransformer

path = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/cache-eval/dev_pairs.tsv"
rows = list(csv.DictReader(open(path, encoding="utf-8"), delimiter="\t"))
model = SentenceTransformer("models/all-MiniLM-L6-v2", device="cpu")
a = model.encode([r["prompt_a"] for r in rows], normalize_embeddings=True)
b = model.encode([r["prompt_b"] for r in rows], normalize_embeddings=True)
sim = (a * b).sum(1)
label = np.array([int(r["label"]) for r in rows])
cat = np.array([r["category"] for r in rows])
hard = (label == 0) & (cat != "unrelated")

print("| threshold | hit rate | false-hit rate (all negatives) | false-hit rate (hard negatives) |")
print("|---:|---:|---:|---:|")
for t in [0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97]:
    hit = sim >= t
    print(f"| {t:.2f} | {hit[label == 1].mean():.3f} | {hit[label == 0].mean():.3f} | {hit[hard].mean():.3f} |")
print()
print("| category | label | mean cosine | min | max |")
print("|---|---:|---:|---:|---:|")
for c in sorted(set(cat)):
    s = sim[cat == c]
    print(f"| {c} | {label[cat == c][0]} | {s.mean():.3f} | {s.min():.3f} | {s.max():.3f} |")
