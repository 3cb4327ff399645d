"""``reproduce``: run claims, check them, draw their figures and write an index page.

For every claim of :mod:`jaxdist.experiments.claims`: ``<out>/<claim>/results.json`` (the
measurements), ``verdict.json``, the figures (PNG and PDF), and the units of work in
``<out>/<claim>/units/`` (the resume cache, see :class:`~jaxdist.experiments.Context`). Then
``<out>/index.html`` and ``<out>/index.md``: every claim with its verdict, measured against
predicted, and its figures. A claim that raises is recorded as an error and the others still run.
"""

from __future__ import annotations

import html
import json
import os
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from jaxdist.experiments._claims import Context, Verdict, atomic_write

__all__ = ["replot", "reproduce"]

SIZES = ("quick", "full")


def reproduce(
    out_dir: str = "results",
    *,
    names: Sequence[str] | None = None,
    quick: bool = False,
    force: bool = False,
    seed: int = 0,
    plots: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Runs the claims ``names`` (default: all), checks them and writes the index page.

    Args:
      out_dir: results folder.
      names: claim names (default every claim, in the lecture's order).
      quick: the small sizes (tests, ``reproduce --quick``: minutes on 2 CPU cores) instead of
        the full ones.
      force: rerun every unit of work, even those stored with the same configuration.
      seed: the seed of every run, an integer in ``[0, 2**32)``.
      plots: draw the figures (needs matplotlib).
      log: where progress lines go.

    Returns:
      ``{claim: {"verdict": ..., "figures": [...], "seconds": ..., "compute_seconds": ...}}``
      (``seconds``: this call; ``compute_seconds``: the units' own time, loaded ones too; also in
      ``<out>/index.json``).

    Raises:
      ValueError: an unknown claim name, a bad seed, or an unusable ``out_dir``.
    """
    from jaxdist.experiments.claims import CLAIMS, get_claim

    if names is None:
        names = list(CLAIMS)
    claims = [get_claim(n) for n in names]  # unknown names refused before anything runs
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"out_dir {out_dir!r} exists and is not a folder")
    size = SIZES[0] if quick else SIZES[1]
    index_path = os.path.join(out_dir, "index.json")
    try:
        with open(index_path) as f:
            index = json.load(f)
        if not isinstance(index, dict):
            index = {}
    except (OSError, ValueError):
        index = {}
    start = time.perf_counter()
    for i, claim in enumerate(claims, 1):
        done = time.perf_counter() - start
        left = sum(c.quick_seconds for c in claims[i - 1 :]) if quick else None
        eta = f", about {left:.0f} s left" if left is not None else ""
        log(
            f"[{i}/{len(claims)}] {claim.name} ({claim.section}): {claim.claim} ({done:.0f} s{eta})"
        )
        folder = os.path.join(out_dir, claim.name)
        ctx = Context(
            claim.name, folder, size, seed=seed, force=force, log=log, version=claim.version
        )
        t = time.perf_counter()
        entry: dict[str, Any] = {"section": claim.section, "claim": claim.claim, "size": size}
        try:
            results = claim.run(ctx)
            atomic_write(os.path.join(folder, "results.json"), json.dumps(results, indent=1))
            v = claim.check(results)
            entry["verdict"] = v._asdict()
            entry["figures"] = []
            if plots:
                entry["figures"] = [
                    os.path.relpath(p, out_dir) for p in claim.plot(results, v, folder)
                ]
            status = "PASS" if v.passed else "FAIL"
            log(f"[{claim.name}] {status}: {v.text}")
        except KeyboardInterrupt:
            raise
        except Exception as e:  # one claim's failure is reported; the others still run
            entry["error"] = f"{type(e).__name__}: {e}"
            entry["traceback"] = traceback.format_exc()
            log(f"[{claim.name}] ERROR: {entry['error']}")
        entry["seconds"] = round(time.perf_counter() - t, 1)
        entry["units"] = {"ran": ctx.units_run, "loaded": ctx.units_loaded}
        entry["compute_seconds"] = round(ctx.compute_seconds, 1)
        atomic_write(os.path.join(folder, "verdict.json"), json.dumps(entry, indent=1))
        index[claim.name] = entry
        _write_index(out_dir, index)
    return {n: index[n] for n in names}


def replot(out_dir: str = "results", names: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Redraws the figures of claims already run into ``out_dir`` from their ``results.json``
    (the check is recomputed from the results), and rewrites the index pages.

    Args:
      out_dir: the results folder given to :func:`reproduce`.
      names: claim names (default: every claim with results in ``out_dir``).

    Returns:
      ``{claim: [figure paths]}``.

    Raises:
      ValueError: an unknown claim, or one without results in ``out_dir``.
    """
    from jaxdist.experiments.claims import CLAIMS, get_claim

    if names is None:
        names = [n for n in CLAIMS if os.path.isfile(os.path.join(out_dir, n, "results.json"))]
    index_path = os.path.join(out_dir, "index.json")
    try:
        with open(index_path) as f:
            index = json.load(f)
    except (OSError, ValueError):
        index = {}
    out = {}
    for name in names:
        claim = get_claim(name)
        path = os.path.join(out_dir, name, "results.json")
        try:
            with open(path) as f:
                results = json.load(f)
        except FileNotFoundError:
            raise ValueError(
                f"claim {name!r} has not been run into {out_dir!r} (no {path}); run it first: "
                f"jaxdist reproduce --only {name} --out {out_dir}"
            ) from None
        v = claim.check(results)
        figures = claim.plot(results, v, os.path.join(out_dir, name))
        out[name] = figures
        entry = index.get(
            name, {"section": claim.section, "claim": claim.claim, "size": "?", "seconds": 0.0}
        )
        entry.update(verdict=v._asdict(), figures=[os.path.relpath(p, out_dir) for p in figures])
        index[name] = entry
    _write_index(out_dir, index)
    return out


def _status(entry: dict[str, Any]) -> str:
    if "error" in entry:
        return "ERROR"
    return "PASS" if entry["verdict"]["passed"] else "FAIL"


def _order(index: dict[str, Any]) -> list[str]:
    from jaxdist.experiments.claims import CLAIMS

    known = [n for n in CLAIMS if n in index]
    return known + sorted(n for n in index if n not in CLAIMS)


def _write_index(out_dir: str, index: dict[str, Any]) -> None:
    """``index.json``, ``index.md`` and ``index.html`` of every claim run into ``out_dir``."""
    atomic_write(os.path.join(out_dir, "index.json"), json.dumps(index, indent=1))
    names = _order(index)
    md = ["# jaxdist: the lecture's claims, reproduced", ""]
    md.append("| claim | § | size | verdict | measured | predicted |")
    md.append("|---|---|---|---|---|---|")
    for n in names:
        e = index[n]
        v = e.get("verdict") or {"measured": e.get("error", ""), "predicted": ""}
        md.append(
            f"| [{n}](#{n}) | {e['section']} | {e['size']} | **{_status(e)}** | "
            f"{v['measured']} | {v['predicted']} |"
        )
    for n in names:
        e = index[n]
        md += [
            "",
            f"## {n}",
            "",
            f"{e['claim']} ({e['section']}; {e['size']} size, computed in "
            f"{e.get('compute_seconds', e['seconds'])} s)",
            "",
        ]
        for line in (e.get("verdict") or {}).get("details", []):
            md.append(f"- {line}")
        if "error" in e:
            md.append(f"- ERROR: {e['error']}")
        for fig in e.get("figures", []):
            if fig.endswith(".png"):
                md += ["", f"![{n}]({fig})"]
    atomic_write(os.path.join(out_dir, "index.md"), "\n".join(md) + "\n")

    esc = html.escape
    rows = []
    for n in names:
        e = index[n]
        v = e.get("verdict") or {"measured": e.get("error", ""), "predicted": ""}
        s = _status(e)
        rows.append(
            f"<tr><td><a href='#{esc(n)}'>{esc(n)}</a></td><td>{esc(e['section'])}</td>"
            f"<td>{esc(e['size'])}</td><td class='{s}'>{s}</td><td>{esc(v['measured'])}</td>"
            f"<td>{esc(v['predicted'])}</td></tr>"
        )
    sections = []
    for n in names:
        e = index[n]
        items = "".join(
            f"<li>{esc(line)}</li>" for line in (e.get("verdict") or {}).get("details", [])
        )
        if "error" in e:
            items += f"<li class='ERROR'>ERROR: {esc(e['error'])}</li>"
        figs = "".join(
            f"<p><a href='{esc(f[:-4])}.pdf'><img src='{esc(f)}' alt='{esc(n)}'></a></p>"
            for f in e.get("figures", [])
            if f.endswith(".png")
        )
        sections.append(
            f"<h2 id='{esc(n)}'>{esc(n)} <span class='{_status(e)}'>{_status(e)}</span></h2>"
            f"<p>{esc(e['claim'])} ({esc(e['section'])}; {esc(e['size'])} size, computed in "
            f"{e.get('compute_seconds', e['seconds'])} s)</p><ul>{items}</ul>{figs}"
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>jaxdist: the lecture's claims"
        "</title><style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px;font-size:13px}"
        ".PASS{color:#070;font-weight:bold}.FAIL,.ERROR{color:#b00;font-weight:bold}"
        "img{max-width:100%}</style></head><body><h1>jaxdist: the lecture's claims, reproduced"
        "</h1><table><tr><th>claim</th><th>§</th><th>size</th><th>verdict</th><th>measured</th>"
        f"<th>predicted</th></tr>{''.join(rows)}</table>{''.join(sections)}</body></html>\n"
    )
    atomic_write(os.path.join(out_dir, "index.html"), page)


def verdict_from_dict(d: dict[str, Any]) -> Verdict:
    """The :class:`Verdict` stored in a ``verdict.json`` or ``index.json`` entry."""
    return Verdict(d["passed"], d["measured"], d["predicted"], tuple(d.get("details", ())))
