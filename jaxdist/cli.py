"""The ``jaxdist`` command: list, run and plot the named experiments.

``jaxdist`` alone runs the main job, the ``bits`` experiment on the shipped mushrooms data, and
writes JSON/CSV results and a PNG figure under ``results/``. Finished runs are kept: running the
command again resumes (``--force`` reruns).
"""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxdist",
        description="Communication-efficient distributed optimization in JAX: named experiments "
        "that reproduce the lecture's claims, measured in rounds and exact bits.",
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
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("list", help="list the named experiments and the compressors")
    run_p = sub.add_parser("run", help="run named experiments (default: bits)")
    run_p.add_argument("names", nargs="*", default=["bits"], help="experiment names, or 'all'")
    run_p.add_argument("--out", default="results", help="results folder (default: results)")
    run_p.add_argument("--force", action="store_true", help="rerun finished arms")
    run_p.add_argument("--steps", type=int, default=None, help="override the number of steps")
    run_p.add_argument("--seed", type=int, default=0)
    run_p.add_argument("--no-plot", action="store_true", help="skip the PNG figure")
    plot_p = sub.add_parser("plot", help="plot finished experiments")
    plot_p.add_argument("names", nargs="+")
    plot_p.add_argument("--out", default="results")
    return parser


def _print_summary(summary: dict) -> None:
    print(f"  target: (f - f*) <= {summary['target']:g} * (f(x0) - f*)")
    print(f"  {'method':28s} {'step':>9s} {'rounds':>8s} {'bits up/worker':>16s} {'final':>9s}")
    for s in summary["arms"].values():
        rounds = "-" if s["rounds_to_target"] is None else str(s["rounds_to_target"])
        bits = "-" if s["bits_up_to_target"] is None else f"{s['bits_up_to_target']:,}"
        if s["diverged"]:
            final = "diverged"
        elif abs(s["final_rel_gap"]) < 1e-7:
            final = "<1e-7"  # float32 resolution of f(x) - f*
        else:
            final = f"{s['final_rel_gap']:.2e}"
        print(f"  {s['label']:28s} {s['stepsize']:9.3g} {rounds:>8s} {bits:>16s} {final:>9s}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jaxdist`` console script."""
    args = _parser().parse_args(argv)
    import jaxdist

    if args.version:
        print(jaxdist.__version__)
        return 0
    from jaxdist.experiments import EXPERIMENTS, run_experiment

    command = args.command
    if command == "list":
        print("experiments:")
        for name, exp in EXPERIMENTS.items():
            print(f"  {name:16s} {exp.claim}")
        print("compressors:", ", ".join(n for n in jaxdist.compressors.__all__ if n[0].islower()))
        return 0
    if command == "plot":
        from jaxdist.plotting import plot_experiment

        for name in args.names:
            print(plot_experiment(name, args.out))
        return 0
    names = args.names
    if names == ["all"]:
        names = list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        print(
            f"unknown experiment(s) {unknown}; choose from {sorted(EXPERIMENTS)}", file=sys.stderr
        )
        return 2
    for name in names:
        summary = run_experiment(
            name,
            args.out,
            force=args.force,
            num_steps=args.steps,
            seed=args.seed,
            log=lambda line: print(line, flush=True),
        )
        _print_summary(summary)
        if not args.no_plot:
            try:
                from jaxdist.plotting import plot_experiment

                print(f"  figure: {plot_experiment(name, args.out)}")
            except ImportError as e:
                print(f"  (no figure: {e})")
        print(f"  results: {args.out}/{name}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
