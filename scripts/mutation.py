"""Mutation testing of the rules that protect users' work and clusters, with mutmut, by fast tests only.

    .venv/bin/python scripts/mutation.py [MODULE ...] [--budget SECONDS] [--jobs N]   (make mutation)

MODULES below names each module under test: the files mutmut mutates, the mutants that count (mutmut's
names, fnmatch patterns: a whole module, or one method such as Trainer.resume), and the fast test files that
may kill them. Each module runs in its own work directory, runs/mutation/<module>/, which links to the
repository's files and holds mutmut's copy (`mutants/`) and a pyproject.toml with the module's [tool.mutmut]
table, so modules neither share nor invalidate each other's results. mutmut runs the tests in-process
(forked workers), only those whose run touched the mutated function, with `-m "not slow and not docker"`.

Bounded time: at most --jobs (default 2) workers, and each module gets an equal share of --budget (default
1800 s) as a hard limit; a module cut off by it reports its unchecked mutants as such.

Writes runs/mutation/report.md: per module the score (killed / (mutants - argued equivalent)), every surviving
or untested mutant with its diff, and the argument for each one listed in EQUIVALENT. Exit status 0 when every
module reaches GOAL, 1 otherwise.

To point a module at other files (e.g. components/cluster.py becoming the package components/cluster/), edit
its `mutate` and `mutants` entries: a directory in `mutate` is mutated whole.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNS = REPO / "runs" / "mutation"
GOAL = 0.90  # killed share of the non-equivalent mutants, per module
# mutmut's exit codes (mutmut/stats.py status_by_exit_code), by what they mean here.
KILLED = {1, 3, 36, -24, 24, 152, 255, -11, -9}  # failed, pytest internal error, timeout, crash
SURVIVED = {0}
NO_TESTS = {5, 33}  # no fast test reaches the function: a survivor too
FAST_TESTS = ["-m", "not slow and not docker", "-p", "no:cacheprovider"]


@dataclass(frozen=True)
class Module:
    """One module under mutation: what is mutated, which mutants count, which fast tests run."""

    mutate: tuple[str, ...]  # repository paths (files or directories) mutmut mutates
    mutants: tuple[str, ...]  # mutmut mutant-name patterns that count (fnmatch)
    tests: tuple[str, ...]  # fast test files (or node ids) that may kill them
    exclude: tuple[str, ...] = ()  # mutant-name patterns that do not count here (another module's)


SAMPLING = tuple(
    f"trainer.dataset.x_{function}__mutmut_*"
    for function in ("_split", "sample_windows", "train_batch", "val_batch")
)
MODULES: dict[str, Module] = {
    "webhook_patch": Module(
        ("components/webhook_patch.py",),
        ("components.webhook_patch.*",),
        ("tests/components/test_webhook_patch.py",),
    ),
    # trainer/dataset.py in two parts: batch sampling (the split and the windows) and the token cache.
    "sampling": Module(("trainer/dataset.py",), SAMPLING, ("tests/trainer/test_dataset.py",)),
    "token_cache": Module(
        ("trainer/dataset.py",), ("trainer.dataset.*",), ("tests/trainer/test_dataset.py",), exclude=SAMPLING
    ),
    # The checkpoint store, and the choice of the checkpoint to resume from in Trainer.resume.
    "checkpoint": Module(
        ("trainer/checkpoint.py", "trainer/train.py"),
        ("trainer.checkpoint.*", "trainer.train.xǁTrainerǁresume__mutmut_*"),
        ("tests/trainer/test_checkpoint.py",),
    ),
    "launch": Module(("trainer/launch.py",), ("trainer.launch.*",), ("tests/trainer/test_launch.py",)),
    "settings": Module(
        ("components/settings.py",),
        ("components.settings.*",),
        (
            "tests/components/test_settings.py",
            "tests/test_main.py::test_bad_config_fails_with_one_clear_error_before_any_resource",
            "tests/test_main.py::test_a_local_trainer_chart_must_hold_the_pinned_release",
        ),
    ),
    # The cluster kinds (kind, k3s local/remote/in Docker, an existing cluster) and their rules.
    "cluster": Module(("components/cluster",), ("components.cluster.*",), ("tests/components/cluster",)),
}

# Surviving mutants argued equivalent (no input can tell them from the original), by mutmut's name, with why.
# The report lists them apart; a name that no longer exists is reported as stale.
_NO_API_VERSION = (
    "is_webhook_configuration's default for a missing apiVersion: with '' (the original), None (str(None) is "
    "'None'), 'XXXX' or no default, an object without apiVersion never starts with "
    "'admissionregistration.k8s.io/', so the answer is False in every case."
)
EQUIVALENT: dict[str, str] = {
    "trainer.dataset.x_sample_windows__mutmut_8": (
        "rng.integers(len(tokens) - block_size) instead of rng.integers(0, len(tokens) - block_size): numpy's "
        "Generator.integers(low, high=None) draws from [0, low) when high is None, the same call."
    ),
    "components.webhook_patch.x_is_webhook_configuration__mutmut_4": _NO_API_VERSION,
    "components.webhook_patch.x_is_webhook_configuration__mutmut_6": _NO_API_VERSION,
    "components.webhook_patch.x_is_webhook_configuration__mutmut_10": _NO_API_VERSION,
    "components.webhook_patch.x_patch_manifest_stream__mutmut_5": (
        "yaml.safe_dump_all(sort_keys=None) instead of False: PyYAML only tests the flag's truth "
        "(yaml/representer.py, represent_mapping: `if self.sort_keys:`), and None is false like False."
    ),
}


def python_module(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def mutmut_table(module: Module) -> str:
    """The module's [tool.mutmut] table (TOML)."""
    sources = sorted({path.split("/", 1)[0] for path in module.mutate})
    only = [path if path.endswith(".py") else f"{path}/*" for path in module.mutate]  # a directory: all of it
    lines = [
        "[tool.mutmut]",
        f"source_paths = {json.dumps(sources)}",
        f"only_mutate = {json.dumps(only)}",
        f"pytest_add_cli_args = {json.dumps(FAST_TESTS)}",
        f"pytest_add_cli_args_test_selection = {json.dumps(list(module.tests))}",
        'also_copy = ["__main__.py", "Pulumi.yaml", "Dockerfile", "scripts"]',
        "use_git_change_detection = false",
    ]
    return "\n".join(lines) + "\n"


def prepare(name: str, module: Module) -> Path:
    """A fresh work directory: links to the repository's files, the module's pyproject.toml, and
    mutants/.venv linked to the project's virtualenv (the webhook post-renderer runs `.venv/bin/python`)."""
    work = RUNS / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for entry in REPO.iterdir():
        if entry.name not in {"runs", ".git", "pyproject.toml", "mutants"}:
            (work / entry.name).symlink_to(entry)
    pyproject = (REPO / "pyproject.toml").read_text()
    (work / "pyproject.toml").write_text(pyproject + "\n" + mutmut_table(module))
    (work / "mutants").mkdir()
    (work / "mutants" / ".venv").symlink_to(REPO / ".venv")
    return work


def run_module(name: str, module: Module, jobs: int, seconds: float) -> tuple[str, float]:
    """mutmut run for the module's mutants in its work directory, stopped after `seconds`."""
    work = prepare(name, module)
    mutmut = Path(sys.executable).with_name("mutmut")
    log = work / "mutmut.log"
    started = time.monotonic()
    with open(log, "w") as output:
        process = subprocess.Popen(
            [str(mutmut), "run", "--max-children", str(jobs), *module.mutants],
            cwd=work, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        try:
            process.wait(timeout=seconds)
            outcome = f"finished (exit {process.returncode})"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 15)
            process.wait()
            outcome = f"stopped at the time limit of {seconds:.0f} s"
    return outcome, time.monotonic() - started


def results(name: str, module: Module) -> dict[str, int | None]:
    """Exit code by mutant name, for the mutants that count (None: not checked)."""
    import fnmatch

    codes: dict[str, int | None] = {}
    for meta in (RUNS / name / "mutants").rglob("*.py.meta"):
        for mutant, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if any(fnmatch.fnmatch(mutant, p) for p in module.mutants) and not any(
                fnmatch.fnmatch(mutant, p) for p in module.exclude
            ):
                codes[mutant] = code
    return codes


# Prints {mutant name: unified diff} for the names given, from a module's work directory (mutmut's own diff).
DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
print(json.dumps({name: get_diff_for_mutant(name) for name in sys.argv[1:]}))
"""


def diffs(name: str, mutants: list[str]) -> dict[str, str]:
    if not mutants:
        return {}
    shown = subprocess.run(
        [sys.executable, "-c", DIFFS, *mutants], cwd=RUNS / name, capture_output=True, text=True, timeout=600
    )
    if shown.returncode != 0:
        return dict.fromkeys(mutants, f"(no diff: {shown.stderr.strip()[-300:]})")
    return dict(json.loads(shown.stdout))


def status(code: int | None) -> str:
    if code is None:
        return "not checked"
    if code in KILLED:
        return "killed"
    if code in SURVIVED:
        return "survived"
    if code in NO_TESTS:
        return "no fast test"
    return f"exit {code}"


def report(selected: list[str], outcomes: dict[str, tuple[str, float]], command: str) -> tuple[str, bool]:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    lines = [
        "# Mutation testing report",
        "",
        f"Date: {time.strftime('%Y-%m-%d %H:%M %Z')}. Commit: {head.stdout.strip()}"
        + (" (with uncommitted changes)" if dirty else "")
        + f". Command: `{command}`. Fast tests only (`{' '.join(FAST_TESTS)}`).",
        "",
        "| module | mutants | killed | survived | no fast test | not checked | equivalent | score | run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    details: list[str] = []
    met = True
    for name in selected:
        codes = results(name, MODULES[name])
        counts = Counter(status(code) for mutant, code in codes.items() if mutant not in EQUIVALENT)
        equivalent = sorted(mutant for mutant in codes if mutant in EQUIVALENT)
        counted = len(codes) - len(equivalent)
        score = counts["killed"] / counted if counted else 0.0
        met = met and counted > 0 and score >= GOAL
        outcome, seconds = outcomes.get(name, ("not run", 0.0))
        lines.append(
            f"| {name} | {len(codes)} | {counts['killed']} | {counts['survived']} | {counts['no fast test']} "
            f"| {counts['not checked']} | {len(equivalent)} | {score:.1%} | {outcome}, {seconds:.0f} s |"
        )
        left = sorted(m for m, c in codes.items() if m not in EQUIVALENT and status(c) != "killed")
        if left or equivalent:
            details += [f"## {name}", ""]
        shown = diffs(name, left)
        for mutant in left:
            details += [f"### {mutant}: {status(codes[mutant])}", "", "```diff", shown[mutant], "```", ""]
        for mutant in equivalent:
            details += [f"### {mutant}: equivalent", "", EQUIVALENT[mutant], ""]
    stale = sorted(m for m in EQUIVALENT if not any(m in results(n, MODULES[n]) for n in selected))
    if stale:
        details += ["## Stale equivalence arguments (no such mutant now)", "", *[f"- {m}" for m in stale], ""]
    lines += ["", f"Goal: at least {GOAL:.0%} of the non-equivalent mutants killed in every module.", ""]
    return "\n".join(lines + details), met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"of {', '.join(MODULES)} (default: all)")
    parser.add_argument("--budget", type=float, default=1800, help="seconds for all modules (default 1800)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel mutmut workers (default 2)")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the last runs")
    options = parser.parse_args()
    unknown = sorted(set(options.modules) - set(MODULES))
    if unknown:
        parser.error(f"unknown module {unknown[0]!r}; allowed: {', '.join(MODULES)}")
    selected = options.modules or list(MODULES)
    outcomes: dict[str, tuple[str, float]] = {}
    if not options.report_only:
        for name in selected:
            outcomes[name] = run_module(name, MODULES[name], options.jobs, options.budget / len(selected))
            print(f"mutation: {name}: {outcomes[name][0]} after {outcomes[name][1]:.0f} s", flush=True)
    command = "make mutation" + (f" MODULES='{' '.join(options.modules)}'" if options.modules else "")
    text, met = report(selected, outcomes, command)
    (RUNS / "report.md").write_text(text)
    print(text.split("\n\n## ")[0])
    print(f"mutation: report in {(RUNS / 'report.md').relative_to(REPO)}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
