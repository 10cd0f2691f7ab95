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
    plot = _plot(groups, distances, out)
    if plot:
        print(f"\n![conditioning]({plot.name})")
    return summary


def _plot(groups: dict[str, list[dict]], distances: list[int], out: Path) -> Path | None:
    """Left: XPersona turns on/off per arm, one dot a seed. Right: each arm's distance curve relative to `none`,
    paired by seed (each seed's filler differs)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    arms = sorted(groups)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, arm in enumerate(arms):
        for key, shift, colour in (("xpersona_on", -0.12, "tab:blue"), ("xpersona_off", 0.12, "tab:orange")):
            values = [r["heldout"][key] for r in groups[arm]]
            left.scatter([i + shift] * len(values), values, color=colour, s=18, label=key if i == 0 else None)
    left.set_xticks(range(len(arms)), arms, rotation=30, ha="right", fontsize=8)
    left.set_ylabel("bits per byte, held-out speaker turns")
    left.set_title("unseen Konteks (XPersona): conditioning on / off, per seed")
    left.legend(fontsize=8)
    none = {r["job"]["seed"]: r for r in groups.get("none", [])}
    for arm in arms:
        if arm == "none" or not none:
            continue
        rel = [
            statistics.mean(
                r["distance"][f"{d}_on"] / none[r["job"]["seed"]]["distance"][f"{d}_on"] - 1
                for r in groups[arm]
                if r["job"]["seed"] in none
            )
            for d in distances
        ]
        right.plot(range(len(distances)), [100 * x for x in rel], marker="o", label=arm)
    right.axhline(0, color="grey", lw=0.8)
    right.set_xticks(range(len(distances)), [str(d) for d in distances])
    right.set_xlabel("tokens between the Konteks and the scored turns")
    right.set_ylabel("% vs `none` (same seed), mean over seeds")
    right.set_title("distance from the Konteks")
    right.legend(fontsize=8)
    fig.tight_layout()
    path = out / "conditioning.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
