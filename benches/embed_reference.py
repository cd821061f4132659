"""sentence-transformers side of benches/src/bin/embed_throughput.rs.

Reads the benchmark plan (texts, batch sizes, durations) as JSON on stdin,
runs the same measurements with sentence-transformers on the same device
(`cpu` or `cuda:N`), and
prints JSON results on stdout.
"""

import json
import os
import resource
import sys
import time

plan = json.load(sys.stdin)
import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
model = SentenceTransformer(plan["model_dir"], device=plan.get("device", "cpu"))
model.encode(["warm up"] * 8)
results = {"device": str(model.device), "torch": torch.__version__, "threads": torch.get_num_threads(), "throughput": {}, "latency_ms": {}}
for kind, texts in plan["texts"].items():
    for batch in plan["batches"]:
        chunk = (texts * (batch // len(texts) + 1))[:batch]
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < plan["seconds"]:
            model.encode(chunk, batch_size=batch)
            n += batch
        results["throughput"][f"{kind}/{batch}"] = n / (time.perf_counter() - start)
samples = []
short = plan["texts"]["short"]
for i in range(plan["latency_samples"]):
    t = time.perf_counter()
    model.encode([short[i % len(short)]], batch_size=1)
    samples.append((time.perf_counter() - t) * 1e3)
samples.sort()
results["latency_ms"] = {"p50": samples[len(samples) // 2], "p99": samples[int(len(samples) * 0.99)]}
results["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
json.dump(results, sys.stdout)
