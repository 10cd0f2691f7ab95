"""Tables of the conditioning experiment (`conditioning.py --report`)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def report(out: Path) -> dict:
    from protocol import write_json

    runs = [json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if p.name != "summary.json"]
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(r["job"]["name"].rsplit("_s", 1)[0], []).append(r)
    base = groups.get("none", [])
    base_xp = statistics.mean(r["heldout"]["xpersona_on"] for r in base) if base else None
    base_corpus = statistics.mean(r["heldout"]["corpus_on"] for r in base) if base else None
    lines = [
        "| arm | seeds | XPersona turns bpb, on | off | vs `none` | corpus turns bpb, on | off | vs `none` | control (own Konteks) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    summary = {}
    for arm, rs in groups.items():
        cells = {k: [r["heldout"][k] for r in rs] for k in ("xpersona_on", "xpersona_off", "corpus_on", "corpus_off")}
        control = [r["control"]["follows_own"] for r in rs]
        vs_xp = statistics.mean(cells["xpersona_on"]) / base_xp - 1 if base_xp else float("nan")
        vs_corpus = statistics.mean(cells["corpus_on"]) / base_corpus - 1 if base_corpus else float("nan")
        summary[arm] = {k: v for k, v in cells.items()} | {"control": control}
        lines.append(
            f"| {arm} | {len(rs)} | {_mean_sd(cells['xpersona_on'])} | {_mean_sd(cells['xpersona_off'])} | "
            f"{vs_xp:+.2%} | {_mean_sd(cells['corpus_on'])} | {_mean_sd(cells['corpus_off'])} | {vs_corpus:+.2%} | "
            f"{_mean_sd(control)} |"
        )
    print("\n".join(lines))
    distances = sorted({int(k.split("_")[0]) for r in runs for k in r["distance"]})
    print("\n| arm | " + " | ".join(f"{d} tokens away, on / off" for d in distances) + " |")
    print("| --- | " + " | ".join("---" for _ in distances) + " |")
    for arm, rs in groups.items():
        cells = []
        for d in distances:
            on = statistics.mean(r["distance"][f"{d}_on"] for r in rs)
            off = statistics.mean(r["distance"][f"{d}_off"] for r in rs)
            cells.append(f"{on:.4f} / {off:.4f}")
        print(f"| {arm} | " + " | ".join(cells) + " |")
    write_json(out / "summary.json", summary)
    return summary
