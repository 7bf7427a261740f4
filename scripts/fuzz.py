#!/usr/bin/env python3
"""Fuzz the parsers a peer can reach, for longer than the test suite does.

The targets are those of tests/fuzz_targets.py, which the suite runs with a
small hypothesis budget (tests/test_fuzz_*.py). This script runs them longer:

* with atheris (coverage-guided, raw bytes) when it is installed in the venv
  (``.venv/bin/python -m pip install atheris``): each target for ``--time``
  seconds in a process of its own, its corpus kept in .fuzz/corpus/<target>,
  inputs that break it written to .fuzz/crashes/;
* otherwise, or with ``--engine hypothesis``, with hypothesis and a budget of
  ``--examples`` examples per target (realistic inputs, cut and mutated).

Exits non-zero when a target failed. Not part of scripts/test.sh: a long run
is for before a release, or after a change to a parser.

  .venv/bin/python scripts/fuzz.py                       # every target
  .venv/bin/python scripts/fuzz.py http2 envelope --time 600
  .venv/bin/python scripts/fuzz.py --engine hypothesis --examples 50000
  .venv/bin/python scripts/fuzz.py --list
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
WORK = ROOT / ".fuzz"


def target_names() -> list[str]:
    """The targets' names, read from the module without running it."""
    sys.path.insert(0, str(TESTS))
    import fuzz_targets  # type: ignore[import-not-found]

    return list(fuzz_targets.TARGETS)


def run_hypothesis(names: list[str], examples: int) -> int:
    """The suite's fuzz tests for ``names``, with ``examples`` each."""
    env = dict(os.environ, FUZZ_EXAMPLES=str(examples))
    select = " or ".join(f"test_fuzz_{n}" for n in names)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    cmd += [str(p) for p in sorted(TESTS.glob("test_fuzz_*.py"))]
    cmd += ["-k", select]
    print("==", " ".join(cmd), f"(FUZZ_EXAMPLES={examples})", flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode


def run_atheris(names: list[str], seconds: int) -> int:
    """Each target in a process of its own for ``seconds``; failures counted."""
    failed = []
    for name in names:
        corpus = WORK / "corpus" / name
        crashes = WORK / "crashes"
        corpus.mkdir(parents=True, exist_ok=True)
        crashes.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--atheris-child",
            name,
            str(corpus),
            f"-max_total_time={seconds}",
            f"-artifact_prefix={crashes}/{name}-",
            "-rss_limit_mb=2048",
        ]
        print(f"== atheris: {name} for {seconds} s", flush=True)
        if subprocess.run(cmd, cwd=ROOT, check=False).returncode:
            failed.append(name)
    if failed:
        print(f"== failed: {', '.join(failed)} (inputs in {WORK / 'crashes'})")
    return 1 if failed else 0


def seed(name: str, corpus: Path, count: int = 300) -> None:
    """Start an empty corpus with inputs drawn from the target's strategy:
    raw bytes alone seldom get past the first check of a request or frame."""
    import warnings

    import fuzz_inputs

    warnings.simplefilter("ignore")  # .example() is meant for a shell
    strategy = fuzz_inputs.STRATEGIES[name]
    for i in range(count):
        (corpus / f"seed-{i}").write_bytes(strategy.example())


def atheris_child(name: str, libfuzzer_args: list[str]) -> None:
    """Run one target under atheris, the runtime instrumented for coverage."""
    import atheris  # type: ignore[import-not-found]

    sys.path.insert(0, str(TESTS))
    with atheris.instrument_imports(include=["protoc_gen_connect_python"]):
        import fuzz_targets
    target = fuzz_targets.TARGETS[name]
    corpus = Path(libfuzzer_args[0])
    if not any(corpus.iterdir()):
        seed(name, corpus)
    atheris.Setup([sys.argv[0], *libfuzzer_args], target)
    atheris.Fuzz()


def main() -> int:
    """Parse the command line and run."""
    if len(sys.argv) > 2 and sys.argv[1] == "--atheris-child":
        atheris_child(sys.argv[2], sys.argv[3:])
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("targets", nargs="*", help="targets to run (default: all)")
    parser.add_argument(
        "--engine",
        choices=["auto", "atheris", "hypothesis"],
        default="auto",
        help="atheris when installed (auto), or the one named",
    )
    parser.add_argument(
        "--time", type=int, default=300, help="atheris: seconds per target (300)"
    )
    parser.add_argument(
        "--examples",
        type=int,
        default=20_000,
        help="hypothesis: examples per target (20000)",
    )
    parser.add_argument("--list", action="store_true", help="list the targets")
    args = parser.parse_args()
    names = target_names()
    if args.list:
        print("\n".join(names))
        return 0
    unknown = [n for n in args.targets if n not in names]
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {', '.join(names)}")
    chosen = args.targets or names
    engine = args.engine
    have_atheris = importlib.util.find_spec("atheris") is not None
    if engine == "atheris" and not have_atheris:
        parser.error("atheris is not installed (pip install atheris)")
    if engine == "auto":
        engine = "atheris" if have_atheris else "hypothesis"
        if not have_atheris:
            print("== atheris is not installed: hypothesis with a large budget")
    if engine == "atheris":
        return run_atheris(chosen, args.time)
    return run_hypothesis(chosen, args.examples)


if __name__ == "__main__":
    sys.exit(main())
