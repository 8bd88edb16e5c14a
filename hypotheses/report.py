"""Module 6, the report: report.md and report.html with the ranked hypotheses, a forest plot of
effects with CIs, a drawing of the relation graph, coverage, replication rates and the proposal.
Sections are built once as (title, text, table, image) and rendered to both formats."""

from __future__ import annotations

import html
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import pandas as pd  # noqa: E402

from hypotheses import explore, graph, replicate  # noqa: E402
from hypotheses import types as T  # noqa: E402

NODE_COLORS = {"factor": "#4c72b0", "level": "#64b5cd", "algorithm": "#8172b2", "metric": "#55a868",
               "task": "#c44e52", "direction": "#cccccc"}  # fmt: skip
EDGE_COLORS = {T.INCREASES: "#2ca02c", T.DECREASES: "#d62728", T.NO_EFFECT: "#7f7f7f",
               T.INTERACTS: "#9467bd", T.MODULATES: "#ff7f0e"}  # fmt: skip


def md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(none)_"
    cells = [[str(v).replace("|", "\\|") for v in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])


def claim_key(r: T.Relation) -> tuple:
    """What a hypothesis claims, independent of the tool that supports it."""
    return (r.factor, r.level_a, r.level_b, r.factor_b, r.metric, r.task, r.relation)


def distinct_claims(hyps) -> list[dict]:
    """Ranked hypotheses merged by claim: the best-ranked tool's numbers, plus every tool that
    supports the same claim (Welch, Tukey, IQM ... on one comparison are one claim)."""
    out: dict[tuple, dict] = {}
    for h in hyps:
        key = claim_key(h["relation"])
        if key not in out:
            out[key] = {**h, "tools": [h["relation"].tool]}
        elif h["relation"].tool not in out[key]["tools"]:
            out[key]["tools"].append(h["relation"].tool)
    return list(out.values())


def replication_text(h: dict) -> str:
    """Status plus the validation test's p (one-sided where directional), n and task."""
    v = h.get("validation")
    if v is None or v.p is None:
        return h["replication"]
    where = f", task={v.task}" if v.task else ""
    return f"{h['replication']} (validation p={v.p:.2g}, n={v.n}{where})"


def hypothesis_table(hyps, top: int) -> pd.DataFrame:
    rows = []
    for i, h in enumerate(distinct_claims(hyps)[:top]):
        r = h["relation"]
        rows.append({"rank": i + 1, "id": h["id"], "front": h["front"],
                     "reliability": f"{h['reliability']:.2f}", "novelty": f"{h['novelty']:.1f}",
                     "replication": replication_text(h), "hypothesis": h["statement"],
                     "also supported by": ", ".join(h["tools"][1:]),
                     "tool version": r.tool_version})  # fmt: skip
    return pd.DataFrame(rows)


def open_questions(relations, top: int) -> pd.DataFrame:
    """Directions no tool supported: the lowest-q test of each, smallest q first."""

    def key(r):
        return (r.factor, r.level_a, r.level_b, r.factor_b, r.metric, r.task)

    supported = {key(r) for r in relations if r.relation not in (T.NONE, T.NO_EFFECT)}
    best: dict[tuple, T.Relation] = {}
    for r in relations:
        if r.relation != T.NONE or r.tool == "tost" or key(r) in supported:
            continue
        if key(r) not in best or r.q < best[key(r)].q:
            best[key(r)] = r
    rows = [
        {"direction": f"{r.factor}{'=' + r.level_b + ' vs ' + r.level_a if r.level_b else ''}"
         f"{' x ' + r.factor_b if r.factor_b else ''} -> {r.metric}" + (f" [{r.task}]" if r.task else ""),
         "effect [95% CI]": f"{r.effect:+.3g} [{graph.fmt(r.ci_low)}, {graph.fmt(r.ci_high)}]",
         "tool": r.tool, "p": f"{r.p:.3g}", "q": f"{r.q:.3g}", "n": r.n}
        for r in sorted(best.values(), key=lambda r: (r.q, r.key))[:top]
    ]  # fmt: skip
    return pd.DataFrame(rows)


def forest_plot(hyps, path: str, top: int = 12) -> str | None:
    """Effect and 95% CI of the top directional hypotheses, one row (own x-scale) each."""
    rows = [h for h in distinct_claims(hyps) if h["relation"].ci_low is not None][:top]
    if not rows:
        return None
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 0.55 * len(rows) + 0.6), squeeze=False)
    for ax, h in zip(axes[:, 0], rows, strict=True):
        r = h["relation"]
        ax.errorbar([r.effect], [0], xerr=[[r.effect - r.ci_low], [r.ci_high - r.effect]], fmt="o",
                    color=EDGE_COLORS.get(r.relation, "k"), capsize=3)  # fmt: skip
        ax.axvline(0, color="k", lw=0.6, ls="--")
        ax.set_yticks([])
        lo, hi = min(r.ci_low, 0), max(r.ci_high, 0)
        pad = 0.1 * (hi - lo or 1.0)
        ax.set_xlim(lo - pad, hi + pad)
        label = (
            f"{h['id']} {r.factor}={r.level_b or ''} vs {r.level_a or ''}: {r.metric} [{r.task}]"
        )
        ax.set_title(f"{label} ({r.tool})", fontsize=7, loc="left", pad=2)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def graph_plot(g: nx.MultiDiGraph, path: str) -> str | None:
    """The supported part of the relation graph (direction nodes omitted for legibility)."""
    keep = sorted(n for n, d in g.nodes(data=True) if d["type"] != "direction" and g.degree(n) > 0)
    if not keep:
        return None
    h = nx.MultiDiGraph()  # rebuilt in sorted order so the layout does not depend on hashing
    h.add_nodes_from((n, g.nodes[n]) for n in keep)
    h.add_edges_from(sorted((u, v, k, d) for u, v, k, d in g.edges(keys=True, data=True)))
    pos = nx.spring_layout(nx.Graph(h), seed=0)
    fig, ax = plt.subplots(figsize=(9, 7))
    nx.draw_networkx_nodes(h, pos, ax=ax, node_size=250,
                           node_color=[NODE_COLORS[h.nodes[n]["type"]] for n in h])  # fmt: skip
    edges = list(h.edges(keys=True, data=True))
    nx.draw_networkx_edges(h, pos, ax=ax, edgelist=[(u, v) for u, v, _, _ in edges],
                           edge_color=[EDGE_COLORS[d["type"]] for *_, d in edges],
                           connectionstyle="arc3,rad=0.1", arrows=True)  # fmt: skip
    nx.draw_networkx_labels(h, pos, ax=ax, font_size=7,
                            labels={n: n.split(":", 1)[1] for n in h})  # fmt: skip
    handles = [plt.Line2D([], [], color=c, label=t) for t, c in EDGE_COLORS.items()]
    ax.legend(handles=handles, fontsize=7, loc="lower left")
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def sweep_sections(res, out_dir: str, top: int) -> list[tuple]:
    """(title, text, table, image) sections for one sweep."""
    name, s = res.sweep.name, res.schema
    schema_text = (f"{len(res.sweep.table)} replicates from {len(res.sweep.sources)} sources; "
                   f"factors {s.factors}; task column `{s.task}`; seed column `{s.seed}`; "
                   f"aliases {({k: list(v) for k, v in s.aliases.items() if v})}; "
                   f"{len(s.metrics)} metrics; {len(res.directions)} directions; "
                   f"{len(res.relations)} tests (one BH family). "
                   + " ".join(res.sweep.notes))  # fmt: skip
    cov = explore.coverage(res.sweep.table, s)
    miss = explore.missingness(res.sweep.table, s)
    sec = [(f"Sweep `{name}`", schema_text, None, None),
           ("Coverage (replicates per level)", "", cov, None),
           ("Missingness", "", miss[miss["missing"] > 0], None)]  # fmt: skip
    if res.replication:
        rep = res.replication
        text = (
            f"split: {rep.split}; discovery {len(rep.disc_ids)} replicates, validation "
            f"{len(rep.val_ids)} (disjoint run ids); {len(rep.validations)} validations."
        )
        sec.append(("Replication rate", text, replicate.rates(rep), None))
    n_claims = len(distinct_claims(res.hypotheses))
    sec.append((f"Ranked hypotheses (top {top} of {n_claims} claims, {len(res.hypotheses)} tests)", "",
                hypothesis_table(res.hypotheses, top), None))  # fmt: skip
    sec.append(("Open questions (tested, not supported at q < alpha)",
                "lowest-q test per direction; TOST equivalence tests excluded",
                open_questions(res.relations, top), None))  # fmt: skip
    forest = forest_plot(list(res.hypotheses), os.path.join(out_dir, f"{name}_forest.png"))
    gplot = graph_plot(res.graph, os.path.join(out_dir, f"{name}_graph.png"))
    sec += [("Forest plot", "effect and 95% CI (metric units, own scale per row)", None, forest),
            ("Relation graph", "supported edges", None, gplot)]  # fmt: skip
    if res.proposal:
        p = res.proposal
        sec.append(("Proposed next sweep", f"{p.reason}; cells {list(p.cells)}; seeds "
                    f"{list(p.seeds)}; config file `{name}_next_sweep.py`", None, None))  # fmt: skip
    return sec


def render(sections: list[tuple], out_dir: str, title: str) -> None:
    md, body = [f"# {title}\n"], [f"<h1>{html.escape(title)}</h1>"]
    for head, text, table, image in sections:
        md.append(f"## {head}\n")
        body.append(f"<h2>{html.escape(head)}</h2>")
        if text:
            md.append(text + "\n")
            body.append(f"<p>{html.escape(text)}</p>")
        if table is not None:
            md.append(md_table(table) + "\n")
            body.append(table.to_html(index=False, escape=True))
        if image:
            rel = os.path.relpath(image, out_dir)
            md.append(f"![{head}]({rel})\n")
            body.append(f'<img src="{html.escape(rel)}" style="max-width:100%">')
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("\n".join(md))
    with open(os.path.join(out_dir, "report.html"), "w") as f:
        f.write(
            "<html><head><meta charset='utf-8'></head><body>" + "".join(body) + "</body></html>"
        )
