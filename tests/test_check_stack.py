"""scripts/check_stack.py (`make check STACK=...`): a stack file checked with the program's own rules, without
the Pulumi CLI or a cluster."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
# A script, not a package module: loaded from its file (as tests/test_mutation.py loads scripts/mutation.py).
_spec = importlib.util.spec_from_file_location("check_stack", REPO / "scripts" / "check_stack.py")
assert _spec is not None and _spec.loader is not None
check_stack = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_stack)
check, read_stack_file = check_stack.check, check_stack.read_stack_file


def run(stack: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "scripts/check_stack.py", stack],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_good_stack_prints_ok_and_the_plan() -> None:
    result = run("gpu")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "ok: Pulumi.gpu.yaml"
    assert "cluster: k3s v1.33.6+k3s1 on this machine" in lines[1]
    assert "1 node(s) x 1 GPU(s)" in lines[2] and "model gpt2-124m" in lines[2]
    assert lines[3] == "  data: trainer/data (the bundled Shakespeare sample, in the image)"  # dataSource
    assert (
        "GPU Operator v25.10.1: installed by the stack" in lines[4] and "Kubeflow Trainer 2.3.0" in lines[4]
    )
    dev = run("dev")
    assert dev.returncode == 0, dev.stderr
    assert "kind cluster 'trainstack'" in dev.stdout and "no GPU (CPU training)" in dev.stdout
    assert "GPU Operator" not in dev.stdout


def test_a_missing_stack_file_is_one_line() -> None:
    result = run("nonexistent")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: no stack file Pulumi.nonexistent.yaml: STACK must be one of cluster, dev, docker, existing, gpu"
    ]


def test_every_bad_key_is_named_once_each(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text(
        "config:\n"
        "  trainstack:nodeCount: zero\n"
        "  trainstack:gpusPerNode: -1\n"
        "  trainstack:namespace: Not_A_Label\n"
        "  trainstack:trainingPreset: huge\n"
        "  trainstack:cpuPerNode: lots\n"
    )
    values, secrets, problems = read_stack_file(path)
    assert problems == []
    settings, problems = check(values, secrets)
    assert settings is None
    keys = [problem.split(":")[1] for problem in problems]
    assert sorted(keys) == ["cpuPerNode", "gpusPerNode", "namespace", "nodeCount", "trainingPreset"], problems
    assert all(problem.count("\n") == 0 for problem in problems)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"k3sMode": "Remote"}, "k3sMode"),  # nodeCount 3 was then judged against k3sMode local
        ({"memoryPerNode": "lots"}, "memoryPerNode"),  # shmSize was then judged against the default 4Gi
        ({"k3sAgentHosts": ["192.0.2.11", "192.0.2.11"]}, "k3sAgentHosts"),  # nodeCount against no agents
    ],
)
def test_a_rule_judging_a_stand_in_default_is_not_reported(
    tmp_path: Path, change: dict[str, Any], named: str
) -> None:
    key = tmp_path / "id"
    key.write_text("key")
    values = {
        "clusterKind": "k3s", "k3sMode": "remote", "k3sServerHost": "192.0.2.10",
        "k3sAgentHosts": ["192.0.2.11", "192.0.2.12"], "sshPrivateKeyPath": str(key), "nodeCount": 3,
        "memoryPerNode": "32Gi", "shmSize": "8Gi", "checkpointStorageClass": "nfs",
    }  # fmt: skip
    settings, problems = check({**values, **change}, [])
    assert settings is None and [problem.split(":")[1] for problem in problems] == [named], problems


def test_a_key_of_another_project_and_an_encrypted_secret(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.s.yaml"
    path.write_text("config:\n  trainstak:nodeCount: 2\n  trainstack:hfToken:\n    secure: AAAA\n")
    values, secrets, problems = read_stack_file(path)
    assert problems == ["trainstak:nodeCount: not a trainstack:KEY setting"]  # main names the file, once
    assert secrets == ["hfToken"] and values == {}


def check_file(text: str, tmp_path: Path, monkeypatch: Any, capsys: Any) -> tuple[int, str, str]:
    """main() on a Pulumi.s.yaml of this text: exit code, stdout, stderr."""
    (tmp_path / "Pulumi.s.yaml").write_text(text)
    monkeypatch.setattr(check_stack, "REPO_ROOT", tmp_path)
    code = check_stack.main(["s"])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_file_problem_names_the_file_once_and_a_yaml_error_its_line(
    tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    code, _, err = check_file("config:\n  nodeCount: 2\n", tmp_path, monkeypatch, capsys)
    assert code == 2 and err == "Pulumi.s.yaml: nodeCount: not a trainstack:KEY setting\n"
    code, _, err = check_file(
        "config:\n  trainstack:nodeCount: 2\n   bad: [\n", tmp_path, monkeypatch, capsys
    )
    assert code == 2 and err.startswith("Pulumi.s.yaml: not valid YAML: line 3, column "), err
    assert err.count("\n") == 1
    # Pulumi (go-yaml v3) refuses a key written twice; PyYAML alone would take the last one
    code, _, err = check_file(
        "config:\n  trainstack:nodeCount: 1\n  trainstack:nodeCount: 2\n", tmp_path, monkeypatch, capsys
    )
    assert code == 2 and err == (
        "Pulumi.s.yaml: not valid YAML: line 3, column 3: mapping key 'trainstack:nodeCount' already defined"
        " at line 2\n"
    )


def test_the_plan_names_the_data_source(tmp_path: Path, monkeypatch: Any, capsys: Any) -> None:
    text = "config:\n  trainstack:dataSource: /mnt/checkpoints/corpus\n"
    code, out, _ = check_file(text, tmp_path, monkeypatch, capsys)
    assert code == 0
    assert "  data: /mnt/checkpoints/corpus (inside the pods: the checkpoint volume or the image)" in out
    code, _, err = check_file(
        "config:\n  trainstack:dataSource: ./my_corpus.txt\n", tmp_path, monkeypatch, capsys
    )
    assert code == 2 and err.count("\n") == 1 and "dataSource: must be trainer/data" in err


def test_an_override_checked_against_the_stand_in_preset_says_so() -> None:
    """A bad trainingPreset is put back to its default to go on checking: the override's complaint names that
    default as the stand-in, not as the preset in use."""
    settings, problems = check({"trainingPreset": "tinyy", "trainingOverrides": ["train.max_steps=many"]}, [])
    assert settings is None and len(problems) == 2
    assert problems[0].startswith("trainstack:trainingPreset: must be one of")
    assert "for the default preset 'tiny' (standing in for trainingPreset 'tinyy')" in problems[1], problems[
        1
    ]


def test_a_plaintext_kubeconfig_gets_the_settings_refusal_and_an_encrypted_one_is_not_checked() -> None:
    """As `pulumi up` (components.stack.load_settings): a plaintext kubeconfig is refused as such, not
    reported as a missing kubeconfigPath; an encrypted one needs no kubeconfigPath."""
    settings, problems = check({"clusterKind": "existing", "kubeconfig": "apiVersion: v1"}, [])
    assert settings is None
    assert problems == [f"trainstack:kubeconfig: {check_stack.KUBECONFIG_NOT_SECRET}"]
    assert "must be a secret" in problems[0]
    assert check({"clusterKind": "existing"}, ["kubeconfig"]) == (None, [])
    settings, problems = check({"clusterKind": "existing"}, [])
    assert [p.split(":")[1] for p in problems] == ["kubeconfigPath"]  # neither: the path is what is missing


def test_values_read_as_pulumi_reads_the_stack_file(tmp_path: Path, monkeypatch: Any, capsys: Any) -> None:
    """YAML 1.2 as Pulumi's go-yaml v3: `yes` is a string, which `up` refuses for a boolean; a 1.5 is no integer."""
    for text, refused in (
        (
            "  trainstack:hostHasGpuDriver: yes\n",
            "trainstack:hostHasGpuDriver: must be true or false, got 'yes'",
        ),
        ("  trainstack:gpusPerNode: 1.5\n", "trainstack:gpusPerNode: must be an integer, got 1.5"),
        (
            "  trainstack:trainingOverrides: train.max_steps=5\n",
            "trainstack:trainingOverrides: must be a list",
        ),
    ):
        code, _, err = check_file(f"config:\n{text}", tmp_path, monkeypatch, capsys)
        assert code == 2 and err.startswith(f"Pulumi.s.yaml: {refused}") and err.count("\n") == 1, err
    code, out, _ = check_file("config:\n  trainstack:hostHasGpuDriver: True\n", tmp_path, monkeypatch, capsys)
    assert code == 0, out
