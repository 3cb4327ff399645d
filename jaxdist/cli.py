"""The ``jaxdist`` command: list, run and plot the named experiments.

``jaxdist`` alone runs the main job, the ``bits`` experiment on the shipped mushrooms data, and
writes JSON/CSV results and a PNG figure under ``results/``. Finished arms are kept: running the
command again loads every arm whose configuration is unchanged and reruns the others
(``--force`` reruns everything).

Arguments are parsed before anything heavy is imported (``jaxdist --help`` and ``--version``
never import JAX). Every error is one line on stderr naming the flag or argument at fault and
what is valid, with exit status 2::

    >>> from jaxdist.cli import main
    >>> main(["run", "nope"])  # stderr: jaxdist run: error: argument NAME: unknown experiment ...
    2
    >>> main(["run", "top1", "--steps", "0"])  # ... argument --steps: must be ...
    2
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import textwrap
from typing import Any, NoReturn

_USAGE_ERROR = 2

# Library parameter names -> the flags that set them, to rewrite library error messages
# ("num_steps must be ..." -> "--steps must be ..."). The plain word "seed" is a parameter only
# where a value or a requirement follows it.
_FLAGS = (
    (r"\bnum_steps\b", "--steps"),
    (r"\bnum_rounds\b", "--steps"),
    (r"\bout_dir\b", "--out"),
    (r"\bseed\b(?=( must|=| =))", "--seed"),
)


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr (no usage block), exit 2."""

    def error(self, message: str) -> NoReturn:
        _fail(self.prog, message)


def _fail(prog: str, message: str, *, hint: bool = True) -> NoReturn:
    line = " ".join(str(message).split())  # one line, whatever the message
    see = f" (see '{prog} --help')" if hint else ""
    sys.stderr.write(f"{prog}: error: {line}{see}\n")
    raise SystemExit(_USAGE_ERROR)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**32), got {text!r}")
    return value


def _catalogue() -> dict[str, Any]:
    # JAX-free: the experiments are plain data and the package imports lazily.
    from jaxdist.experiments._named import EXPERIMENTS

    return EXPERIMENTS


def _claims() -> dict[str, Any]:
    # JAX-free: a claim's module imports JAX only when it runs.
    from jaxdist.experiments.claims import CLAIMS, get_claim

    return {name: get_claim(name) for name in CLAIMS}


def _claims_text() -> str:
    width = max(60, min(100, shutil.get_terminal_size().columns) - 2)
    return "\n".join(
        textwrap.fill(
            f"{c.section} {c.claim}",
            width,
            initial_indent=f"  {n:22s} ",
            subsequent_indent=" " * 25,
        )
        for n, c in _claims().items()
    )


def _experiments_text() -> str:
    """The experiments and their one-line claims, wrapped to the terminal (for ``--help``)."""
    width = max(60, min(100, shutil.get_terminal_size().columns) - 2)
    lines = []
    for name, exp in _catalogue().items():
        lines.append(
            textwrap.fill(
                exp.claim,
                width,
                initial_indent=f"  {name:16s} ",
                subsequent_indent=" " * 19,
            )
        )
    return "\n".join(lines)


class _Formatter(argparse.HelpFormatter):
    """Wraps the description as usual but keeps the epilog (the experiments) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith(("experiments:", "claims:")):
            return text
        return super()._fill_text(text, width, indent)


def _parser() -> tuple[_Parser, dict[str, _Parser]]:
    epilog = (
        "experiments:\n"
        + _experiments_text()
        + "\n\nclaims (jaxdist reproduce):\n"
        + (_claims_text())
    )
    every = " or ".join(sorted({str(e.log_every) for e in _catalogue().values()}))
    parser = _Parser(
        prog="jaxdist",
        description="Communication-efficient distributed optimization in JAX: named experiments "
        "that reproduce the lecture's claims, measured in rounds and exact bits. Plain "
        "'jaxdist' is 'jaxdist run bits'.",
        epilog=epilog,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    # Plain `jaxdist` is `jaxdist run bits`: the run options have defaults at the top level too.
    parser.set_defaults(
        command="run",
        names=["bits"],
        out="results",
        force=False,
        steps=None,
        seed=0,
        no_plot=False,
        quick=False,
    )
    sub = parser.add_subparsers(dest="command", metavar="{list,run,reproduce,plot}")
    list_p = sub.add_parser(
        "list",
        help="list the named experiments, the claims, the methods and the compressors",
        description="List the named experiments, the methods and the compressors.",
    )
    run_p = sub.add_parser(
        "run",
        help="run named experiments or claims (default: bits)",
        description="Run named experiments and write <out>/<name>/: one JSON file per arm, "
        "summary.json, summary.csv and a PNG figure. Finished arms whose configuration is "
        "unchanged are loaded, not rerun; edited arms are rerun.",
        epilog=epilog,
        formatter_class=_Formatter,
    )
    run_p.add_argument(
        "names",
        nargs="*",
        default=["bits"],
        metavar="NAME",
        help="experiment or claim names, or 'all' (the experiments)",
    )
    run_p.add_argument(
        "--out", default="results", metavar="DIR", help="results folder (default: results)"
    )
    run_p.add_argument("--force", action="store_true", help="rerun every arm, even finished ones")
    run_p.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        metavar="N",
        help=f"override the number of steps (a point is logged every {every} steps and at the "
        "last)",
    )
    run_p.add_argument(
        "--seed", type=_seed, default=0, metavar="S", help="seed of the runs (default: 0)"
    )
    run_p.add_argument("--no-plot", action="store_true", help="skip the PNG figure")
    run_p.add_argument(
        "--quick", action="store_true", help="claims only: the small size (seconds, for tests)"
    )
    rep_p = sub.add_parser(
        "reproduce",
        help="run every claim of the lecture, check it, and write an index page",
        description="Run every claim of the lecture (jaxdist list shows them), check each "
        "against its prediction, draw its figures (PNG and PDF) and write <out>/index.html and "
        "<out>/index.md with every verdict, table and figure. Finished units of work are "
        "loaded, not rerun (keyed on a hash of their whole configuration); an interrupted run "
        "resumes. Exit status 1 when some claim fails.",
        epilog="claims:\n" + _claims_text(),
        formatter_class=_Formatter,
    )
    rep_p.add_argument(
        "--quick", action="store_true", help="small sizes: a few minutes on 2 CPU cores"
    )
    rep_p.add_argument(
        "--out", default="results", metavar="DIR", help="results folder (default: results)"
    )
    rep_p.add_argument(
        "--seed", type=_seed, default=0, metavar="S", help="seed of the runs (default: 0)"
    )
    rep_p.add_argument("--force", action="store_true", help="rerun every unit of work")
    rep_p.add_argument("--no-plot", action="store_true", help="skip the figures")
    rep_p.add_argument(
        "--only", nargs="+", default=None, metavar="NAME", help="run only these claims"
    )
    plot_p = sub.add_parser(
        "plot",
        help="plot finished experiments or redraw claims",
        description="Plot experiments or redraw claims already run into the results folder "
        "(a claim's check is recomputed from its results.json and the index pages rewritten).",
        epilog=epilog,
        formatter_class=_Formatter,
    )
    plot_p.add_argument(
        "names", nargs="+", metavar="NAME", help="experiment or claim names, or 'all'"
    )
    plot_p.add_argument(
        "--out", default="results", metavar="DIR", help="results folder (default: results)"
    )
    return parser, {"list": list_p, "run": run_p, "reproduce": rep_p, "plot": plot_p}


def _flags_in(message: str) -> str:
    """Rewrites the library's parameter names in an error message as the CLI's flags."""
    message = " ".join(message.split())
    for pattern, flag in _FLAGS:
        message = re.sub(pattern, flag, message)
    return message


def _resolve_names(prog: str, names: list[str], claims: bool = False) -> list[str]:
    experiments = _catalogue()
    if names == ["all"]:
        return list(experiments)
    valid = list(experiments) + [n for n in _claims() if claims and n not in experiments]
    for name in names:
        if name not in valid:
            what = "experiment or claim" if claims else "experiment"
            _fail(
                prog,
                f"argument NAME: unknown {what} {name!r}; choose from "
                f"{', '.join(valid)} (or 'all')",
            )
    return names


def _print_summary(summary: dict) -> None:
    print(f"  target: (f - f*) <= {summary['target']:g} * (f(x0) - f*)")
    print(f"  {'method':28s} {'step':>9s} {'rounds':>8s} {'bits up/worker':>16s} {'final':>9s}")
    for s in summary["arms"].values():
        rounds = "-" if s["rounds_to_target"] is None else str(s["rounds_to_target"])
        bits = "-" if s["bits_up_to_target"] is None else f"{s['bits_up_to_target']:,}"
        if s["diverged"]:  # Trace.diverged: non-finite, or grown
            final = "diverged"
        elif abs(s["final_rel_gap"]) < 1e-7:
            final = "<1e-7"  # float32 resolution of f(x) - f*
        else:
            final = f"{s['final_rel_gap']:.2e}"
        print(f"  {s['label']:28s} {s['stepsize']:9.3g} {rounds:>8s} {bits:>16s} {final:>9s}")


def _returns(fn: Any, *bases: type) -> bool:
    """Whether ``fn`` is a function annotated to return a subclass of one of ``bases``."""
    import inspect

    if not inspect.isfunction(fn):
        return False
    ret = inspect.signature(fn).return_annotation
    if isinstance(ret, str):  # postponed annotations: resolve them as typing would
        namespace = {}
        for base in bases:
            namespace.update(vars(sys.modules[base.__module__]))
        try:
            ret = eval(ret, fn.__globals__, namespace)  # the package's own annotations
        except Exception:  # an annotation that does not resolve is not a factory's
            return False
    return isinstance(ret, type) and issubclass(ret, bases)


def _list() -> int:
    import inspect

    import optax

    import jaxdist.compressors as jc
    import jaxdist.methods as jm

    print("experiments:")
    print(_experiments_text())
    print("claims (jaxdist reproduce):")
    print(_claims_text())
    methods = getattr(jm, "FACTORIES", None)
    if methods is None:  # factories of methods, not the wrappers that take one
        kinds = (optax.GradientTransformation, jm.RoundMethod)
        wrapper_args = {"inner", "method", "transformation", "state"}
        methods = [
            n
            for n in jm.__all__
            if n[:1].islower()
            and _returns(getattr(jm, n), *kinds)
            and not wrapper_args & set(inspect.signature(getattr(jm, n)).parameters)
        ]
    print("methods:", ", ".join(methods))
    factories = getattr(jc, "FACTORIES", None)
    if factories is None:  # public functions returning a Compressor (not the helpers)
        factories = [
            n for n in jc.__all__ if n[:1].islower() and _returns(getattr(jc, n), jc.Compressor)
        ]
    print("compressors:", ", ".join(factories))
    return 0


def _plot(prog: str, names: list[str], out: str) -> int:
    names = _resolve_names(prog, names, claims=True)
    claims = [n for n in names if n not in _catalogue()]
    if claims:
        from jaxdist.experiments._reproduce import replot

        try:
            for paths in replot(out, claims).values():
                for path in paths:
                    print(path)
        except (ImportError, OSError, ValueError, KeyError) as e:
            _fail(prog, f"cannot plot: {e}", hint=False)
        names = [n for n in names if n in _catalogue()]
    for name in names:
        summary = os.path.join(out, name, "summary.json")
        if not os.path.isfile(summary):
            _fail(
                prog,
                f"argument NAME: experiment {name!r} has not been run into --out {out!r} "
                f"(no {summary}); run it first: jaxdist run {name} --out {out}",
                hint=False,
            )
    try:
        from jaxdist.plotting import plot_experiment

        for name in names:
            print(plot_experiment(name, out))
    except (ImportError, OSError, ValueError, KeyError) as e:
        _fail(prog, f"cannot plot: {e}")
    return 0


def _reproduce(prog: str, names: list[str] | None, args: argparse.Namespace) -> int:
    """Runs claims (all by default), prints each verdict and the index page; 1 if one fails."""
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        _fail(prog, f"argument --out: {args.out!r} exists and is not a folder")
    if names is not None:
        for name in names:
            if name not in _claims():
                _fail(
                    prog,
                    f"argument --only: unknown claim {name!r}; choose from {', '.join(_claims())}",
                )
    from jaxdist.experiments import reproduce

    try:
        index = reproduce(
            args.out,
            names=names,
            quick=args.quick,
            force=args.force,
            seed=args.seed,
            plots=not args.no_plot,
            log=lambda line: print(line, flush=True),
        )
    except (ValueError, OSError) as e:
        _fail(prog, _flags_in(str(e)))
    except KeyboardInterrupt:
        sys.stderr.write(
            f"{prog}: interrupted; finished units are saved, the same command resumes\n"
        )
        return 130
    print()
    print(f"  {'claim':24s} {'verdict':8s} {'seconds':>8s} {'computed':>9s}")
    failed = 0
    for name, entry in index.items():
        status = "ERROR" if "error" in entry else ("PASS" if entry["verdict"]["passed"] else "FAIL")
        failed += status != "PASS"
        computed = entry.get("compute_seconds", entry["seconds"])
        print(f"  {name:24s} {status:8s} {entry['seconds']:8.1f} {computed:9.1f}")
    print(f"  index: {os.path.join(args.out, 'index.html')} (and index.md)")
    return 1 if failed else 0


def _run(prog: str, args: argparse.Namespace) -> int:
    names = _resolve_names(prog, args.names, claims=True)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        _fail(prog, f"argument --out: {args.out!r} exists and is not a folder")
    claims = [n for n in names if n not in _catalogue()]
    if claims and args.steps is not None:
        _fail(
            prog,
            f"argument --steps: sets the length of the named experiments "
            f"({', '.join(_catalogue())}); a claim such as {claims[0]!r} has two sizes: "
            "the full one, or --quick",
        )
    if claims:
        status = _reproduce(prog, claims, args)
        names = [n for n in names if n in _catalogue()]
        if not names or status:
            return status
    from jaxdist.experiments import run_experiment

    for name in names:
        try:
            summary = run_experiment(
                name,
                args.out,
                force=args.force,
                num_steps=args.steps,
                seed=args.seed,
                log=lambda line: print(line, flush=True),
            )
        except (ValueError, OSError) as e:  # a bad value or an unusable folder, in one line
            _fail(prog, _flags_in(str(e)))
        except KeyboardInterrupt:
            sys.stderr.write(
                f"{prog}: interrupted; finished arms are saved, the same command resumes\n"
            )
            return 130
        _print_summary(summary)
        if not args.no_plot:
            try:
                from jaxdist.plotting import plot_experiment

                print(f"  figure: {plot_experiment(name, args.out)}")
            except ImportError as e:
                print(f"  (no figure: {e})")
        print(f"  results: {os.path.join(args.out, name)}{os.sep}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jaxdist`` console script.

    Args:
      argv: the arguments (default ``sys.argv[1:]``).

    Returns:
      The exit status: 0, or 2 for a usage error (one line on stderr), 130 when interrupted.
    """
    parser, subparsers = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already reported in one line
        return e.code if isinstance(e.code, int) else _USAGE_ERROR
    if args.version:
        from jaxdist import __version__

        print(__version__)
        return 0
    try:
        if args.command == "list":
            return _list()
        if args.command == "plot":
            return _plot(subparsers["plot"].prog, args.names, args.out)
        if args.command == "reproduce":
            return _reproduce(subparsers["reproduce"].prog, args.only, args)
        return _run(subparsers["run"].prog, args)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else _USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
