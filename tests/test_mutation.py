"""scripts/mutation.py, the `make mutation` driver: its module table points at what exists, and the
[tool.mutmut] table it writes is what mutmut reads."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent


def driver() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutation_driver", REPO / "scripts" / "mutation.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


MUTATION = driver()


@pytest.mark.parametrize("name", sorted(MUTATION.MODULES))
def test_every_module_mutates_files_that_exist_with_fast_tests_that_exist(name: str) -> None:
    module = MUTATION.MODULES[name]
    for path in module.mutate:
        assert (REPO / path).exists(), f"{name}: {path} does not exist"
    for test in module.tests:
        assert (REPO / test.split("::")[0]).exists(), f"{name}: {test} does not exist"
    # A mutant name is the dotted module path, then the mangled function: every pattern names a mutated file.
    prefixes = {path.removesuffix(".py").replace("/", ".") for path in module.mutate}
    for pattern in module.mutants:
        assert any(pattern.startswith(prefix + ".") for prefix in prefixes), f"{name}: {pattern}"


def test_the_mutmut_table_is_toml_that_selects_fast_tests_only() -> None:
    module = MUTATION.MODULES["settings"]
    table = tomllib.loads(MUTATION.mutmut_table(module))["tool"]["mutmut"]
    assert table["source_paths"] == ["components", "trainer"]
    assert {"Pulumi.yaml", "Pulumi.dev.yaml", "__main__.py"} <= set(table["also_copy"])
    assert table["only_mutate"] == list(module.mutate) and "components/settings.py" in module.mutate
    assert table["pytest_add_cli_args"][:2] == ["-m", "not slow and not docker"]
    assert table["pytest_add_cli_args_test_selection"] == list(module.tests)
    package = MUTATION.Module(("components/cluster",), ("components.cluster.*",), ("tests/x.py",))
    assert tomllib.loads(MUTATION.mutmut_table(package))["tool"]["mutmut"]["only_mutate"] == [
        "components/cluster/*"
    ]


def test_sampling_and_token_cache_share_no_mutant() -> None:
    sampling, cache = MUTATION.MODULES["sampling"], MUTATION.MODULES["token_cache"]
    for name in ("trainer.dataset.x_sample_windows__mutmut_3", "trainer.dataset.x__split__mutmut_12"):
        assert any(fnmatch.fnmatch(name, p) for p in sampling.mutants)
        assert any(fnmatch.fnmatch(name, p) for p in cache.exclude)
    assert not any(fnmatch.fnmatch("trainer.dataset.x_tokenize__mutmut_1", p) for p in sampling.mutants)


def test_every_equivalence_argument_names_a_counted_mutant_and_says_why() -> None:
    for mutant, (line, why) in MUTATION.EQUIVALENT.items():
        owners = [
            name
            for name, module in MUTATION.MODULES.items()
            if any(fnmatch.fnmatch(mutant, p) for p in module.mutants)
            and not any(fnmatch.fnmatch(mutant, p) for p in module.exclude)
        ]
        assert len(owners) == 1, mutant
        assert len(why) > 40 and line, mutant


# Prints {mutant name: diff} of every mutant mutmut makes of the given repository files, as `mutmut run` names
# and numbers them, without running any test (mutmut reads its settings from the working directory's pyproject).
GENERATE = """
import json, sys
from difflib import unified_diff
from pathlib import Path
import libcst
from mutmut.mutation.diff_apply import read_mutant_function, read_original_function
from mutmut.mutation.file_mutation import mutate_file_contents
from mutmut.utils.format_utils import get_mutant_name
repo, diffs = Path(sys.argv[1]), {}
for path in sys.argv[2:]:
    mutated = mutate_file_contents(path, (repo / path).read_text())
    module = libcst.parse_module(mutated.code)
    for short in mutated.mutant_names:
        name = get_mutant_name(Path(path), short)
        a, b = (libcst.Module([f]).code.strip().split("\\n") for f in (read_original_function(module, name), read_mutant_function(module, name)))
        diffs[name] = "\\n".join(unified_diff(a, b, path, path, lineterm=""))
print(json.dumps(diffs))
"""


@pytest.mark.slow
def test_every_equivalence_argument_names_the_mutant_it_was_written_for(tmp_path: Path) -> None:
    # A change to a function renumbers its mutants: an argument's name may come to name another mutant, a real one.
    files = sorted({re.split(r"\.x[_ǁ]", name)[0].replace(".", "/") + ".py" for name in MUTATION.EQUIVALENT})
    (tmp_path / "pyproject.toml").write_text('[tool.mutmut]\nsource_paths = ["."]\n')
    generated = subprocess.run(
        [sys.executable, "-c", GENERATE, str(REPO), *files],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    diffs = json.loads(generated.stdout)
    wrong = {
        name: MUTATION.added_lines(diffs[name]) if name in diffs else "no such mutant"
        for name, (line, _) in MUTATION.EQUIVALENT.items()
        if name not in diffs or not MUTATION.fits(diffs[name], line)
    }
    assert not wrong, wrong


@pytest.mark.parametrize(
    ("code", "status"),
    [(1, "killed"), (36, "killed"), (0, "survived"), (33, "no fast test"), (None, "not checked")],
)
def test_mutmut_exit_codes_are_read_as_mutmut_means_them(code: int | None, status: str) -> None:
    assert MUTATION.status(code) == status


def test_a_sample_is_the_same_every_time_and_about_its_share() -> None:
    names = [f"components.settings.x_parse_settings__mutmut_{n}" for n in range(1, 2001)]
    quarter = [name for name in names if MUTATION.sampled(name, 0.25)]
    assert quarter == [name for name in names if MUTATION.sampled(name, 0.25)]
    assert 400 < len(quarter) < 600
    assert set(quarter) <= {name for name in names if MUTATION.sampled(name, 0.5)}
    assert all(MUTATION.sampled(name, 1.0) for name in names)
    assert not any(MUTATION.sampled(name, 0.0) for name in names)
