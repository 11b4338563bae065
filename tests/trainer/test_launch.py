"""trainer.launch: the torchrun command from Kubeflow's PET_* variables (every value that says who the node is
checked before any work), torchrun's shutdown wait, and the exit-code mapping."""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from trainer import PREEMPTED_EXIT_CODE, STATUS_DIR_ENV, USAGE_EXIT_CODE
from trainer.config import ConfigError, load_config
from trainer.launch import (
    TORCHRUN_STOPPED,
    NodeIdentity,
    check_resumable,
    launch,
    node_identity,
    outcome,
    relay_stderr,
    shutdown_timeout,
    shutdown_timeout_warning,
    torchrun_command,
    torchrun_has_shutdown_timeout,
    worker_start,
)
from trainer.startup import LAUNCH_START_ENV, process_start

from .conftest import REPO, TINY_CONFIG


def test_command_from_kubeflow_variables() -> None:
    env = {"PET_NNODES": "2", "PET_NPROC_PER_NODE": "4", "PET_NODE_RANK": "1",
           "PET_MASTER_ADDR": "job-node-0-0.job", "PET_MASTER_PORT": "29400"}  # fmt: skip
    assert torchrun_command("/etc/trainstack/train.yaml", ["train.max_steps=5"], node_identity(env)) == [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=4", "--node-rank=1",
        "--master-addr=job-node-0-0.job", "--master-port=29400",
        "-m", "trainer", "train", "--config", "/etc/trainstack/train.yaml", "--set", "train.max_steps=5",
    ]  # fmt: skip


def test_single_local_process_without_variables() -> None:
    command = torchrun_command("c.yaml", [], node_identity({}))
    assert command[3:8][:4] == [
        "--nnodes=1",
        "--nproc-per-node=1",
        "--node-rank=0",
        "--master-addr=127.0.0.1",
    ]
    port = int(command[7].removeprefix("--master-port="))
    assert 0 < port < 65536


def test_a_node_of_one_process_starts_its_worker_without_torchrun() -> None:
    """torchrun's agent would import torch before the worker does: a node of one process in a job of a fixed
    node count gives its worker torchrun's variables itself; node 0 reaches the store it hosts on its loopback
    (after a restart the cluster's DNS may still name the previous pod)."""
    env = {"PET_NNODES": "2", "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": "1",
           "PET_MASTER_ADDR": "job-node-0-0.job", "PET_MASTER_PORT": "29400"}  # fmt: skip
    command, worker_env = worker_start("/etc/trainstack/train.yaml", ["train.max_steps=5"], env)
    assert command == [
        sys.executable, "-m", "trainer", "train", "--config", "/etc/trainstack/train.yaml",
        "--set", "train.max_steps=5",
    ]  # fmt: skip
    assert worker_env == {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                          "MASTER_ADDR": "job-node-0-0.job", "MASTER_PORT": "29400"}  # fmt: skip
    _, node_0 = worker_start("c.yaml", [], {**env, "PET_NODE_RANK": "0"})
    assert node_0["MASTER_ADDR"] == "127.0.0.1"  # it hosts the store: its own loopback, no DNS
    assert worker_start("c.yaml", [], {}) == (  # a single local node: a world of one on a free port
        [sys.executable, "-m", "trainer", "train", "--config", "c.yaml"],
        {},
    )
    for changed in ({"PET_NPROC_PER_NODE": "2"}, {"PET_NPROC_PER_NODE": "gpu"}, {"PET_NNODES": "1:2"}):
        command, worker_env = worker_start("c.yaml", [], {**env, **changed})
        assert command[1:3] == ["-m", "torch.distributed.run"] and worker_env == {}
    with pytest.raises(ConfigError, match="TORCH_ELASTIC_SHUTDOWN_TIMEOUT: expected"):
        worker_start("c.yaml", [], {**env, "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "soon"})


def test_launch_starts_a_one_process_node_s_worker_itself(launcher: Any) -> None:
    worker = FakeTorchrun(1, {"rank0.exit": "75"})
    assert launcher(worker, PET_NPROC_PER_NODE="1") == PREEMPTED_EXIT_CODE
    ((command, env, new_session),) = worker.calls
    assert command[:5] == [sys.executable, "-m", "trainer", "train", "--config"] and new_session
    assert {name: env[name] for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")} == {
        "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29511",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PET_NNODES", "two"),
        ("PET_NNODES", "0"),
        ("PET_NNODES", "3:2"),  # MIN > MAX
        ("PET_NPROC_PER_NODE", "-1"),
        ("PET_NPROC_PER_NODE", "0"),
        ("PET_MASTER_PORT", "http"),
        ("PET_MASTER_PORT", "0"),
        ("PET_MASTER_PORT", "65536"),
        ("PET_NODE_RANK", "-1"),
        ("PET_MASTER_ADDR", "two words"),
        ("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "soon"),
    ],
)
def test_bad_variable_is_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{name}: expected .*, got '{value}'"):
        worker_start("c.yaml", [], {name: value})


# Issue 18 case 3: JobSet's webhook (failurePolicy Ignore on k3s) did not make the Jobs Indexed, so Kubeflow's
# PET_NODE_RANK (from the completion-index annotation) is empty on every node.
def test_an_empty_node_rank_is_an_error_not_rank_0() -> None:
    env = {
        "PET_NNODES": "2",
        "PET_NODE_RANK": "",
        "PET_MASTER_ADDR": "job-node-0-0.job",
        "PET_MASTER_PORT": "29500",
    }
    with pytest.raises(ConfigError, match=r"PET_NODE_RANK is set but empty.*completion-index.*Indexed"):
        worker_start("c.yaml", [], env)


@pytest.mark.parametrize(
    "name", ["PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT"]
)
def test_every_identity_variable_set_but_empty_is_an_error(name: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name} is set but empty"):
        worker_start("c.yaml", [], {name: " "})


@pytest.mark.parametrize("missing", ["PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT"])
def test_several_nodes_need_rank_address_and_port(missing: str) -> None:
    env = {
        "PET_NNODES": "2",
        "PET_NODE_RANK": "1",
        "PET_MASTER_ADDR": "job-node-0-0.job",
        "PET_MASTER_PORT": "29500",
    }
    del env[missing]
    with pytest.raises(ConfigError, match=f"^{missing} is not set: with PET_NNODES=2"):
        worker_start("c.yaml", [], env)


@pytest.mark.parametrize(("nnodes", "rank"), [("2", "2"), ("1", "1"), ("1:3", "3")])
def test_node_rank_must_be_below_the_node_count(nnodes: str, rank: str) -> None:
    env = {"PET_NNODES": nnodes, "PET_NODE_RANK": rank, "PET_MASTER_ADDR": "a", "PET_MASTER_PORT": "29500"}
    with pytest.raises(ConfigError, match=f"PET_NODE_RANK: expected an integer from 0 to .*, got '{rank}'"):
        worker_start("c.yaml", [], env)


def test_a_node_count_range_allows_ranks_below_its_maximum() -> None:
    env = {"PET_NNODES": "1:3", "PET_NODE_RANK": "2", "PET_MASTER_ADDR": "a", "PET_MASTER_PORT": "29500"}
    assert "--node-rank=2" in torchrun_command("c.yaml", [], node_identity(env))


def test_the_shutdown_timeout_is_checked_and_left_to_torchrun_in_its_environment() -> None:
    env = {"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "170"}
    assert not any(arg.startswith("--shutdown") for arg in torchrun_command("c.yaml", [], node_identity(env)))
    with pytest.raises(ConfigError, match="TORCH_ELASTIC_SHUTDOWN_TIMEOUT: expected a whole number"):
        worker_start("c.yaml", [], {"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "-1"})


def test_this_torchrun_reads_the_shutdown_timeout_from_its_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """torch 2.13 (the venv's) has --shutdown-timeout, and without it takes TORCH_ELASTIC_SHUTDOWN_TIMEOUT:
    the launcher passes only the variable."""
    from torch.distributed.run import config_from_args, get_args_parser

    assert torchrun_has_shutdown_timeout()
    monkeypatch.setenv("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "170")
    command = torchrun_command("c.yaml", [], node_identity({**NODE, "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "170"}))
    config, _, _ = config_from_args(get_args_parser().parse_args(command[3:]))
    assert config.shutdown_timeout == 170


# The launcher's exit code for every combination of what its workers report: 0 finished, 75 preempted (saved a
# checkpoint), 2 bad input; a worker that crashed or was killed reports nothing. torchrun exits 1 for any
# failure (a node of one process: the worker's own code, rows "direct"; killed: 128 + its signal). Rule: preemption first, then bad input,
# then a stop signal the launcher forwarded (128 + signal), then torchrun's code.
P, U = PREEMPTED_EXIT_CODE, USAGE_EXIT_CODE
OUTCOME_TABLE = [
    # reported codes,  no signal, SIGTERM forwarded
    ((), 1, 128 + 15),  # every worker crashed or was killed before it could save
    ((0,), 1, 128 + 15),  # one finished, another crashed
    ((P,), P, P),
    ((U,), U, U),
    ((0, P), P, P),
    ((0, U), U, U),
    ((P, U), P, P),  # a restart resumes; bad input then fails the restarted run on its own
    ((0, P, U), P, P),
]


def test_the_outcome_table_covers_every_combination_of_worker_reports() -> None:
    combinations = {frozenset(c) for n in range(4) for c in itertools.combinations((0, P, U), n)}
    assert {frozenset(codes) for codes, _, _ in OUTCOME_TABLE} == combinations


@pytest.mark.parametrize(("codes", "plain", "signalled"), OUTCOME_TABLE)
def test_outcome_of_every_combination_of_worker_reports(
    codes: tuple[int, ...], plain: int, signalled: int
) -> None:
    for reports in itertools.permutations(codes * 2):  # order and count of the workers do not matter
        assert outcome(1, list(reports), None) == plain
        assert outcome(1, list(reports), signal.SIGTERM) == signalled


@pytest.mark.parametrize(
    ("torchrun_code", "worker_codes", "signal_received", "expected"),
    [
        (0, [0, 0], None, 0),  # torchrun exits 0 only when every worker did
        (P, [P], 15, P),  # direct: the worker is the only process
        (U, [U], None, U),
        (1, [], None, 1),  # direct: a crash
        (-9, [], None, 128 + 9),  # direct: killed (SIGKILL, the OOM killer), not sys.exit(-9)'s 247
    ],
)
def test_outcome_of_a_run_that_finished_or_started_its_worker_directly(
    torchrun_code: int, worker_codes: list[int], signal_received: int | None, expected: int
) -> None:
    assert outcome(torchrun_code, worker_codes, signal_received) == expected


# ---- every identity message whole, and the values that are allowed at the edges ----


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PET_NNODES": "2:1"}, "PET_NNODES: expected a node count N >= 1 or a range MIN:MAX with 1 <= MIN <= MAX, got '2:1'"),
        ({"PET_NPROC_PER_NODE": "x"}, "PET_NPROC_PER_NODE: expected a process count >= 1 or one of auto, gpu, cpu, got 'x'"),
        ({"PET_MASTER_PORT": "0"}, "PET_MASTER_PORT: expected a TCP port 1-65535, got '0'"),
        ({"PET_NNODES": "3", "PET_NODE_RANK": "3", "PET_MASTER_ADDR": "a", "PET_MASTER_PORT": "1"},
         "PET_NODE_RANK: expected an integer from 0 to 2 (PET_NNODES=3), got '3'"),
        ({"PET_NNODES": "3", "PET_MASTER_ADDR": "a", "PET_MASTER_PORT": "1"},
         "PET_NODE_RANK is not set: with PET_NNODES=3 it must give each node's rank, 0 to 2 (Kubeflow Trainer "
         "fills it from the pod's batch.kubernetes.io/job-completion-index annotation, which only an Indexed "
         "Job has (the TrainingRuntime must state completionMode: Indexed))"),
        ({"PET_NNODES": "3", "PET_NODE_RANK": "0", "PET_MASTER_PORT": "1"},
         "PET_MASTER_ADDR is not set: with PET_NNODES=3 it must give the address of node 0, where the rendezvous runs"),
        ({"PET_NNODES": "3", "PET_NODE_RANK": "0", "PET_MASTER_ADDR": "a"},
         "PET_MASTER_PORT is not set: with PET_NNODES=3 it must give the rendezvous port on node 0"),
        ({"PET_NODE_RANK": ""}, "PET_NODE_RANK is set but empty; it says who this process is and cannot be "
         "defaulted: Kubeflow Trainer fills it from the pod's batch.kubernetes.io/job-completion-index "
         "annotation, which only an Indexed Job has (the TrainingRuntime must state completionMode: Indexed)"),
        ({"PET_MASTER_ADDR": ""}, "PET_MASTER_ADDR is set but empty; it says who this process is and cannot be defaulted"),
        ({"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "-1"},
         "TORCH_ELASTIC_SHUTDOWN_TIMEOUT: expected a whole number of seconds >= 0, got '-1'"),
    ],
)  # fmt: skip
def test_identity_errors_say_what_is_allowed(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        worker_start("c.yaml", [], env)
    assert str(error.value) == message


def test_the_node_identity_at_the_edges_of_what_is_allowed() -> None:
    env = {"PET_NNODES": "2:2", "PET_NPROC_PER_NODE": "gpu", "PET_NODE_RANK": " 1 ",
           "PET_MASTER_ADDR": "10.0.0.1", "PET_MASTER_PORT": "1"}  # fmt: skip
    assert node_identity(env) == NodeIdentity(
        nnodes="2:2", max_nodes=2, nproc_per_node="gpu", node_rank=1, master_addr="10.0.0.1", master_port=1
    )
    assert node_identity({"PET_NNODES": "1:4", "PET_NODE_RANK": "3", "PET_MASTER_ADDR": "a",
                          "PET_MASTER_PORT": "65535"}).max_nodes == 4  # fmt: skip
    assert node_identity({}) == NodeIdentity("1", 1, "1", 0, "127.0.0.1", None)
    assert shutdown_timeout({"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": " 0 "}) == 0
    assert shutdown_timeout({}) is None


def test_a_torchrun_without_the_shutdown_timeout_option_is_recognised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nnodes")
    parser.add_argument("--shutdown-timeout-s")  # a similar name is not the option
    monkeypatch.setattr("torch.distributed.run.get_args_parser", lambda: parser)
    assert not torchrun_has_shutdown_timeout()
    parser.add_argument("--shutdown-timeout")
    assert torchrun_has_shutdown_timeout()


# ---- launch(): torchrun in its own session, signals forwarded, the workers' exit codes (a fake torchrun) ----


class FakeTorchrun:
    """subprocess.Popen for launch(): records how torchrun is started; its wait() leaves the workers' exit
    files in the status directory, optionally delivers a signal to the launcher meanwhile, and returns
    torchrun's exit code."""

    def __init__(self, returncode: int, exits: dict[str, str] | None = None, signal_to_launcher: int | None = None,
                 fail: Exception | None = None) -> None:  # fmt: skip
        self.returncode, self.exits, self.signal_to_launcher, self.fail = (
            returncode,
            exits or {},
            signal_to_launcher,
            fail,
        )
        self.calls: list[tuple[list[str], dict[str, str], bool]] = []
        self.signals: list[int] = []
        self.status_dir: Path | None = None
        self.on_start: Any = lambda: None  # called as torchrun starts
        self.stderr_text = ""  # what torchrun and its workers write to stderr

    def __call__(
        self, command: list[str], *, env: dict[str, str], start_new_session: bool, **piped: Any
    ) -> FakeTorchrun:
        assert piped == {"stderr": subprocess.PIPE, "text": True, "errors": "replace"}  # relayed by launch
        self.stderr = io.StringIO(self.stderr_text)
        self.calls.append((command, env, start_new_session))
        self.status_dir = Path(env[STATUS_DIR_ENV])
        self.on_start()
        return self

    def wait(self) -> int:
        assert self.status_dir is not None and self.status_dir.is_dir()
        for name, text in self.exits.items():
            (self.status_dir / name).write_text(text)
        if self.signal_to_launcher is not None:
            os.kill(os.getpid(), self.signal_to_launcher)
            deadline = time.monotonic() + 5
            while not self.signals and time.monotonic() < deadline:
                time.sleep(0.01)  # the handler runs in this (the main) thread between bytecodes
        if self.fail is not None:
            raise self.fail
        return self.returncode

    def send_signal(self, signum: int) -> None:
        self.signals.append(signum)


NODE = {"PET_NNODES": "1", "PET_NPROC_PER_NODE": "2", "PET_NODE_RANK": "0", "PET_MASTER_ADDR": "127.0.0.1",
        "PET_MASTER_PORT": "29511"}  # fmt: skip


@pytest.fixture
def launcher(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """launch() with a fake torchrun on a node of NODE (and `env`), a config under tmp_path; the launcher's
    own signal handlers in place (recorders), restored afterwards."""
    received: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, frame: received.append(signum))
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    config = tmp_path / "train.yaml"
    config.write_text(TINY_CONFIG.read_text())

    def run(torchrun: FakeTorchrun, overrides: list[str] | None = None, **env: str) -> int:
        for name in [n for n in os.environ if n.startswith("PET_")] + ["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"]:
            monkeypatch.delenv(name, raising=False)
        for name, value in {**NODE, **env}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr("trainer.launch.subprocess.Popen", torchrun)
        sets = [f"checkpoint.dir={tmp_path / 'checkpoints'}", f"output.dir={tmp_path / 'output'}",
                f"data.cache_dir={tmp_path / 'cache'}", *(overrides or [])]  # fmt: skip
        return launch(str(config), sets)

    run.received = received  # type: ignore[attr-defined]
    run.config = config  # type: ignore[attr-defined]
    run.handlers = {sig: signal.getsignal(sig) for sig in previous}  # type: ignore[attr-defined]
    yield run
    for sig, handler in previous.items():
        signal.signal(sig, handler)


STOP_TRACEBACK = ["Traceback (most recent call last):\n", '  File "run.py", line 9, in main\n',
                  f"{TORCHRUN_STOPPED} Process 7 got signal: 15\n"]  # fmt: skip
# A frame indented by a tab.
TAB_STOP_TRACEBACK = [STOP_TRACEBACK[0], '\tFile "run.py", line 9\n', STOP_TRACEBACK[2]]
OTHER_TRACEBACK = ["Traceback (most recent call last):\n", '\tFile "train.py", line 3\n', "ValueError: bad\n"]


@pytest.mark.parametrize(
    ("written", "shown"),
    [
        (["a\n", "b\n"], ["a\n", "b\n"]),
        (["a\n", *STOP_TRACEBACK, "b\n"], ["a\n", "b\n"]),
        (["a\n", *TAB_STOP_TRACEBACK, "b\n"], ["a\n", "b\n"]),
        (["a\n", *OTHER_TRACEBACK, "b\n"], ["a\n", *OTHER_TRACEBACK, "b\n"]),
        (["a\n", *STOP_TRACEBACK[:2]], ["a\n", *STOP_TRACEBACK[:2]]),  # cut off: what was held is shown
    ],
)
def test_the_relay_leaves_out_only_torchruns_traceback_for_its_stop(
    written: list[str], shown: list[str]
) -> None:
    sink = io.StringIO()
    relay_stderr(io.StringIO("".join(written)), sink)
    assert sink.getvalue() == "".join(shown)


def test_launch_relays_what_torchrun_and_its_workers_write(
    launcher: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    torchrun = FakeTorchrun(0, {"rank0.exit": "0", "rank1.exit": "0"})
    torchrun.stderr_text = "".join(["worker: step 1\n", *STOP_TRACEBACK, "worker: done\n"])
    assert launcher(torchrun) == 0
    assert but_preparation(capsys.readouterr().err) == "worker: step 1\nworker: done\n"


def test_launch_runs_torchrun_in_its_own_session_with_a_status_directory(launcher: Any) -> None:
    torchrun = FakeTorchrun(0, {"rank0.exit": "0", "rank1.exit": "0"})
    assert launcher(torchrun, ["train.max_steps=7"]) == 0
    ((command, env, new_session),) = torchrun.calls
    sets = [
        f"checkpoint.dir={launcher.config.parent / 'checkpoints'}",
        f"output.dir={launcher.config.parent / 'output'}",
        f"data.cache_dir={launcher.config.parent / 'cache'}",
        "train.max_steps=7",
    ]
    assert command == [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2", "--node-rank=0",
        "--master-addr=127.0.0.1", "--master-port=29511",
        "-m", "trainer", "train", "--config", str(launcher.config), *[a for s in sets for a in ("--set", s)],
    ]  # fmt: skip
    assert new_session  # a terminal's Ctrl-C reaches torchrun once, through the launcher
    assert env[LAUNCH_START_ENV] == str(process_start())
    assert env["PET_MASTER_PORT"] == "29511" and env["PATH"] == os.environ["PATH"]  # the node's environment
    assert torchrun.status_dir is not None and torchrun.status_dir.name.startswith("trainstack-status-")
    assert not torchrun.status_dir.exists()  # removed afterwards
    assert launcher.received == [] and torchrun.signals == []


@pytest.mark.parametrize(
    ("returncode", "exits", "expected"),
    [
        (1, {"rank0.exit": "75", "rank1.exit": "75"}, 75),
        (
            1,
            {"rank1.exit": "2", "rank0.exit.partial": "75", "rank0.log": "75"},
            2,
        ),  # other files are not exits
        (1, {}, 1),
        (0, {"rank0.exit": "75"}, 0),
    ],
)
def test_launch_maps_the_workers_exit_codes(
    launcher: Any, returncode: int, exits: dict[str, str], expected: int
) -> None:
    assert launcher(FakeTorchrun(returncode, exits)) == expected


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_launcher_is_forwarded_to_torchrun(launcher: Any, signum: int) -> None:
    torchrun = FakeTorchrun(1, signal_to_launcher=signum)
    assert launcher(torchrun) == 128 + signum  # stopped before the workers could save
    assert torchrun.signals == [signum] and launcher.received == []
    assert {sig: signal.getsignal(sig) for sig in launcher.handlers} == launcher.handlers  # restored
    saved = FakeTorchrun(1, {"rank0.exit": "75", "rank1.exit": "75"}, signal_to_launcher=signal.SIGTERM)
    assert launcher(saved) == 75


def test_the_launchers_handlers_are_restored_when_waiting_fails(launcher: Any) -> None:
    with pytest.raises(RuntimeError, match="lost"):
        launcher(FakeTorchrun(0, fail=RuntimeError("lost")))
    assert {sig: signal.getsignal(sig) for sig in launcher.handlers} == launcher.handlers


def but_preparation(stderr: str) -> str:
    """The launcher's stderr without its line about preparing the data (trainer.prepare.report)."""
    return "".join(line for line in stderr.splitlines(keepends=True) if not line.startswith("prepared "))


def test_the_data_is_prepared_before_torchrun_starts_and_bad_data_starts_nothing(
    launcher: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torchrun = FakeTorchrun(0, {"rank0.exit": "0", "rank1.exit": "0"})
    manifests: list[list[Path]] = []
    torchrun.on_start = lambda: manifests.append(list((tmp_path / "cache").glob("tokens-*/manifest.json")))
    assert launcher(torchrun) == 0
    assert len(manifests[0]) == 1  # ready when the workers start: none of them waits for it
    assert "4 shard(s) from 4 file(s) at trainer/data (4 tokenized now" in capsys.readouterr().err
    bad = FakeTorchrun(0)
    with pytest.raises(ConfigError, match=r"^data\.path: no such file or directory: /no/corpus$"):
        launcher(bad, ["data.path=/no/corpus"])
    assert not bad.calls


def test_the_shutdown_timeout_reaches_torchrun_without_a_warning(
    launcher: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    torchrun = FakeTorchrun(0)
    launcher(torchrun, TORCH_ELASTIC_SHUTDOWN_TIMEOUT="170")
    ((command, env, _),) = torchrun.calls
    assert env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "170"
    assert not [arg for arg in command if arg.startswith("--shutdown")]
    assert but_preparation(capsys.readouterr().err) == ""


def test_a_worker_warns_once_per_node_when_its_torchrun_ignores_the_shutdown_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    launched = {"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "170", "TORCHELASTIC_RUN_ID": "none", "LOCAL_RANK": "0"}
    assert shutdown_timeout_warning(launched) is None  # this torch has the option
    monkeypatch.setattr("trainer.launch.torchrun_has_shutdown_timeout", lambda: False)
    assert shutdown_timeout_warning(launched) == (
        "warning: TORCH_ELASTIC_SHUTDOWN_TIMEOUT ignored: this torch's torchrun has no --shutdown-timeout and "
        "SIGKILLs its workers 30 s after a SIGTERM"
    )
    for missing in launched:  # unset: nothing to warn about; not started by torchrun; not local rank 0
        assert shutdown_timeout_warning({k: v for k, v in launched.items() if k != missing}) is None
    assert shutdown_timeout_warning({**launched, "LOCAL_RANK": "1"}) is None


def test_the_launch_check_imports_neither_torch_nor_deepspeed(tmp_path: Path) -> None:
    """What `launch` does before torchrun starts (the config, the node's identity, the checkpoint.dir check on
    a published checkpoint, the data) leaves torch to the workers: the recovery path imports it once."""
    published = tmp_path / "checkpoints" / "step_000005"
    published.mkdir(parents=True)
    (published / "manifest.json").write_text(
        json.dumps({"format": 2, "step": 5, "world_size": 2, "files": {}})
    )
    script = f"""
import json, subprocess, sys
import trainer.launch as launch

class Started(Exception):
    pass

real_popen = subprocess.Popen

def popen(command, *args, **kwargs):
    if command[:2] == [sys.executable, "-m"]:  # the workers' start (other commands, e.g. ldconfig, run)
        raise Started(command[2])  # not started: what ran before it is the question
    return real_popen(command, *args, **kwargs)

subprocess.Popen = popen
try:
    launch.launch({str(TINY_CONFIG)!r}, ["checkpoint.dir={tmp_path / "checkpoints"}",
                  "output.dir={tmp_path / "output"}", "data.cache_dir={tmp_path / "cache"}"])
except Started as started:
    imported = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "deepspeed"))
    print(json.dumps([str(started), imported]))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PET_")}
    env.update({**NODE, "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "170"})
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert result.returncode == 0 and result.stdout, result.stderr  # it got as far as starting torchrun
    assert json.loads(result.stdout.splitlines()[-1]) == ["torch.distributed.run", []]


@pytest.mark.parametrize(
    ("overrides", "env", "message"),
    [
        (["train.max_steps=0"], {}, "train.max_steps"),
        ([], {"PET_NPROC_PER_NODE": "0"}, "PET_NPROC_PER_NODE: expected"),
        ([], {"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "soon"}, "TORCH_ELASTIC_SHUTDOWN_TIMEOUT: expected"),
    ],
)
def test_bad_config_or_environment_stops_the_launch_before_torchrun(
    launcher: Any, overrides: list[str], env: dict[str, str], message: str
) -> None:
    torchrun = FakeTorchrun(0)
    with pytest.raises(ConfigError, match=message):
        launcher(torchrun, overrides, **env)
    assert torchrun.calls == []


def legacy_checkpoint_in(directory: Path) -> None:
    """A published checkpoint of the earlier layout (DeepSpeed's per-rank files, a manifest without "format")."""
    (directory / "step_000005").mkdir(parents=True)
    (directory / "step_000005" / "manifest.json").write_text(json.dumps({"step": 5, "files": {}}))


def test_a_checkpoint_the_job_cannot_resume_stops_the_launch_before_torchrun(
    launcher: Any, tmp_path: Path
) -> None:
    legacy_checkpoint_in(tmp_path / "checkpoints")
    torchrun = FakeTorchrun(0)
    with pytest.raises(
        ConfigError, match=r"per-rank layout of an earlier trainer, which this trainer no longer"
    ):
        launcher(torchrun, ["train.zero_stage=1"])
    assert torchrun.calls == []


def test_the_launcher_checks_a_checkpoint_before_any_worker(tmp_path: Path) -> None:
    """Checkpoints resume at any world size: an unresumable one is refused whatever the nodes (an elastic range
    or a per-device count too)."""
    config = load_config(
        str(TINY_CONFIG), [f"checkpoint.dir={tmp_path}", "train.zero_stage=1", "output.dir=x"]
    )
    check_resumable(config)  # no checkpoint.dir yet: nothing to check
    legacy_checkpoint_in(tmp_path)
    with pytest.raises(ConfigError, match="earlier trainer"):
        check_resumable(config)


def test_the_launcher_checks_an_object_store_before_any_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """checkpoint.dir = s3://bucket/prefix is no directory to look for: the store is asked (open_storage's check: it
    answers, the credentials may write there)."""
    refused = "checkpoint.dir: s3://bucket/ckpt (endpoint http://store): access denied"
    asked: list[str] = []

    def open_storage(directory: str, check: bool = False) -> None:
        asked.append(f"{directory} check={check}")
        raise ConfigError(refused)

    monkeypatch.setattr("trainer.checkpoint.storage.open_storage", open_storage)
    config = load_config(str(TINY_CONFIG), ["checkpoint.dir=s3://bucket/ckpt", "output.dir=x"])
    with pytest.raises(ConfigError) as raised:
        check_resumable(config)
    assert str(raised.value) == refused and asked == ["s3://bucket/ckpt check=True"]
