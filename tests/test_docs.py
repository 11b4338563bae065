"""The commands in README.md and docs/*.md, so that a documented command that breaks fails CI.

A command is a line of a fenced block whose info string is `sh` (or `bash`, `shell`); every fenced block must
say what it holds (`sh` for commands, `text` or a format for the rest), so no command hides in an untagged
one. Backticked commands inside prose are not extracted. Every command must match exactly one of RULES, which
says how it is checked and why it is not simply run: a command that no rule covers fails the test (add a
rule). What is run here runs as written, from a scratch directory that links to the repository's files.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.settings import SECRET_KEYS, declared_keys

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMMAND_BLOCKS = {"sh", "bash", "shell"}
FENCE = re.compile(r"^```(\S*)\s*$")


@dataclass(frozen=True)
class DocCommand:
    """One documented command: where it is and its text without the trailing comment."""

    doc: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.text}"


def strip_comment(line: str) -> str:
    """The line without a trailing `# comment` (a # outside quotes that starts a word)."""
    quote = ""
    for index, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip()
    return line.rstrip()


def fenced_blocks(path: Path) -> list[tuple[str, int, list[str]]]:
    """(info string, line number of the opening fence, the block's lines) of every fenced block."""
    blocks: list[tuple[str, int, list[str]]] = []
    current: tuple[str, int, list[str]] | None = None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = FENCE.match(line)
        if current is None and match:
            current = (match.group(1), number, [])
        elif current is not None and line.strip() == "```":
            blocks.append(current)
            current = None
        elif current is not None:
            current[2].append(line)
    assert current is None, f"{path.name}: fence opened at line {current[1]} is never closed"
    return blocks


def doc_commands() -> list[DocCommand]:
    commands = []
    for path in DOCS:
        for info, start, lines in fenced_blocks(path):
            if info not in COMMAND_BLOCKS:
                continue
            pending, first = "", 0
            for offset, line in enumerate(lines, start=1):
                text = strip_comment(line)
                if text.endswith("\\"):  # a continued line: one command with the next
                    pending, first = pending + text[:-1].rstrip() + " ", first or offset
                    continue
                if pending:
                    text, offset, pending, first = pending + text.lstrip(), first, "", 0
                if text:
                    commands.append(DocCommand(path.relative_to(REPO).as_posix(), start + offset, text))
    return commands


# How each documented command is checked, first match wins:
#   run      run as written (offline, seconds to a minute or two on 2 cores; the slow tier)
#   make-n   `make -n` with the same arguments: the targets and variables exist and expand
#   help     the script or subcommand exists and its --help names every --flag the command uses
#   collect  pytest --collect-only with the same arguments
#   pulumi   the stack outputs and secret keys it names exist in the program
#   kubectl  the namespace and job name it names are the stack's defaults
#   docker   every --build-arg is an ARG of the Dockerfile
# Every command is also parsed by `bash -n`, and every repository path it names must exist.
RULES: list[tuple[str, str, str]] = [
    (r"^\.venv/bin/python -m trainer (train|print-config|plot) ", "run", "the README's walk-through: tiny, CPU, offline"),
    (r"^PET_NPROC_PER_NODE=2 \.venv/bin/python -m trainer launch ", "run", "two CPU processes, offline"),
    (r"^\.venv/bin/python bench/stack_eval\.py$", "run", "the mock engine: seconds"),
    (r"^\.venv/bin/python bench/data_bench\.py ", "help", "minutes of both cores; memory writes GiBs of corpus"),
    (r"^python -m trainer ", "help", "a synopsis with placeholders (FILE, ...), not a command to run"),
    (r"^(OMP_NUM_THREADS=1 DS_ACCELERATOR=cpu \.venv/bin/)?python bench/train_throughput\.py ", "help",
     "minutes of CPU training (9 repeats), or a GPU"),
    (r"^\.venv/bin/python -m tests\.support\.docker_base_image ", "help", "needs Docker and debootstrap (the docker tier)"),
    (r"^\.venv/bin/python -m pytest .*tests/test_dockerfile\.py$", "collect",
     "the image tests: make test runs them under the docker marker"),
    (r"^make (kubeconfig|logs) STACK=\w+$", "make-n",
     "needs the Pulumi CLI and a deployed stack"),
    (r"^make trainer-venv$", "make-n", "installs torch (GBs) into the shared .venv"),
    (r"^make test$", "make-n", "the whole suite, this test included: CI runs it"),
    (r"^make (up|down)\b", "make-n", "needs the Pulumi CLI, Docker and kind, and makes a cluster"),
    (r"^make e2e-toolchain\b", "make-n", "builds the real toolchain from source (about an hour)"),
    (r"^make e2e\b(?!-)", "make-n", "the real run: needs the toolchain, about half an hour (CI runs it)"),
    (r"^make mutation\b", "make-n", "mutation testing: up to half an hour of both cores"),
    (r"^bash scripts/e2e_toolchain\.sh ", "syntax", "builds the real toolchain from source (about an hour)"),
    (r"^bench/gpu_wheels\.sh$", "syntax", "downloads wheels from PyPI for the GPU machine"),
    (r"^DS_ACCELERATOR=cpu CUDA_VISIBLE_DEVICES= .*bench/gpu_suite\.sh$", "syntax",
     "the GPU suite's CPU dry run: about five minutes of both cores"),
    (r"^python3 -m venv /tmp/|^grep .* trainer/requirements\.txt|^/tmp/\w+/bin/pip install ", "syntax",
     "sizes the tracking pins: a scratch virtualenv installed from PyPI (minutes)"),
    (r"^(eval \"\$\()?pulumi ", "pulumi", "needs the Pulumi CLI and a deployed stack"),
    (r"^export KUBECONFIG=", "syntax", "reads a file the line before writes from a deployed stack"),
    (r"^kubectl ", "kubectl", "needs a running cluster with the job"),
    (r"^(DOCKER_BUILDKIT=0 )?docker (build|run) ", "docker",
     "needs a Docker engine and the CUDA base from a registry (the docker tier builds on a stand-in)"),
]  # fmt: skip


def rule_for(command: DocCommand) -> tuple[str, str, str]:
    matches = [rule for rule in RULES if re.search(rule[0], command.text)]
    assert matches, f"no rule says how to check {command}: add one to RULES in tests/test_docs.py"
    return matches[0]


COMMANDS = doc_commands()
IDS = [f"{c.doc}:{c.line}" for c in COMMANDS]
TOP_LEVEL = {path.name for path in REPO.iterdir() if not path.name.startswith(".")} - {"runs"}


def words(command: DocCommand) -> list[str]:
    text = command.text.removeprefix('eval "$(').removesuffix(')"')
    return shlex.split(text)


def flags(command: DocCommand) -> set[str]:
    return {word.split("=", 1)[0] for word in words(command) if word.startswith("--")}


def test_the_docs_have_commands_and_every_fenced_block_says_what_it_holds() -> None:
    assert len(COMMANDS) >= 20
    for path in DOCS:
        for info, start, _ in fenced_blocks(path):
            assert info, (
                f"{path.name}:{start}: a fenced block without an info string (sh for commands, else text)"
            )


def test_comments_are_stripped_outside_quotes_only() -> None:
    assert strip_comment("make up     # bring it up") == "make up"
    assert strip_comment("kubectl get x -o jsonpath='{.a}#b'   # c") == "kubectl get x -o jsonpath='{.a}#b'"
    assert strip_comment("# only a comment") == ""


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_every_command_parses_and_names_only_existing_files(command: DocCommand) -> None:
    rule_for(command)
    assert subprocess.run(["bash", "-n", "-c", command.text], capture_output=True).returncode == 0, command
    for word in words(command):
        first = word.split("/", 1)[0]
        if "/" in word and first in TOP_LEVEL and not word.startswith(("http", "oci:")):
            assert (REPO / word).exists(), f"{command}: {word} does not exist"


def program_outputs() -> set[str]:
    tree = ast.parse((REPO / "__main__.py").read_text())
    return {
        str(node.args[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "export"
        and isinstance(node.args[0], ast.Constant)
    }


STATIC = [c for c in COMMANDS if rule_for(c)[1] in {"make-n", "pulumi", "kubectl", "docker"}]


@pytest.mark.parametrize("command", STATIC, ids=[f"{c.doc}:{c.line}" for c in STATIC])
def test_commands_that_need_a_cluster_or_an_engine_name_what_exists(command: DocCommand) -> None:
    kind = rule_for(command)[1]
    args = words(command)
    if kind == "make-n":
        result = subprocess.run(
            ["make", "-n", *args[1:]], cwd=REPO, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, f"{command}: make -n failed:\n{result.stderr}"
    elif kind == "pulumi":
        if args[1:3] == ["stack", "output"]:
            assert args[3] in program_outputs(), f"{command}: the program exports no {args[3]}"
        if args[1:4] == ["config", "set", "--secret"]:
            assert args[4] in SECRET_KEYS, f"{command}: {args[4]} is not a secret key of the stack"
    elif kind == "kubectl":
        defaults = {name: key.default for name, key in declared_keys().items()}
        assert args[args.index("-n") + 1] == defaults["namespace"], command
        named = [w for w in args if "gpt-train" in w]
        assert all(defaults["trainJobName"] in w for w in named), command
    elif kind == "docker":
        dockerfile_args = set(re.findall(r"^ARG (\w+)", (REPO / "Dockerfile").read_text(), re.MULTILINE))
        build_args = [args[i + 1].split("=")[0] for i, w in enumerate(args) if w == "--build-arg"]
        assert set(build_args) <= dockerfile_args, f"{command}: not an ARG of the Dockerfile"


def python_help(args: list[str]) -> str:
    """The --help text of what a documented python command runs, with this interpreter."""
    program = next(i for i, word in enumerate(args) if word.endswith("python"))
    rest = args[program + 1 :]
    # `-m trainer SUBCOMMAND`, `-m MODULE` or `SCRIPT`
    module = rest[:2] + (rest[2:3] if rest[1] == "trainer" else [])
    target = module if rest[0] == "-m" else rest[:1]
    result = subprocess.run(
        [sys.executable, *target, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


SLOW = [c for c in COMMANDS if rule_for(c)[1] in {"help", "collect"}]


@pytest.mark.slow  # a Python subprocess per command (torch imports included)
@pytest.mark.parametrize("command", SLOW, ids=[f"{c.doc}:{c.line}" for c in SLOW])
def test_scripts_and_subcommands_accept_every_documented_flag(command: DocCommand) -> None:
    args = words(command)
    if rule_for(command)[1] == "collect":
        program = args.index("pytest")
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", *args[program + 1 :]],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-2000:]
        return
    text = python_help(args)
    for flag in flags(command):
        assert flag in text, f"{command}: --help does not mention {flag}"


def scratch_checkout(tmp_path: Path) -> Path:
    """A directory that links to the repository's files, so what the commands write (runs/) lands in it
    rather than in the checkout."""
    for entry in REPO.iterdir():
        if entry.name not in {"runs", ".git"}:
            (tmp_path / entry.name).symlink_to(entry)
    return tmp_path


RUN = [c for c in COMMANDS if rule_for(c)[1] == "run"]


@pytest.mark.slow  # trains the tiny preset (several hundred steps, then two processes) on the CPU
def test_runnable_commands_succeed_in_the_order_the_docs_give_them(tmp_path: Path) -> None:
    """One scratch directory for all of them: the README's resume and plot need what its train wrote."""
    assert {c.doc for c in RUN} >= {"README.md", "docs/benchmarks.md"}
    directory = scratch_checkout(tmp_path)
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    for command in RUN:
        result = subprocess.run(
            ["bash", "-c", command.text], cwd=directory, env=environment, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stderr[-3000:]}"
        if re.search(
            r"-m trainer (train|launch) ", command.text
        ):  # each training step of a walk-through trains
            closing = result.stderr.splitlines()[-1]
            assert closing.startswith("done: trained steps "), f"{command} trained nothing: {closing}"
    assert (directory / "runs/tiny/output/loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- statements in the docs that a newcomer acts on (issue 25), held against the code ----


def doc_text(name: str) -> str:
    return " ".join((REPO / name).read_text().split())  # whitespace as one space: statements span lines


def test_the_readme_starts_with_make_up_and_make_test() -> None:
    first = next(lines for info, _, lines in fenced_blocks(REPO / "README.md") if info == "sh")
    assert [strip_comment(line) for line in first[:2]] == ["make up", "make test"]


def test_the_stated_pythons_are_the_checked_ones() -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import python_check
    finally:
        sys.path.remove(str(REPO / "scripts"))
    (low_major, low_minor), (high_major, high_minor) = python_check.SUPPORTED_PYTHON
    stated = f"Python {low_major}.{low_minor} to {high_major}.{high_minor}"
    assert stated in doc_text("docs/stack.md") and stated in doc_text("README.md")
    assert f'requires-python = ">={low_major}.{low_minor},<{high_major}.{high_minor + 1}"' in doc_text(
        "pyproject.toml"
    )
    assert "3.10+" not in doc_text("docs/stack.md")


def test_the_torch_the_makefile_installs_is_described_as_it_is() -> None:
    makefile = (REPO / "Makefile").read_text()
    pin = re.search(r"pip install -q (torch==[\d.]+)$", makefile, re.MULTILINE)
    assert pin, "the Makefile installs a pinned torch"
    requirements = doc_text("requirements-dev.txt")
    assert "CPU build" not in requirements and f"{pin[1]}, PyPI's CUDA build" in requirements
    assert "--index-url" not in makefile  # PyPI's own wheel, which for Linux is the CUDA build


def test_the_tiny_timing_names_its_thread_count_and_the_code_sets_it() -> None:
    assert "about 10 s" not in doc_text("docs/trainer.md") and "~10 s" not in doc_text("README.md")
    assert "one thread (the default for a single CPU process" in doc_text("docs/trainer.md")
    distributed = (REPO / "trainer" / "distributed.py").read_text()
    assert 'if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:' in distributed
    assert "torch.set_num_threads(1)" in distributed


def test_the_pod_monitor_is_said_to_follow_its_own_key() -> None:
    row = next(
        line
        for line in (REPO / "docs" / "stack.md").read_text().splitlines()
        if "`TrainingMonitoring`" in line
    )
    assert "PodMonitor (`prometheusPodMonitor`)" in row and "PodMonitor (`metricsPort > 0`)" not in row
    monitoring = (REPO / "components" / "monitoring.py").read_text()
    assert 'pod_monitor=bool(values["prometheusPodMonitor"])' in monitoring


def test_the_install_sizes_in_the_readme_are_the_measured_ones() -> None:
    readme, benchmarks = doc_text("README.md"), doc_text("docs/benchmarks.md")
    assert "about 150 MB" not in readme  # said once, as `make stack-venv` measured it (159 MB)
    for size in ("about 160 MB", "about 5.7 GB in all", "about 5.9 GB in all"):
        assert size in readme
    for figure in ("159 MB", "about 5.7 GB in all", "about 5.9 GB in all"):
        assert figure in benchmarks


def test_make_check_and_the_sdk_are_documented_as_they_run() -> None:
    assert "make check STACK=gpu" in doc_text("README.md")
    stack = doc_text("docs/stack.md")
    assert "pip install kubeflow==0.5.0" in stack and "kubeflow==0.5.0" in doc_text("requirements-dev.txt")
    assert "the node container therefore states `limits.cpu`" in stack


def test_the_trainer_walk_through_first_adds_the_trainer_packages() -> None:
    """make up / make check build .venv from requirements.txt only: without torch, numpy, the README's
    `python -m trainer train` fails; its block starts with make trainer-venv, whose packages are the trainer's."""
    block = next(lines for info, _, lines in fenced_blocks(REPO / "README.md") if info == "sh" and any(
        "-m trainer train" in line for line in lines))  # fmt: skip
    assert strip_comment(block[0]) == "make trainer-venv"
    assert "numpy" not in (REPO / "requirements.txt").read_text()
    assert "numpy" in (REPO / "trainer" / "requirements.txt").read_text()
    makefile = (REPO / "Makefile").read_text()
    assert "trainer-venv: $(TRAINER_STAMP)" in makefile
    assert "-r trainer/requirements.txt" in makefile.split("$(TRAINER_STAMP):", 1)[1].split("touch", 1)[0]
    plots = [line for line in block if " -m trainer plot " in line]
    assert plots and all("--out runs/" in line for line in plots)  # not loss.png in the repository root


def test_secret_outputs_are_read_through_make_which_has_the_passphrase() -> None:
    """PULUMI_CONFIG_PASSPHRASE is exported by the Makefile only: a bare `pulumi stack output kubeconfig
    --show-secrets` (or logsCommand, which runs one) in the user's shell cannot decrypt the secret."""
    for command in COMMANDS:
        if rule_for(command)[1] == "pulumi":
            assert "--show-secrets" not in command.text and "logsCommand" not in command.text, command
    makefile = (REPO / "Makefile").read_text()
    default = re.search(r"^export PULUMI_CONFIG_PASSPHRASE \?= (\S+)$", makefile, re.MULTILINE)
    assert (
        default
        and f"`{default[1]}`" in doc_text("README.md")
        and f"`{default[1]}`" in doc_text("docs/stack.md")
    )
    assert "make kubeconfig STACK=dev" in doc_text("README.md")


def test_a_corpus_of_your_own_is_put_where_the_pods_read_it() -> None:
    """docs/stack.md's way onto the checkpoint claim: the copy's container and mount are the job's, and the
    dataSource it then names is one the stack accepts (a relative path is refused)."""
    from components.checkpoints import CHECKPOINT_MOUNT
    from components.settings import StackConfigError
    from components.stack import parse_settings
    from components.training_runtime import NODE

    stack = doc_text("docs/stack.md")
    copy = f"`kubectl -n trainstack cp ./my_corpus <pod>:{CHECKPOINT_MOUNT}/corpus -c {NODE}`"
    assert copy in stack and f"set `dataSource: {CHECKPOINT_MOUNT}/corpus`" in stack
    parse_settings({"dataSource": f"{CHECKPOINT_MOUNT}/corpus"})
    with pytest.raises(StackConfigError):
        parse_settings({"dataSource": "./my_corpus"})
