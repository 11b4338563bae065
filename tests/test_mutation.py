"""scripts/mutation.py, the `make mutation` driver: its module table points at what exists, and the
[tool.mutmut] table it writes is what mutmut reads."""

from __future__ import annotations

import fnmatch
import importlib.util
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
    for mutant, why in MUTATION.EQUIVALENT.items():
        owners = [
            name
            for name, module in MUTATION.MODULES.items()
            if any(fnmatch.fnmatch(mutant, p) for p in module.mutants)
            and not any(fnmatch.fnmatch(mutant, p) for p in module.exclude)
        ]
        assert len(owners) == 1, mutant
        assert len(why) > 40, mutant


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
