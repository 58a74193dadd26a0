"""Turn bench/results/*.json into REPORT.md (and report.png when matplotlib is there).

Each figure stands beside the Thespian floor measured in the same run, the
design document's target and our own, tighter goal.

Run: python -m bench.report   (after python -m bench)
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .stats import RESULTS_DIR


@dataclass
class Row:
    figure: str
    p50_ms: float
    p99_ms: float
    floor_p50_ms: float | None
    design_ms: float | None      # the design document's target (a p50 bound)
    goal: str                    # our goal, in words
    met: bool | None
    per_s: float | None = None   # throughput, where the figure has one


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def collect() -> list[Row]:
    rows: list[Row] = []
    runtime, context, w2v = _load("runtime"), _load("context"), _load("wav2vec2")
    if runtime:
        lat = runtime["latency"]
        floor = lat["thespian ask (floor)"]["p50_ms"]
        for name in ("route_task echo, no context fetch", "route_task echo, with context fetch"):
            r = lat[name]
            over50, over99 = r["p50_ms"] - floor, r["p99_ms"] - lat["thespian ask (floor)"]["p99_ms"]
            rows.append(Row(f"{name} (end to end)", r["p50_ms"], r["p99_ms"], floor, 30.0,
                            "overhead over the floor p50 <= 2 ms, p99 <= 4 ms",
                            over50 <= 2.0 and over99 <= 4.0))
        for name, r in runtime["throughput"].items():
            rows.append(Row(f"route_task echo, {name}", r["p50_ms"], r["p99_ms"], floor, 30.0,
                            "informational (one router: Thespian-bound)", None, r["per_s"]))
        rows += http_rows(runtime, floor)
        rec = next(iter(runtime["recovery"].values()))
        rows.append(Row("kill -9 -> next success (echo)", rec["p50_ms"], rec["p99_ms"], None,
                        None, "within 100 ms", rec["p99_ms"] <= 100))
        init = next(iter(runtime["init"].values()))
        rows.append(Row("lazy service initialization (echo)", init["p50_ms"], init["p99_ms"],
                        None, 1000.0, "< 1 s", init["p99_ms"] < 1000))
        cold = next(iter(runtime["cold_start"].values()))
        rows.append(Row("cold start to ready (echo only)", cold["p50_ms"], cold["p99_ms"], None,
                        None, "informational", None))
    rows += transport_rows(_load("transport"))
    rows += fast_path_rows(_load("fast_path"))
    rows += scale_rows(_load("scale"))
    if context:
        for size, data in context.items():
            if size == "meta":
                continue
            r = data["rows"]
            floor = r["thespian ask (floor)"]["p50_ms"]
            ret, q = r["retrieve by id"], r["query 20 of the store (type + tag)"]
            rows.append(Row(f"context retrieve ({int(size):,} items)", ret["p50_ms"], ret["p99_ms"],
                            floor, 20.0, "p99 <= 2 ms", ret["p99_ms"] <= 2.0))
            limit = 3.0 if int(size) <= 1000 else 10.0
            rows.append(Row(f"context query, 20 of {int(size):,}", q["p50_ms"], q["p99_ms"], floor,
                            20.0, f"p99 <= {limit:g} ms", q["p99_ms"] <= limit))
    if w2v:
        for name, r in w2v.get("resampling", {}).items():
            rows.append(Row(f"wav2vec2 {name}", r["p50_ms"], r["p99_ms"], None, None,
                            "informational (soxr HQ)", None))
        for size, data in w2v.items():
            if size in ("meta", "resampling"):
                continue
            r = data["rows"]
            for seconds in ("1 s", "10 s"):
                e2e, bare = r[f"route_task, {seconds} audio"], r[f"in-process service, {seconds} audio"]
                overhead = data[f"overhead_{seconds.replace(' ', '')}_pct"]
                goal_ok = overhead < 5 if size == "base" else None
                rows.append(Row(f"wav2vec2 {size}, {seconds} audio, end to end", e2e["p50_ms"],
                                e2e["p99_ms"], bare["p50_ms"], 50.0,
                                f"overhead {overhead:+.1f} % of in-process (goal < 5 % on base)",
                                goal_ok))
            on, off = r["8 callers, batching on (8, 5 ms)"], r["8 callers, max_batch_size=1"]
            gain = 100 * (on["per_s"] / off["per_s"] - 1)
            for label, t in (("batching on", on), ("max_batch_size=1", off)):
                rows.append(Row(f"wav2vec2 {size}, 8 callers, 1 s audio, {label}", t["p50_ms"],
                                t["p99_ms"], None, None, f"batching gain {gain:+.0f} % tasks/s",
                                None, t["per_s"]))
            k = r["kill -9 -> next success"]
            rows.append(Row(f"wav2vec2 {size}: kill -9 -> next success", k["p50_ms"], k["p99_ms"],
                            None, 1000.0, "within 1 s (base)",
                            k["p99_ms"] <= 1000 if size == "base" else None))
    return rows


def http_rows(runtime: dict[str, Any], floor: float) -> list[Row]:
    """HTTP echo beside route_task: at most 1 ms more at p50, and no fewer requests/s at 16."""
    http = runtime["latency"].get("HTTP POST echo, no context fetch")
    if http is None:  # results from before the HTTP face
        return []
    base = runtime["latency"]["route_task echo, no context fetch"]
    added = http["p50_ms"] - base["p50_ms"]
    rows = [Row("HTTP POST echo, no context fetch (end to end)", http["p50_ms"], http["p99_ms"],
                floor, None, f"p50 <= route_task's + 1 ms (adds {added:+.2f} ms)", added <= 1.0)]
    live = runtime["latency"].get("HTTP GET /livez (HTTP floor)")
    if live is not None:  # what any request costs: a round trip that calls no actor
        rows.append(Row("HTTP GET /livez (the HTTP floor)", live["p50_ms"], live["p99_ms"], floor,
                        None, f"informational: POST echo is route_task + {added:.2f} ms, of "
                              f"which this round trip is {live['p50_ms']:.2f} ms", None))
    for (name, r), route in zip(runtime["http_throughput"].items(),
                                runtime["throughput"].values()):
        ratio = r["per_s"] / route["per_s"]
        sixteen = name.startswith("16 ")
        rows.append(Row(f"HTTP echo, {name}", r["p50_ms"], r["p99_ms"], floor, None,
                        f"{ratio:.2f}x route_task's requests/s"
                        + (" (goal: >= 1x at 16 clients)" if sixteen else ""),
                        ratio >= 1.0 if sixteen else None, r["per_s"]))
    return rows


def transport_rows(transport: dict[str, Any] | None) -> list[Row]:
    """Signed frames (runtime.frames) beside Thespian's stock ones, bare asks measured together."""
    if transport is None:
        return []
    lat, goals = transport["latency"], transport["goals"]
    floor = lat["ask 100 B, stock"]["p50_ms"]
    slower = goals["100 B slower %"]
    rows = [Row("bare ask, 100 B, signed frames", lat["ask 100 B, signed"]["p50_ms"],
                lat["ask 100 B, signed"]["p99_ms"], floor, None,
                f"<= 5 % over stock frames ({slower:+.1f} %)", slower <= 5)]
    for name in ("1 MiB float32 array",):
        r, added = lat[f"ask {name}, signed"], goals[f"{name} ms per hop per MB"]
        rows.append(Row(f"bare ask, {name}, signed frames", r["p50_ms"], r["p99_ms"],
                        lat[f"ask {name}, stock"]["p50_ms"], None,
                        f"<= 0.5 ms per hop per MB over stock ({added:+.2f} ms)", added <= 0.5))
    return rows


def fast_path_rows(fast: dict[str, Any] | None) -> list[Row]:
    """Issue 14: throughput by callers beside the floor, and its goal table."""
    if fast is None:
        return []
    t = fast["echo"]["throughput"]
    floor = t["thespian ask (floor)"]
    rows = []
    for path in ("route_task", "Task to the router (before; external actors)"):
        for callers, r in t[path].items():
            share = r["per_s"] / floor[callers]["per_s"]
            rows.append(Row(f"{path}, echo, {callers} callers", r["p50_ms"], r["p99_ms"],
                            floor[callers]["p50_ms"], None,
                            f"{share:.2f}x a bare actor's asks/s from {callers} threads",
                            None, r["per_s"]))
    return rows


def scale_rows(scale: dict[str, Any] | None) -> list[Row]:
    """Issue 15: echo (20 ms a task) from 16 callers on 1 and 4 replicas, beside the floor."""
    if scale is None:
        return []
    r = scale["replicas"]["rows"]
    floor = next(v for name, v in r.items() if name.startswith("thespian ask"))
    ratio = scale["replicas"]["ratio"]
    return [Row(f"echo 20 ms, 16 callers, {name}", r[name]["p50_ms"], r[name]["p99_ms"],
                floor["p50_ms"], None, goal, met, r[name]["per_s"])
            for name, goal, met in (
                ("replicas = 1", "informational (the base of the ratio)", None),
                ("replicas = 4", f"{ratio:.2f}x the tasks/s of 1 replica (goal >= 3.5)",
                 ratio >= 3.5))]


def goal_table(title: str, goals: dict[str, Any], before: str | None = None) -> list[str]:
    """An issue's goal table in Markdown, as bench.stats.print_goals prints it; ``before``:
    the header of a column of the figures before the change."""
    head, align = ["figure", "now"], ["---", "---:"]
    if before:
        head, align = head + [before], align + ["---:"]
    out = ["", f"## {title}", "", "| " + " | ".join(head + ["goal", "met"]) + " |",
           "|" + "|".join(align + ["---", "---"]) + "|"]
    for name, g in goals.items():
        cells = [name, "not reached" if g["value"] is None else f"{g['value']:.2f}"]
        if before:
            cells.append("" if g.get("before") is None else f"{g['before']:.2f}")
        cells += [g["goal"], {True: "yes", False: "**no**", None: ""}[g["met"]]]
        out.append("| " + " | ".join(cells) + " |")
    return out


def scale_goals(scale: dict[str, Any] | None) -> str:
    """Issue 15's goal table and the autoscaler's decisions in the ramp."""
    if scale is None:
        return ""
    out = goal_table("Issue 15: replicas and autoscaling (this run)", scale["goals"])
    ramp = scale["autoscaling"]
    out += ["", "Decisions in the ramp (seconds from the start of the run; load from "
            f"{ramp['ramp_start_s']:.1f} s to {ramp['ramp_end_s']:.1f} s):", ""]
    out += [f"- {d['t_s']:.1f} s: {d['reason']}" for d in ramp["decisions"]]
    return "\n".join(out) + "\n"


def plot_autoscaling(scale: dict[str, Any] | None, path: Path) -> bool:
    """The ramp's timeline: replicas that accept tasks, callers and tasks done per second."""
    plt = _pyplot()
    if plt is None or scale is None:
        return False
    ramp = scale["autoscaling"]
    t = [s["t_s"] for s in ramp["timeline"]]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.step(t, [s["replicas"] for s in ramp["timeline"]], where="post", color="#2166ac",
            lw=2, label="replicas accepting tasks")
    ax.step(t, [s["callers"] / 4 for s in ramp["timeline"]], where="post", color="grey",
            ls="--", label="callers / 4")
    for d in ramp["decisions"]:
        ax.axvline(d["t_s"], color="black", ls=":", lw=1)
    ax.set_xlabel("seconds (dotted: the autoscaler's decisions)")
    ax.set_ylabel("replicas")
    ax.set_ylim(0, ramp["config"]["autoscaling"]["max_replicas"] + 1)
    rate = ax.twinx()
    rate.plot(t, [s["tasks_per_s"] for s in ramp["timeline"]], color="#b2182b", lw=1,
              label="tasks done per s")
    rate.set_ylabel("tasks done per second")
    rate.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()[0] + rate.get_legend_handles_labels()[0]
    ax.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="upper right")
    ax.set_title(f"Autoscaled echo ({ramp['config']['delay_ms']} ms a task): "
                 f"{ramp['config']['callers']} callers, then none")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def fast_path_goals(fast: dict[str, Any] | None) -> str:
    """Issue 14's goal table: each figure as a ratio (or ms) of this run's own floor."""
    if fast is None:
        return ""
    out = goal_table("Issue 14: the fast path's goals (this run)", fast["goals"],
                     before="before (router path, same run)")
    return "\n".join(out) + "\n"


def http_design_table(designs: dict[str, Any] | None) -> str:
    """Issue 11's goal tried design by design (bench/http_designs.py)."""
    if designs is None:
        return ""
    out = ["", "## Issue 11: HTTP task hand-over designs (this run; stdlib http.client clients)",
           "", "Goal: at most route_task + 1 ms at p50, and at least route_task's requests/s "
           "at 16 clients.", "",
           "| design | p50 ms | p99 ms | p50 - route_task | 16 clients per s | x route_task |",
           "|---|---:|---:|---:|---:|---:|"]
    for name, r in designs["designs"].items():
        out.append(f"| {name} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                   f"{r['added_p50_ms']:+.2f} | {r['per_s_16']:.0f} | {r['ratio_16']:.2f} |")
    return "\n".join(out) + "\n"


def plot_callers(fast: dict[str, Any] | None, path: Path) -> bool:
    """Tasks/s by callers: route_task, the router's path, and the floor drawn in."""
    plt = _pyplot()
    if plt is None or fast is None:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"thespian ask (floor)": dict(color="green", ls=":", marker="o"),
              "route_task": dict(color="#2166ac", marker="s"),
              "Task to the router (before; external actors)": dict(color="#b2182b", marker="^")}
    for name, by_callers in fast["echo"]["throughput"].items():
        callers = [int(c) for c in by_callers]
        ax.plot(callers, [r["per_s"] for r in by_callers.values()], label=name,
                **styles.get(name, {}))
    ax.set_xscale("log", base=2)
    ax.set_xticks(callers, [str(c) for c in callers])
    ax.set_xlabel("concurrent callers (host threads)")
    ax.set_ylabel("echo tasks per second")
    ax.set_ylim(bottom=0)
    ax.set_title("Throughput by callers (floor: a bare actor asked from as many threads)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def markdown(rows: list[Row]) -> str:
    out = ["# Benchmark report", "",
           "p50 / p99 in milliseconds. *Floor*: a bare Thespian ask measured in the same run "
           "(for wav2vec2: the same service called in-process). *Design*: the design document's "
           "target. *Met* is judged against our own goal.", "",
           "| figure | p50 | p99 | per s | floor p50 | design target | our goal | met |",
           "|---|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        floor = f"{r.floor_p50_ms:.2f}" if r.floor_p50_ms is not None else ""
        design = f"< {r.design_ms:g}" if r.design_ms is not None else ""
        met = {True: "yes", False: "**no**", None: ""}[r.met]
        per_s = f"{r.per_s:.0f}" if r.per_s is not None else ""
        out.append(f"| {r.figure} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {per_s} | {floor} | "
                   f"{design} | {r.goal} | {met} |")
    return "\n".join(out) + "\n"


def _pyplot() -> Any:
    """matplotlib's pyplot, drawing to files; None where it is not installed (optional)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot(rows: list[Row], path: Path) -> bool:
    plt = _pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.5))
    names = [r.figure for r in rows][::-1]
    ys = range(len(names))
    ax.barh(ys, [r.p99_ms for r in rows][::-1], color="#f4a582", label="p99")
    ax.barh(ys, [r.p50_ms for r in rows][::-1], color="#2166ac", label="p50")
    for y, r in zip(ys, rows[::-1]):
        if r.design_ms:
            ax.plot([r.design_ms] * 2, [y - 0.4, y + 0.4], color="black", lw=2)
        if r.floor_p50_ms:
            ax.plot([r.floor_p50_ms] * 2, [y - 0.4, y + 0.4], color="green", lw=2, ls=":")
    ax.set_yticks(list(ys), names, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("milliseconds (log); black: design target, green dotted: floor")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> None:
    rows = collect()
    report = RESULTS_DIR / "REPORT.md"
    text = (markdown(rows) + http_design_table(_load("http_designs"))
            + fast_path_goals(_load("fast_path")) + scale_goals(_load("scale")))
    if plot(rows, RESULTS_DIR / "report.png"):
        text += "\n![figures](report.png)\n"
    if plot_callers(_load("fast_path"), RESULTS_DIR / "callers.png"):
        text += "\n![throughput by callers](callers.png)\n"
    if plot_autoscaling(_load("scale"), RESULTS_DIR / "autoscaling.png"):
        text += "\n![autoscaling timeline](autoscaling.png)\n"
    report.write_text(text)
    print(text)
    print(f"written: {report}")


if __name__ == "__main__":
    main()
