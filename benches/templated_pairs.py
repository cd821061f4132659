#!/usr/bin/env python3
"""Pairs of different questions from `cache_latency`'s seed prompts, in the
cache-eval TSV format, for `switchyard cache calibrate --pairs`.

Every seed is "How do I {task} in {language}?". The pairs are the same task
in two languages and two tasks in one language, all label 0 (different
answers). The tasks and languages are read from `cache_latency.rs`, so the
pairs follow the bench.

    python3 benches/templated_pairs.py > /tmp/templated_pairs.tsv
    target/release/switchyard cache calibrate --pairs /tmp/templated_pairs.tsv
"""

import pathlib
import re

SOURCE = pathlib.Path(__file__).parent / "src" / "bin" / "cache_latency.rs"


def constant(text: str, name: str) -> list[str]:
    body = re.search(rf"const {name}: &\[&str\] = &\[(.*?)\];", text, re.S)
    if body is None:
        raise SystemExit(f"{SOURCE} has no `{name}`")
    return re.findall(r'"([^"]*)"', body.group(1))


def main() -> None:
    text = SOURCE.read_text()
    tasks, langs = constant(text, "TASKS"), constant(text, "LANGS")
    rows = ["id\tcategory\tlabel\tprompt_a\tprompt_b"]

    def pair(category: str, a: str, b: str) -> None:
        rows.append(f"t{len(rows):04d}\t{category}\t0\t{a}\t{b}")

    for task in tasks:
        for i, a in enumerate(langs):
            for b in langs[i + 1 :]:
                pair("other language", f"How do I {task} in {a}?", f"How do I {task} in {b}?")
    for lang in langs:
        for i, a in enumerate(tasks):
            for b in tasks[i + 1 :]:
                pair("other task", f"How do I {a} in {lang}?", f"How do I {b} in {lang}?")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
