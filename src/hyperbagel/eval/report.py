"""The quickstart report, a pure function of its JSON (``eval/report_data.py`` gathers it): the paper's tables for
Shapes World as text (``paper_tables``) and one self-contained HTML page (``render_html``: tables, matplotlib plots
and image grids inlined as base64 PNG, and the exact command and settings behind every number).

Tables: 1, the speculative-decoding ablation (τ and 10-α at chain γ = 10, the paper's numbers beside ours);
2, GenEval-Shapes per tag; 3, GEdit-Shapes (semantic consistency, perceptual quality, overall, per tag); and a speed
table of forwards and wall-clock speedups for every task.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass

from hyperbagel.eval.paired import diff_cell

GEN_TAGS_SHORT = {"single_object": "single", "two_object": "two", "counting": "counting", "colors": "colors",
                  "position": "position", "color_attr": "color attr."}


@dataclass
class Table:
    title: str
    head: list[str]
    rows: list[list[str]]
    note: str = ""
    left: int = 1  # leading columns of text (left-aligned in HTML)


def _f(x, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and x != x:
        return "—"
    return f"{x:.{digits}f}"


def _delta(row: dict) -> str:
    """A bench row's difference from the teacher with its 95 % interval, or a dash for the teacher itself."""
    vs = row.get("vs_teacher")
    return diff_cell(vs) if vs else "—"


def _missing_note(data: dict, prefix: str) -> str:
    gone = [s for s in data.get("stages", []) if s["name"].startswith(prefix) and s["status"] == "not available"]
    return "; ".join(f"{s['name']}: not available ({s['reason']})" for s in gone)


def table1(data: dict) -> Table | None:
    u = data.get("understand")
    if not u:
        return None
    speed = {}
    for r in u["rows"]:
        spec = r.get("spec") or {}
        if spec.get("mode") == "chain" and spec.get("gamma") == 10:
            speed[r["draft"]] = r["splits"]["all"]["speedup"]
    rows = [[t["variant"], _f(t["tau"], 4), _f(t["alpha_10"], 4), f"{_f(speed.get(t['variant']), 2)}×",
             _f(t["paper_tau"], 4), _f(t["paper_alpha_10"], 4)] for t in u["table1"]]
    n = u["greedy_identity"]["items"]
    ident = "every row token-identical to plain decoding" if u["greedy_identity"]["all_identical"] else \
        "NOT every row identical to plain decoding"
    return Table("Table 1: speculative-decoding ablation (chain γ = 10, all items)",
                 ["draft", "τ", "10-α", "speedup", "paper τ", "paper 10-α"], rows,
                 f"{n} items (vqa-shapes answers, descriptions, think plans), greedy, batch 1; {ident}.")


def table2(data: dict) -> Table | None:
    g = data.get("generate")
    if not g:
        return None
    tags = list(g["rows"][0]["tags"])
    rows = []
    for r in g["rows"]:
        rows.append([r["row"], f"{r['forwards_per_image']:.0f}", *(_f(r["tags"][t]) for t in tags), _f(r["overall"]),
                     _delta(r)])
    note = f"{g['items']} prompts × {g['samples']} samples, the same seeds and noise in every row"
    missing = _missing_note(data, "distill-")
    return Table("Table 2: GenEval-Shapes per tag", ["row", "fwd/img", *(GEN_TAGS_SHORT.get(t, t) for t in tags),
                                                     "overall", "Δ vs teacher [95% CI]"], rows,
                 note + (f". {missing}." if missing else "."))


def table3(data: dict) -> Table | None:
    e = data.get("edit")
    if not e:
        return None
    tags = list(e["rows"][0]["tags"])
    rows = []
    for r in e["rows"]:
        s = r["scores"]
        rows.append([r["row"], f"{r['forwards_per_image']:.0f}", _f(s["SC"]["overall"]), _f(s["PQ"]["overall"]),
                     _f(r["overall"]), *(_f(r["tags"][t]) for t in tags), _delta(r)])
    return Table("Table 3: GEdit-Shapes", ["row", "fwd/img", "SC", "PQ", "overall", *tags, "Δ vs teacher [95% CI]"],
                 rows, f"{e['items']} edits × {e['samples']} samples; SC = the edit is right, PQ = pixel quality, "
                       "overall per tag.")


def speed_table(data: dict) -> Table | None:
    rows = []
    for task in ("generate", "edit"):
        b = data.get(task)
        if not b:
            continue
        for r in b["rows"]:
            rows.append([task, r["row"], f"{r['forwards_per_image']:.0f} / image", f"{r['seconds_per_image']:.4f} s",
                         f"{r['speedup']:.1f}×", f"{r['sample_speedup']:.1f}×"])
    u = data.get("understand")
    if u:
        for r in u["rows"]:
            s = r["splits"]["all"]
            rows.append(["understand", r["name"], f"{s['target_forwards'] / max(s['tokens'], 1):.2f} / token",
                         f"{1 / s['tokens_per_s']:.4f} s/token" if s["tokens_per_s"] else "—",
                         f"{s['speedup']:.2f}×", "—"])
    if not rows:
        return None
    return Table("Speed: forwards and wall-clock speedups", ["task", "row", "forwards", "wall clock",
                                                             "speedup (end to end)", "speedup (sampling loop)"],
                 rows, "Generation and editing: language-model forwards per image, end to end (prefills, sampling, "
                       "VAE decode); understanding: target forwards per committed token, decoding only. Every "
                       "speedup is against the baseline row measured in the same run, rows interleaved.", left=2)


def tables(data: dict) -> list[Table]:
    return [t for t in (table1(data), table2(data), table3(data), speed_table(data)) if t is not None]


def markdown(t: Table) -> str:
    lines = [f"### {t.title}", "", "| " + " | ".join(t.head) + " |", "|" + "---|" * len(t.head)]
    lines += ["| " + " | ".join(r) + " |" for r in t.rows]
    if t.note:
        lines += ["", t.note]
    return "\n".join(lines)


def paper_tables(data: dict) -> str:
    """Tables 1–3 and the speed table as Markdown; the benches that did not run are named."""
    parts = [markdown(t) for t in tables(data)]
    missing = [k for k in ("understand", "generate", "edit") if not data.get(k)]
    if missing:
        parts.append("Not run: " + ", ".join(f"bench {k}" for k in missing) + ".")
    gone = [s for s in data.get("stages", []) if s["status"] == "not available"]
    if gone:
        parts.append("Not available: " + "; ".join(f"{s['name']} ({s['reason']})" for s in gone) + ".")
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------------------------------------------
# plots


def _fig_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_quality(data: dict) -> str | None:
    """Quality against forwards per image, text-to-image and editing, one point per bench row."""
    tasks = [(t, data[t]) for t in ("generate", "edit") if data.get(t)]
    if not tasks:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 3.8), squeeze=False)
    for ax, (task, b) in zip(axes[0], tasks):
        placed: list[tuple[float, float]] = []
        for r in b["rows"]:
            kind = "teacher" if r["row"] == "teacher" else ("peer" if r["row"].endswith("-6f") else "student")
            style = {"teacher": ("k", "s"), "peer": ("tab:gray", "^"), "student": ("tab:red", "o")}[kind]
            x, y = r["forwards_per_image"], r["overall"]
            ax.scatter(x, y, c=style[0], marker=style[1], zorder=3)
            # stack the labels of points that (nearly) coincide on the log axis
            k = sum(1 for px, py in placed if 0.75 < px / x < 1.33 and abs(py - y) < 0.03)
            placed.append((x, y))
            ax.annotate(r["row"], (x, y), textcoords="offset points", xytext=(4, 3 + 8 * k), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("language-model forwards per image")
        ax.set_ylabel(f"{b['suite']} overall")
        ax.set_title("text-to-image" if task == "generate" else "editing")
        ax.grid(alpha=0.3)
    return _fig_png(fig)


def plot_speedup_gamma(data: dict) -> str | None:
    """Wall-clock speedup (and τ) against the chain length γ, from the bench's calibration sweep."""
    u = data.get("understand")
    sweep = (u or {}).get("calibration", {}).get("sweep") or []
    chains = [s for s in sweep if s["spec"].get("mode", "chain") == "chain"]  # prompt lookup's have no mode
    if not chains:
        return None
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for draft in dict.fromkeys(s["draft"] for s in chains):
        pts = sorted((s["spec"]["gamma"], s["speedup"], s["tau"]) for s in chains if s["draft"] == draft)
        label = draft or "prompt lookup (no draft)"
        a1.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
        a2.plot([p[0] for p in pts], [p[2] for p in pts], "o-", label=label)
    a1.axhline(1.0, color="k", lw=0.8, ls="--")
    a1.set_xlabel("γ (draft tokens per verification)")
    a1.set_ylabel("speedup over plain decoding")
    a2.set_xlabel("γ")
    a2.set_ylabel("τ (tokens per target forward)")
    n = chains[0]["items"]
    a1.set_title(f"speedup against γ ({n} calibration items)")
    a2.set_title("τ against γ")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    return _fig_png(fig)


def plot_acceptance(data: dict) -> str | None:
    """α_n, acceptance at draft position n given all before it accepted (chain γ = 10), per draft."""
    u = data.get("understand")
    if not u:
        return None
    rows = [r for r in u["rows"] if (r.get("spec") or {}).get("mode") == "chain" and r["spec"]["gamma"] == 10]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    for r in rows:
        per = r["splits"]["all"]["alpha_per_position"]
        xs = [i + 1 for i, a in enumerate(per) if a == a]
        ax.plot(xs, [a for a in per if a == a], "o-", label=r["draft"])
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("draft position n")
    ax.set_ylabel("α_n")
    ax.set_ylim(0, 1.02)
    ax.set_title("acceptance by draft position (chain γ = 10)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _fig_png(fig)


# ----------------------------------------------------------------------------------------------------------------
# HTML

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1250px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .88em; }
th, td { border: 1px solid #ddd; padding: .25em .5em; text-align: right; vertical-align: top; }
th { background: #f3f3f3; text-align: left; } td:first-child { text-align: left; }
td.text { text-align: left; max-width: 28em; }
.note { color: #555; font-size: .88em; } .warn { color: #a40; }
img.px { image-rendering: pixelated; width: 128px; height: 128px; display: block; }
.grid td { text-align: center; font-size: .8em; } .grid td.label { text-align: left; white-space: nowrap; }
code, pre { background: #f6f6f6; font-size: .82em; } pre { padding: .5em; overflow-x: auto; white-space: pre-wrap; }
details { margin: .2em 0 .6em 0; } .plot { max-width: 100%; }
"""


def _e(x) -> str:
    return html.escape(str(x))


def _img(b64: str | None, alt: str = "") -> str:
    if not b64:
        return "—"
    return f'<img class="px" alt="{_e(alt)}" src="data:image/png;base64,{b64}">'


def _html_table(t: Table) -> str:
    def cell(tag: str, i: int, c: str) -> str:
        align = "left" if i < t.left else "right"
        return f"<{tag} style='text-align:{align}'>{_e(c)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(t.head))
    body = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(r)) + "</tr>" for r in t.rows)
    note = f'<p class="note">{_e(t.note)}</p>' if t.note else ""
    return f"<h3>{_e(t.title)}</h3><table><tr>{head}</tr>{body}</table>{note}"


def _grid_html(g: dict, title: str) -> str:
    cols = g["columns"]
    head = "<tr><td class='label'></td>" + "".join(
        f"<td>{_e(c['text'])}<br><span class='note'>{_e(c['tag'])}</span></td>" for c in cols) + "</tr>"
    body = ""
    if any(c.get("source") for c in cols):
        body += "<tr><td class='label'>source</td>" + "".join(f"<td>{_img(c['source'], 'source')}</td>"
                                                              for c in cols) + "</tr>"
    for r in g["rows"]:
        body += (f"<tr><td class='label'><b>{_e(r['row'])}</b><br>{r['forwards_per_image']:.0f} fwd/img</td>"
                 + "".join(f"<td>{_img(im, r['row'])}</td>" for im in r["images"]) + "</tr>")
    return (f"<h3>{_e(title)}</h3><p class='note'>Sample {g['sample']} of each item: the same seed, so the same "
            f"initial noise (and, for edits, the same VAE posterior draw of the source) in every row.</p>"
            f"<table class='grid'>{head}{body}</table>")


def _showcase_html(s: dict) -> str:
    out = [f"<p class='note'>Teacher {_e(s['teacher'])}; draft {_e(s['draft'])} ({_e(s['spec'])}); student "
           f"{_e(s['student'] or 'none')}. Greedy decoding: speculative output must equal plain output.</p>"]
    if s["answers"]:
        out.append("<h3>Answers: plain and speculative decoding</h3><table><tr><th>image</th><th>question</th>"
                   "<th>expected</th><th>answer</th><th>plain fwd / s</th><th>speculative fwd / s</th>"
                   "<th>identical</th><th>correct</th></tr>")
        for a in s["answers"]:
            p, q = a["plain"], a["speculative"]
            out.append(f"<tr><td>{_img(a['image'])}</td><td class='text'>{_e(a['question'])}</td>"
                       f"<td class='text'>{_e(a['expected'])}</td><td class='text'>{_e(p['text'])}</td>"
                       f"<td>{p['forwards']} / {p['seconds']:.3f}</td><td>{q['forwards']} / {q['seconds']:.3f}</td>"
                       f"<td>{'yes' if a['identical'] else 'NO'}</td><td>{'yes' if a['correct'] else 'no'}</td></tr>")
        out.append("</table>")
    if s["generations"]:
        out.append("<h3>Think mode: plan, then image (baseline and accelerated, same seed)</h3><table><tr>"
                   "<th>prompt</th><th>plan</th><th>baseline</th><th>accelerated</th><th>plan identical</th></tr>")
        for g in s["generations"]:
            b, a = g["baseline"], g["accelerated"]
            out.append(f"<tr><td class='text'>{_e(g['prompt'])}<br><span class='note'>{_e(g['tag'])}, seed "
                       f"{g['seed']}</span></td><td class='text'>{_e(b['plan'])}</td>"
                       f"<td>{_img(b['image'])}{b['forwards']} fwd, {b['seconds']:.2f} s</td>"
                       f"<td>{_img(a['image'])}{a['forwards']} fwd, {a['seconds']:.2f} s</td>"
                       f"<td>{'yes' if g['plan_identical'] else 'NO'}</td></tr>")
        out.append("</table>")
    return "".join(out)


def _reward_html(data: dict) -> str:
    out = []
    if data.get("reward"):
        out.append("<h3>Reward model against the exact judge (held-out renders and generated images)</h3>"
                   f"<pre>{_e(data['reward'].get('table', ''))}</pre>")
    probes = data.get("refl_probes") or []
    if probes:
        keys = [k for k in probes[0] if k != "step"]
        t = Table("ReFL probes: the reward and the exact judge on held-out rows, before and during training",
                  ["step", *(k.removeprefix("probe/") for k in keys)],
                  [[str(p["step"]), *(_f(p.get(k)) for k in keys)] for p in probes],
                  "ReFL climbs the reward; the judge beside it shows whether the images got better or the reward "
                  "was gamed.")
        out.append(_html_table(t))
    return "".join(out)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _stages_html(data: dict) -> str:
    out = ["<table><tr><th>stage</th><th>status</th><th>time</th><th>command and settings</th></tr>"]
    for s in data["stages"]:
        status = s["status"] + (f": {s['reason']}" if s.get("reason") else "")
        cls = " class='warn'" if s["status"] != "done" else ""
        detail = f"<code>{_e(s['command'])}</code>"
        if s.get("config"):
            detail += (f"<details><summary>--config JSON</summary><pre>{_e(json.dumps(s['config'], indent=1))}</pre>"
                       "</details>")
        if s.get("results"):
            detail += (f"<details><summary>results</summary><pre>{_e(json.dumps(s['results'], indent=1))}</pre>"
                       "</details>")
        time_cell = _clock(s["seconds"]) if "seconds" in s else "—"
        out.append(f"<tr><td>{_e(s['name'])}<br><span class='note'>{_e(s['describe'])}</span></td>"
                   f"<td{cls}>{_e(status)}</td><td>{time_cell}</td><td class='text'>{detail}</td></tr>")
    out.append("</table>")
    return "".join(out)


def render_html(data: dict) -> str:
    """The whole page from the report JSON alone."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(data['title'])}</title>"
             f"<style>{CSS}</style></head><body><h1>{_e(data['title'])}</h1>"]
    m = data.get("machine") or {}
    parts.append(f"<p class='note'>Run folder <code>{_e(data['run'])}</code> · preset {_e(data['preset'])} · "
                 f"hyperbagel {_e(data.get('version'))} (git {_e(data.get('git') or '?')}) · "
                 f"{_e(m.get('platform', '?'))}, torch {_e(m.get('torch', '?'))}, {_e(m.get('threads', '?'))} "
                 f"threads · compute time of all stages {_clock(data['total_seconds'])} · report built "
                 f"{_e(data['generated'])}. Rebuild with <code>hyperbagel report {_e(data['run'])}</code>.</p>")
    if data.get("preset") == "micro":
        parts.append("<p class='warn'>micro is a smoke run: every model trains for seconds, so the scores say that "
                     "the pipeline works end to end, not how well the method works. The forwards are exact; the "
                     "speedups are real but small models on a busy machine.</p>")
    gone = [s for s in data["stages"] if s["status"] != "done"]
    if gone:
        parts.append("<p class='warn'>" + "<br>".join(
            f"{_e(s['name'])}: {_e(s['status'])}" + (f" — {_e(s['reason'])}" if s.get("reason") else "")
            for s in gone) + "</p>")
    parts.append("<h2>The paper's tables for Shapes World</h2>")
    parts += [_html_table(t) for t in tables(data)] or ["<p>No bench has run yet.</p>"]
    parts.append("<h2>Plots</h2>")
    for title, png in (("Quality against forwards per image", plot_quality(data)),
                       ("Speedup against γ", plot_speedup_gamma(data)),
                       ("Acceptance by draft position", plot_acceptance(data))):
        parts.append(f"<h3>{_e(title)}</h3>" + (f"<img class='plot' alt='{_e(title)}' "
                                               f"src='data:image/png;base64,{png}'>" if png else
                                               "<p class='note'>no data</p>"))
    parts.append("<h2>Images</h2>")
    grids = data.get("grids") or {}
    for task, title in (("generate", "Text-to-image: teacher, peers and every distilled stage on the same noise"),
                        ("edit", "Editing: sources, then every row on the same noise")):
        if grids.get(task):
            parts.append(_grid_html(grids[task], title))
    if data.get("showcase"):
        parts.append("<h2>Answers and plans</h2>" + _showcase_html(data["showcase"]))
    if data.get("reward") or data.get("refl_probes"):
        parts.append("<h2>The reward model and ReFL</h2>" + _reward_html(data))
    parts.append("<h2>Commands and settings behind every number</h2><p class='note'>Each stage ran in the order "
                 "below, exactly as shown (paths relative to where <code>hyperbagel quickstart</code> ran); the "
                 "<code>--config</code> files are in the run folder's <code>configs/</code>, each stage's log in "
                 "<code>logs/</code>, its marker (<code>DONE.json</code>) in its folder.</p>")
    parts.append(_stages_html(data))
    parts.append(f"<details><summary>QuickstartConfig</summary><pre>{_e(json.dumps(data.get('config'), indent=1))}"
                 "</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)
