"""Terminal rendering of run summaries and status (rich tables; plain text when piped)."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.table import Table

from v60k.core.catalog import STATES


def _console() -> Console:
    return Console(soft_wrap=False, width=120)


def counts_table(stages: dict[str, dict[str, int]], throughput: dict[str, dict[str, float]] | None = None) -> Table:
    table = Table(title="stages", title_justify="left")
    table.add_column("stage")
    for state in STATES:
        table.add_column(state, justify="right")
    if throughput is not None:
        table.add_column("s/item", justify="right")
        table.add_column("items/s", justify="right")
    for stage, counts in stages.items():
        row = [stage] + [str(counts.get(s, 0)) for s in STATES]
        if throughput is not None:
            t = throughput.get(stage, {})
            row += [f"{t.get('per_item_s', 0):.2f}", f"{t.get('items_per_s', 0):.2f}"]
        table.add_row(*row)
    return table


def failures_table(failures: list[dict[str, Any]]) -> Table:
    table = Table(title="failures and skips by reason", title_justify="left")
    for col in ("stage", "state", "reason", "count", "example"):
        table.add_column(col, justify="right" if col == "count" else "left", overflow="fold")
    for f in failures:
        example = (f.get("example") or "").splitlines()[0][:70] if f.get("example") else ""
        table.add_row(f["stage"], f["state"], str(f["error_class"]), str(f["count"]), f"{f['example_video']}: {example}")
    return table


def usage_table(usage: dict[str, dict[str, float]]) -> Table:
    table = Table(title="usage", title_justify="left")
    keys = sorted({k for u in usage.values() for k in u})
    table.add_column("stage")
    for key in keys:
        table.add_column(key, justify="right")
    for stage, u in usage.items():
        table.add_row(stage, *[f"{u.get(k, 0):.4f}" if k.endswith("usd") else f"{u.get(k, 0):g}" for k in keys])
    return table


def _reasons(counts: dict[str, int], shown: int = 3) -> str:
    """'12: no_speech 9, too_short 3' — the total and the commonest reasons."""
    if not counts:
        return "0"
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    more = ", …" if len(top) > shown else ""
    return f"{sum(counts.values())}: " + ", ".join(f"{reason} {n}" for reason, n in top[:shown]) + more


def outcomes_table(stages: dict[str, dict[str, Any]]) -> Table | None:
    """Per stage, what its finished videos reported item by item (segments, lines, clips...) and its totals;
    None when no stage reported any."""
    rows = []
    for stage, data in stages.items():
        items, totals = data.get("items") or {}, data.get("totals") or {}
        if not (items.get("done") or items.get("rejected") or items.get("failed") or totals):
            continue
        rows.append([stage, str(items.get("done", 0)), _reasons(items.get("rejected") or {}),
                     _reasons(items.get("failed") or {}),
                     ", ".join(f"{name} {value:g}" for name, value in sorted(totals.items()))])
    if not rows:
        return None
    table = Table(title="per-item outcomes", title_justify="left")
    for col in ("stage", "done", "rejected", "failed", "totals"):
        table.add_column(col, justify="right" if col == "done" else "left", overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def print_status(data: dict[str, Any]) -> None:
    console = _console()
    console.print(f"work dir {data['workdir']}: {data['videos']} videos")
    console.print(counts_table(data["stages"], data.get("throughput")))
    outcomes = outcomes_table(data["stages"])
    if outcomes is not None:
        console.print(outcomes)
    if data.get("failures"):
        console.print(failures_table(data["failures"]))
    if data.get("usage"):
        console.print(usage_table(data["usage"]))


def print_plan(plan: Any) -> None:
    """``--dry-run``: what the run would do, one line per stage."""
    for line in plan.lines():
        click.echo(line)
    if plan.overwrites_llm_output:
        click.echo(f"{plan.overwrites_llm_output} video(s)' LLM output would be overwritten: the run needs --yes")


def print_summary(summary: Any) -> None:
    console = _console()
    m = summary.manifest
    if m:
        console.print(
            f"manifest {m['source']}: {m['rows']} rows, {m['added']} new, {m['already_known']} known,"
            f" {len(m['duplicates'])} duplicate, {len(m['rejected'])} rejected"
        )
    console.print(counts_table(summary.counts))
    if summary.failures:
        console.print(failures_table(summary.failures))
    if summary.shards is not None:
        console.print(f"shards: {summary.shards.out_dir} ({summary.shards.describe()})")
        if summary.shards.validation is not None:
            console.print(summary.shards.validation.render())
    console.print(f"finished in {summary.elapsed_s:.1f}s — work dir {summary.workdir}")
