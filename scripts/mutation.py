"""Mutation testing of the rules that protect users' work and clusters, with mutmut, by fast tests only.

    .venv/bin/python scripts/mutation.py [MODULE ...] [--budget SECONDS] [--jobs N] [--sample F] [--report-only]
    (make mutation [MODULES="..."] [MUTATION_BUDGET=SECONDS])

MODULES below names each module under test: the files mutmut mutates, the mutants that count (mutmut's
names, fnmatch patterns: a whole module, or one method such as Trainer.resume), and the fast test files that
may kill them. Each module runs in its own work directory, runs/mutation/<module>/, which links to the
repository's files and holds mutmut's copy (`mutants/`) and a pyproject.toml with the module's [tool.mutmut]
table, so modules neither share nor invalidate each other's results. mutmut runs the tests in-process
(forked workers), only those whose run touched the mutated function, with `-m "not slow and not docker"`.

Bounded time: at most --jobs (default 2) workers, and each module in turn gets an equal share of what is left
of --budget (default 1800 s) as a hard limit (quick modules leave their time to the later, larger ones); a
module cut off by it reports its unchecked mutants as such. A module with about a thousand mutants whose tests
run the whole program (settings, cluster) tests a fixed sample of them (`sample`, see `sampled`).

Writes runs/mutation/report.md: per module the score (killed / (tested - argued equivalent)), every surviving
or untested mutant with its diff, and the argument for each one listed in EQUIVALENT. Exit status 0 when every
module reaches GOAL, 1 otherwise.

To point a module at other files (e.g. components/cluster.py becoming the package components/cluster/), edit
its `mutate` and `mutants` entries: a directory in `mutate` is mutated whole.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
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
    sample: float = 1.0  # the share of its mutants tested (a fixed pseudo-random choice, see `sampled`)


SAMPLING = tuple(
    f"trainer.dataset.x_{function}__mutmut_*"
    for function in ("_split", "sample_windows", "train_batch", "val_batch")
)
TOKENIZER = ("byte_encoding", "get_encoding", "token_dtype")
CHECKPOINT = ("layout", "local", "storage", "store")  # trainer/checkpoint/ less s3.py (see below)
MODULES: dict[str, Module] = {
    "webhook_patch": Module(
        ("components/webhook_patch.py",),
        ("components.webhook_patch.*",),
        ("tests/components/test_webhook_patch.py",),
    ),
    # trainer/dataset.py in two parts: batch sampling (the split and the windows) and the token cache, with
    # the tokenizer it loads (in trainer/prepare.py).
    "sampling": Module(("trainer/dataset.py",), SAMPLING, ("tests/trainer/test_dataset.py",)),
    "token_cache": Module(
        ("trainer/dataset.py", "trainer/prepare.py"),
        ("trainer.dataset.*", *(f"trainer.prepare.x_{f}__mutmut_*" for f in TOKENIZER)),
        ("tests/trainer/test_dataset.py",),
        exclude=SAMPLING,
    ),
    # The checkpoint package, and the choice of the checkpoint to resume from in Trainer.resume. Not
    # trainer/checkpoint/s3.py: every test of S3Storage (tests/trainer/checkpoint/test_s3.py, the `s3` backend of
    # test_storage.py) runs against a real S3 server and is slow, so no fast test could kill its mutants; the
    # rules it shares with a directory (in layout.py and storage.py) are counted here.
    "checkpoint": Module(
        (*(f"trainer/checkpoint/{name}.py" for name in CHECKPOINT), "trainer/train.py"),
        (
            *(f"trainer.checkpoint.{name}.*" for name in CHECKPOINT),
            "trainer.train.xǁTrainerǁresume__mutmut_*",
        ),
        ("tests/trainer/checkpoint",),
    ),
    "launch": Module(("trainer/launch.py",), ("trainer.launch.*",), ("tests/trainer/test_launch.py",)),
    # Stack settings: their own tests, and the whole program's (secrets, an existing cluster's kubeconfig, bad
    # config before any resource). A quarter of the mutants (1,000 in all; each runs whole-program tests).
    "settings": Module(
        (
            "components/settings.py",
            "components/stack.py",
            "components/training_job_config.py",
            "components/checkpoints.py",
            "components/cluster_config.py",
        ),
        (
            "components.settings.*",
            "components.stack.*",
            "components.training_job_config.*",
            "components.checkpoints.*",
            "components.cluster_config.*",
        ),
        (
            "tests/components/test_settings.py",
            "tests/components/test_settings_gpu.py",
            "tests/components/test_training_job_config.py",
            "tests/test_main.py",
            # checkpoints.ObjectStore's variables as the pods get them (the S3 secret by reference only)
            "tests/components/test_training_job.py::test_an_object_store_reaches_the_pods_by_secret_reference_only",
        ),
        sample=0.25,
    ),
    # The cluster kinds (kind, k3s local/remote/in Docker, an existing cluster) and their rules.
    "cluster": Module(
        ("components/cluster",), ("components.cluster.*",), ("tests/components/cluster",), sample=0.25
    ),
}

# Surviving mutants argued equivalent (no input can tell them from the original), by mutmut's name: the line the
# mutant writes (its diff's added line, stripped) and why. mutmut numbers a function's mutants in order, so a
# change to the function gives the number to another mutant: an argument counts only while its line is the
# mutant's (`fits`), else the report lists it as not fitting and counts the mutant by its result; a name that
# no longer exists is reported as stale. tests/test_mutation.py checks every entry against mutmut's mutants
# of the current code.
_NO_API_VERSION = (
    "is_webhook_configuration's default for a missing apiVersion: with '' (the original), None (str(None) is "
    "'None'), 'XXXX' or no default, an object without apiVersion never starts with "
    "'admissionregistration.k8s.io/', so the answer is False in every case."
)
_MANIFEST_ASCII = (
    "The manifest's text encoding: json.dump writes it with ensure_ascii (its default), so manifest.json is pure "
    "ASCII (every trainer version wrote it with json.dump, same default); 'UTF-8' is the same codec as "
    "'utf-8' (codecs.lookup normalizes the name), and no encoding (or None) means the locale's, UTF-8 wherever "
    "this runs (PEP 538) and ASCII-compatible wherever Python runs, so the same bytes are written and the same "
    "text is read."
)
_MANIFEST_INDENT = (
    "json.dump's indent for manifest.json (1, 2 or none): only the whitespace between tokens changes; every "
    "reader parses it with json.loads (read_manifest, LocalStorage.manifest), and manifest.json is not among "
    "the files whose sizes and checksums it records, so nothing reads its layout."
)
_SORT_KEYS_NONE = (
    "yaml.safe_dump(sort_keys=None) instead of False: PyYAML only tests the flag's truth "
    "(yaml/representer.py, represent_mapping: `if self.sort_keys:`), and None is false like False."
)
_CLIENT_FILE_NAME = (
    "Another name for one of the two client files _tls_context writes into its private directory (a fresh "
    "TemporaryDirectory of api_get's, holding nothing else): the names stay distinct, and the same "
    "variables name the file written and the file load_cert_chain reads, so the same certificate and key load."
)
_STRICT_DEFAULT = (
    "getattr(ssl, 'VERIFY_X509_STRICT', default) with another default (None, none, 1): ssl has had "
    "VERIFY_X509_STRICT since Python 3.4, so the default is never used on the supported Pythons (>= 3.10)."
)
_CONNECTION_CONTEXT = (
    "HTTPSConnection.__init__ without the context (None): its own _context is read only by "
    "HTTPSConnection.connect (http/client.py), which _Connection.connect overrides to wrap the socket with "
    "self._tls, the context given; on 3.12+ a None context makes a default one that is likewise never used."
)
_PROXY_KEY_CASE = (
    "ProxyHandler's scheme keys in capitals ('HTTPS', 'HTTP'): urllib.request.ProxyHandler.__init__ lowers "
    "every key (`type = type.lower()`) before it makes the <scheme>_open method, so the same handler results."
)
_HEADER_CASE = (
    "The Accept header's name as 'accept' or 'ACCEPT': urllib.request.Request.add_header stores every name "
    "as key.capitalize() ('Accept'), so the same header is sent."
)
_AGENTS_ZIP = (
    "zip(hosts.agents, agents) with strict None or False instead of True: agents is made in provision from "
    "hosts.agents, one per host, so the two always have the same length and zip never reaches the check."
)
_NFS_LIBRARY = (
    "The unexport or unmount script without k3s_remote_nfs_lib.sh: the library only defines apt_install and "
    "replace_line, which neither script calls (they use root.sh's require_root and as_root, still there)."
)
_IMPLIED_DEPENDENCY = (
    "depends_on dropped where an input already depends on the resource: the token command's triggers hold "
    "server.id, and each agent's stdin is made from token.stdout; the Pulumi SDK adds the resources behind an "
    "input's Outputs to the registration's dependencies (pulumi/runtime/resource.py, prepare_resource), so "
    "the engine gets the same dependencies and order."
)
_ZERO_RETURNED_FIRST = (
    "outcome's last test of torchrun's code as <= 0 or < 1 instead of < 0: they differ only for 0, which "
    "outcome returns at its first line (`if torchrun_code == 0: return 0`), so 0 never reaches it."
)
EQUIVALENT: dict[str, tuple[str, str]] = {
    "trainer.launch.x_outcome__mutmut_13": (
        "return 128 - torchrun_code if torchrun_code <= 0 else torchrun_code",
        _ZERO_RETURNED_FIRST,
    ),
    "trainer.launch.x_outcome__mutmut_14": (
        "return 128 - torchrun_code if torchrun_code < 1 else torchrun_code",
        _ZERO_RETURNED_FIRST,
    ),
    "trainer.checkpoint.local.x_read_manifest__mutmut_3": (
        "manifest = json.loads((directory / MANIFEST).read_text(encoding=None))",
        _MANIFEST_ASCII,
    ),
    "trainer.checkpoint.local.x_read_manifest__mutmut_6": (
        'manifest = json.loads((directory / MANIFEST).read_text(encoding="UTF-8"))',
        _MANIFEST_ASCII,
    ),
    "trainer.checkpoint.local.xǁLocalStorageǁmanifest__mutmut_3": (
        "manifest = json.loads((self.root / tag / MANIFEST).read_text(encoding=None))",
        _MANIFEST_ASCII,
    ),
    "trainer.checkpoint.local.xǁLocalStorageǁmanifest__mutmut_7": (
        'manifest = json.loads((self.root / tag / MANIFEST).read_text(encoding="UTF-8"))',
        _MANIFEST_ASCII,
    ),
    "trainer.checkpoint.local.xǁLocalStorageǁpublish__mutmut_5": (
        'with open(directory / MANIFEST, "w", encoding=None) as handle:',
        _MANIFEST_ASCII,
    ),
    "trainer.checkpoint.local.xǁLocalStorageǁpublish__mutmut_8": (
        'with open(directory / MANIFEST, "w", ) as handle:',
        _MANIFEST_ASCII,
    ),
    "trainer.checkpoint.local.xǁLocalStorageǁpublish__mutmut_13": (
        'with open(directory / MANIFEST, "w", encoding="UTF-8") as handle:',
        _MANIFEST_ASCII,
    ),
    "trainer.checkpoint.local.xǁLocalStorageǁpublish__mutmut_16": (
        "json.dump(manifest, handle, indent=None, sort_keys=True)",
        _MANIFEST_INDENT,
    ),
    "trainer.checkpoint.local.xǁLocalStorageǁpublish__mutmut_20": (
        "json.dump(manifest, handle, sort_keys=True)",
        _MANIFEST_INDENT,
    ),
    "trainer.checkpoint.local.xǁLocalStorageǁpublish__mutmut_22": (
        "json.dump(manifest, handle, indent=2, sort_keys=True)",
        _MANIFEST_INDENT,
    ),
    "trainer.checkpoint.local.xǁLocalStorageǁstaged_problem__mutmut_3": (
        "return _files_problem(self.root / staging, files, checksums=None)",
        (
            "_files_problem(checksums=None) instead of False: it only tests the flag's truth (`if checksums and "
            "...`), and None is false like False."
        ),
    ),
    "trainer.checkpoint.local.xǁLocalStorageǁwrite_shard__mutmut_18": (
        "with open(path, ) as handle:",
        (
            "open(path) (text mode 'r') instead of 'rb' before os.fsync: the file is opened only for its "
            "descriptor, nothing is read or decoded, and fsync(2) flushes the file's data through any descriptor "
            "of it, whatever its access mode."
        ),
    ),
    "trainer.checkpoint.store.xǁCheckpointStoreǁ_publish__mutmut_38": (
        "storage.remove(write.staging, None)",
        (
            "storage.remove(write.staging, None) instead of self.run: LocalStorage.remove uses the run id only to "
            "name the aside of a published checkpoint (a name without '.tmp-'); a staging name always has '.tmp-' "
            "(f'{tag}.tmp-{self.run}', Write.staging), so it is deleted in place and the run id is never read."
        ),
    ),
    "trainer.checkpoint.store.xǁCheckpointStoreǁ_write__mutmut_26": (
        "outcome: tuple[str | None, str | None] = None",
        (
            "outcome's initial value (None, None) replaced by None: it is never read. Rank 0 always assigns it (the "
            "_publish call or its except branch); on every other rank broadcast_object_list replaces box[0] with rank "
            "0's outcome, and if the broadcast raises, the except branch sets the error without reading box."
        ),
    ),
    "trainer.checkpoint.layout.xǁRunLockǁrelease__mutmut_1": (
        "def release(self, remove: bool = True) -> None: ...",
        (
            "The default of `remove` in the RunLock Protocol's stub (True instead of False): a Protocol's method is "
            "never called (its body is `...`); calls go to the implementations, HeldLock.release and "
            "S3Storage's Lease.release, whose own defaults apply. Only mypy reads the stub's signature."
        ),
    ),
    "trainer.dataset.x_sample_windows__mutmut_8": (
        "starts = rng.integers(len(tokens) - block_size, size=batch_size)",
        (
            "rng.integers(len(tokens) - block_size) instead of rng.integers(0, len(tokens) - block_size): numpy's "
            "Generator.integers(low, high=None) draws from [0, low) when high is None, the same call."
        ),
    ),
    "components.webhook_patch.x_is_webhook_configuration__mutmut_4": (
        'api_version = str(manifest.get("apiVersion", None))',
        _NO_API_VERSION,
    ),
    "components.webhook_patch.x_is_webhook_configuration__mutmut_6": (
        'api_version = str(manifest.get("apiVersion", ))',
        _NO_API_VERSION,
    ),
    "components.webhook_patch.x_is_webhook_configuration__mutmut_10": (
        'api_version = str(manifest.get("apiVersion", "XXXX"))',
        _NO_API_VERSION,
    ),
    "components.webhook_patch.x_patch_manifest_stream__mutmut_5": (
        "return yaml.safe_dump_all(documents, sort_keys=None)",
        (
            "yaml.safe_dump_all(sort_keys=None) instead of False: PyYAML only tests the flag's truth "
            "(yaml/representer.py, represent_mapping: `if self.sort_keys:`), and None is false like False."
        ),
    ),
    "components.cluster.k3s.x_rewrite_kubeconfig_server__mutmut_13": (
        "return yaml.safe_dump(document, sort_keys=None)",
        _SORT_KEYS_NONE,
    ),
    "components.cluster.kind.x_render_kind_config__mutmut_73": (
        "return yaml.safe_dump(config, sort_keys=None)",
        _SORT_KEYS_NONE,
    ),
    "components.cluster.kubeconfig.x_with_namespace__mutmut_29": (
        "return yaml.safe_dump(document, sort_keys=None)",
        _SORT_KEYS_NONE,
    ),
    "components.cluster.kind.x_render_kind_config__mutmut_47": (
        'node("control-plane", None),',
        (
            "node('control-plane', None) instead of []: node() adds extraMounts only `if mounts:`, and None is "
            "false like [], so the control plane's entry is the same {role, image}."
        ),
    ),
    "components.cluster.kubeconfig.x__tls_context__mutmut_38": (
        'certificate, key = private / "XXclient.crtXX", private / "client.key"',
        _CLIENT_FILE_NAME,
    ),
    "components.cluster.kubeconfig.x__tls_context__mutmut_39": (
        'certificate, key = private / "CLIENT.CRT", private / "client.key"',
        _CLIENT_FILE_NAME,
    ),
    "components.cluster.kubeconfig.x__tls_context__mutmut_41": (
        'certificate, key = private / "client.crt", private / "XXclient.keyXX"',
        _CLIENT_FILE_NAME,
    ),
    "components.cluster.kubeconfig.x__tls_context__mutmut_42": (
        'certificate, key = private / "client.crt", private / "CLIENT.KEY"',
        _CLIENT_FILE_NAME,
    ),
    "components.cluster.kubeconfig.x_parse_kubeconfig__mutmut_208": (
        "return ExistingCluster(kubeconfig=yaml.safe_dump(reduced, sort_keys=None), context=name, source_key=key)",
        _SORT_KEYS_NONE,
    ),
    "components.cluster.kubeconfig.x__tls_context__mutmut_16": (
        'context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", None)',
        _STRICT_DEFAULT,
    ),
    "components.cluster.kubeconfig.x__tls_context__mutmut_19": (
        'context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", )',
        _STRICT_DEFAULT,
    ),
    "components.cluster.kubeconfig.x__tls_context__mutmut_22": (
        'context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 1)',
        _STRICT_DEFAULT,
    ),
    "components.cluster.kubeconfig.x__tls_context__mutmut_26": (
        "context.check_hostname = None",
        (
            "check_hostname = None instead of False: ssl.SSLContext's check_hostname setter takes the value's "
            "truth (Modules/_ssl.c, set_check_hostname: PyObject_IsTrue), so None sets it False."
        ),
    ),
    "components.cluster.kubeconfig.x__tls_context__mutmut_48": (
        "file.touch(mode=385)",
        (
            "touch(mode=385) (0o601) instead of 0o600: the files are in api_get's TemporaryDirectory, "
            "made 0o700 by mkdtemp, so no other user can reach them whatever their own bits; the extra bit is "
            "execute for others, which grants no read either; the owner's read and write are the same."
        ),
    ),
    "components.cluster.kubeconfig.xǁ_Connectionǁ__init____mutmut_2": (
        "super().__init__(host, context=None, **kwargs)",
        _CONNECTION_CONTEXT,
    ),
    "components.cluster.kubeconfig.xǁ_Connectionǁ__init____mutmut_4": (
        "super().__init__(host, **kwargs)",
        _CONNECTION_CONTEXT,
    ),
    "components.cluster.kubeconfig.x__proxies__mutmut_19": (
        'return {"HTTPS": proxy, "http": proxy}',
        _PROXY_KEY_CASE,
    ),
    "components.cluster.kubeconfig.x__proxies__mutmut_21": (
        'return {"https": proxy, "HTTP": proxy}',
        _PROXY_KEY_CASE,
    ),
    "components.cluster.kubeconfig.x__credentials__mutmut_16": (
        'headers = {"accept": "application/json"}',
        _HEADER_CASE,
    ),
    "components.cluster.kubeconfig.x__credentials__mutmut_17": (
        'headers = {"ACCEPT": "application/json"}',
        _HEADER_CASE,
    ),
    "components.cluster.kubeconfig.x_api_get__mutmut_56": (
        'proxies = _proxies(entry, urlsplit(server).hostname or "XXXX", cluster.source_key)',
        (
            "urlsplit(server).hostname or 'XXXX' instead of or '' in api_get: its ExistingCluster is made only by "
            "parse_kubeconfig, which rejects a server without a host name (`not server.hostname`), so hostname is "
            "never empty and the default is never used."
        ),
    ),
    "components.cluster.kubeconfig.x_parse_kubeconfig__mutmut_115": (
        'server = urlsplit(str(cluster.get("server") or "XXXX"))',
        (
            "str(cluster.get('server') or 'XXXX') instead of or '': a cluster without a server is rejected either "
            "way (urlsplit gives neither a scheme nor a host name for '' or 'XXXX'), with the same message, which "
            "quotes cluster.get('server') (None), not the default."
        ),
    ),
    "components.cluster.k3s_remote.xǁK3sRemoteǁ_nfs__mutmut_76": (
        "for index, (host, agent) in enumerate(zip(hosts.agents, agents, strict=None))",
        _AGENTS_ZIP,
    ),
    "components.cluster.k3s_remote.xǁK3sRemoteǁ_nfs__mutmut_79": (
        "for index, (host, agent) in enumerate(zip(hosts.agents, agents, ))",
        _AGENTS_ZIP,
    ),
    "components.cluster.k3s_remote.xǁK3sRemoteǁ_nfs__mutmut_80": (
        "for index, (host, agent) in enumerate(zip(hosts.agents, agents, strict=False))",
        _AGENTS_ZIP,
    ),
    "components.cluster.k3s_remote.x_nfs_scripts__mutmut_48": (
        '"unexport": remote_script(storage, ROOT_PRELUDE, "k3s_remote_nfs_unexport.sh"),',
        _NFS_LIBRARY,
    ),
    "components.cluster.k3s_remote.x_nfs_scripts__mutmut_74": (
        '"unmount": remote_script(storage, ROOT_PRELUDE, "k3s_remote_nfs_unmount.sh"),',
        _NFS_LIBRARY,
    ),
    "components.cluster.k3s_remote.xǁK3sRemoteǁprovision__mutmut_72": (
        'parent=parent, depends_on=None, additional_secret_outputs=["stdout"]',
        _IMPLIED_DEPENDENCY,
    ),
    "components.cluster.k3s_remote.xǁK3sRemoteǁprovision__mutmut_75": (
        'parent=parent, additional_secret_outputs=["stdout"]',
        _IMPLIED_DEPENDENCY,
    ),
    "components.cluster.k3s_remote.xǁK3sRemoteǁprovision__mutmut_116": (
        "opts=pulumi.ResourceOptions(parent=parent, depends_on=None, delete_before_replace=True),",
        _IMPLIED_DEPENDENCY,
    ),
    "components.cluster.k3s_remote.xǁK3sRemoteǁprovision__mutmut_119": (
        "opts=pulumi.ResourceOptions(parent=parent, delete_before_replace=True),",
        _IMPLIED_DEPENDENCY,
    ),
    "components.cluster.kubeconfig.x_api_get__mutmut_70": (
        'return error.code, b"XXXX"',
        (
            "api_get's body for an HTTPError is b'XXXX' instead of b'': urllib raises HTTPError only for a status "
            "outside 200-299, so read_custom_resource_definition (body read only after a 200) never sees it; "
            "check_api_server reads it only after a 401 with plugin credentials or a 403, with json.loads, which "
            "rejects both ('' as the version either way); existing.ask_api makes {} of both (b'' by its `if body`, "
            "b'XXXX' by json.loads' ValueError)."
        ),
    ),
    "components.cluster.kubeconfig.xǁ_Connectionǁconnect__mutmut_9": (
        'name = self._server_name or getattr(self, "_tunnel_host", ) or self.host',
        (
            "getattr(self, '_tunnel_host') without the default None: _Connection is an http.client.HTTPSConnection "
            "made through its __init__, which sets self._tunnel_host = None (http/client.py, HTTPConnection.__init__, "
            "on every Python 3.10 to 3.13), so the attribute always exists and the default is never used."
        ),
    ),
    "components.settings.x_quantity_bytes__mutmut_5": (
        'number = quantity.rstrip("XXXX".join({c for suffix in _QUANTITY_SUFFIXES for c in suffix}))',
        (
            "The characters rstrip removes from a quantity are joined with 'XXXX' instead of '': the set gains only "
            "'X'. quantity_bytes is called only on values that matched QUANTITY (training_job_config.quantities, "
            "through settings.matching), whose characters are digits, '.' and the suffix letters, never 'X', so the "
            "same number is split off and the same suffix looked up."
        ),
    ),
    "components.training_job_config.x__data_source__mutmut_37": (
        'bundled = source.rstrip(None) == BUNDLED_DATA or source.startswith(f"{BUNDLED_DATA}/")',
        (
            "source.rstrip() (whitespace) instead of rstrip('/') in the bundled test: the source was strip()ped, so "
            "rstrip() leaves it as it is and the test reads source == BUNDLED_DATA or source.startswith(BUNDLED_DATA + "
            "'/'). The original's first clause holds only for BUNDLED_DATA followed by one or more '/', which the "
            "second clause accepts anyway: both accept exactly the same sources."
        ),
    ),
    "components.cluster.kubeconfig.xǁ_HTTPSHandlerǁ__init____mutmut_1": (
        "super().__init__(context=None)",
        (
            "HTTPSHandler.__init__(context=None): the handler's own _context is read only by HTTPSHandler.https_open "
            "(urllib/request.py), which _HTTPSHandler overrides to open a _Connection with self._tls, the context "
            "given; on 3.12+ a None context makes a default one that is likewise never used."
        ),
    ),
}


def python_module(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def mutmut_table(module: Module) -> str:
    """The module's [tool.mutmut] table (TOML)."""
    # Both packages are copied (components imports trainer.config); only_mutate picks what is mutated.
    sources = ["components", "trainer"]
    copied = ["__main__.py", "Dockerfile", "scripts", *sorted(p.name for p in REPO.glob("Pulumi*.yaml"))]
    only = [path if path.endswith(".py") else f"{path}/*" for path in module.mutate]  # a directory: all of it
    lines = [
        "[tool.mutmut]",
        f"source_paths = {json.dumps(sources)}",
        f"only_mutate = {json.dumps(only)}",
        f"pytest_add_cli_args = {json.dumps(FAST_TESTS)}",
        f"pytest_add_cli_args_test_selection = {json.dumps(list(module.tests))}",
        f"also_copy = {json.dumps(copied)}",
        "use_git_change_detection = false",
        # Workers fork from a server that has only collected the tests: the Pulumi SDK's gRPC and torch are not
        # fork-safe once used (with plain fork every settings mutant hung until its timeout).
        'process_isolation = "forkserver"',
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


def sampled(mutant: str, fraction: float) -> bool:
    """Whether a mutant is in the sample: the first 32 bits of the sha256 of its name below fraction * 2**32.
    The same mutants on every run (and machine) for the same fraction; a larger fraction keeps them all."""
    return fraction >= 1 or int(hashlib.sha256(mutant.encode()).hexdigest()[:8], 16) < fraction * 2**32


def mutmut_run(work: Path, jobs: int, names: list[str], seconds: float) -> str:
    """`mutmut run` for the given mutant names or patterns, stopped (its whole process group) after `seconds`."""
    mutmut = Path(sys.executable).with_name("mutmut")
    with open(work / "mutmut.log", "a") as output:
        process = subprocess.Popen(
            [str(mutmut), "run", "--max-children", str(jobs), *names],
            cwd=work, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        try:
            process.wait(timeout=max(seconds, 1))
            return f"finished (exit {process.returncode})"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 15)
            process.wait()
            return "stopped at the time limit"


def run_module(name: str, module: Module, jobs: int, seconds: float, fraction: float) -> tuple[str, float]:
    """mutmut run for the module's mutants (or the sampled share of them) in its work directory, within
    `seconds`. A sample first lets mutmut generate the mutants and collect its test statistics with a pattern
    that matches no mutant, then runs the chosen ones by name."""
    work = prepare(name, module)
    started = time.monotonic()
    if fraction >= 1:
        outcome = mutmut_run(work, jobs, list(module.mutants), seconds)
    else:
        outcome = mutmut_run(work, jobs, [module.mutants[0].split("*")[0] + "__no_such_mutant*"], seconds)
        chosen = [mutant for mutant in results(name, module) if sampled(mutant, fraction)]
        if chosen:
            outcome = mutmut_run(work, jobs, chosen, seconds - (time.monotonic() - started))
        outcome += f", sample {fraction:.0%}"
    seconds_taken = time.monotonic() - started
    (work / "outcome.json").write_text(
        json.dumps(
            {
                "outcome": outcome,
                "seconds": seconds_taken,
                "commit": commit(),
                "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            }
        )
    )
    return outcome, seconds_taken


def commit() -> str:
    """The checked-out commit, marked when tracked files differ from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return head.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def counts_in(mutant: str, module: Module) -> bool:
    """Whether a mutant name is one of the module's (its patterns, less another module's)."""
    return any(fnmatch.fnmatch(mutant, p) for p in module.mutants) and not any(
        fnmatch.fnmatch(mutant, p) for p in module.exclude
    )


def results(name: str, module: Module) -> dict[str, int | None]:
    """Exit code by mutant name, for the mutants that count (None: not checked)."""
    codes: dict[str, int | None] = {}
    for meta in (RUNS / name / "mutants").rglob("*.py.meta"):
        for mutant, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if counts_in(mutant, module):
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


def added_lines(diff: str) -> list[str]:
    """A mutant's diff's added lines, stripped (after the ---/+++/@@ header)."""
    return [line[1:].strip() for line in diff.splitlines()[3:] if line.startswith("+")]


def fits(diff: str, line: str) -> bool:
    """Whether the mutant with this diff is the one an equivalence argument was written for."""
    return added_lines(diff) == [line]


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


def report(selected: list[str], fractions: dict[str, float], command: str) -> tuple[str, bool]:
    lines = [
        "# Mutation testing report",
        "",
        f"Written {time.strftime('%Y-%m-%d %H:%M %Z')} at commit {commit()} by `{command}`. Fast tests only"
        f" (`{' '.join(FAST_TESTS)}`). Each module's run: its date, commit and outcome in the last column.",
        "",
        "| module | mutants | tested | killed | survived | no fast test | not checked | equivalent | score | run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    details: list[str] = []
    met = True
    for name in selected:
        every = results(name, MODULES[name])
        codes = {mutant: code for mutant, code in every.items() if sampled(mutant, fractions[name])}
        argued = [mutant for mutant in codes if mutant in EQUIVALENT]
        shown = diffs(name, argued)
        equivalent = sorted(mutant for mutant in argued if fits(shown[mutant], EQUIVALENT[mutant][0]))
        counts = Counter(status(code) for mutant, code in codes.items() if mutant not in equivalent)
        counted = len(codes) - len(equivalent)
        score = counts["killed"] / counted if counted else 0.0
        met = met and counted > 0 and score >= GOAL
        ran = RUNS / name / "outcome.json"
        run = json.loads(ran.read_text()) if ran.is_file() else {"outcome": "not run", "seconds": 0}
        run_text = f"{run['outcome']}, {run['seconds']:.0f} s" + (
            f" ({run['date']}, commit {run['commit']})" if "commit" in run else ""
        )
        lines.append(
            f"| {name} | {len(every)} | {len(codes)} | {counts['killed']} | {counts['survived']} | {counts['no fast test']} "
            f"| {counts['not checked']} | {len(equivalent)} | {score:.1%} | {run_text} |"
        )
        left = sorted(m for m, c in codes.items() if m not in equivalent and status(c) != "killed")
        misfits = sorted(set(argued) - set(equivalent))
        if left or argued:
            details += [f"## {name}", ""]
        shown |= diffs(name, [mutant for mutant in left if mutant not in shown])
        for mutant in left:
            details += [f"### {mutant}: {status(codes[mutant])}", "", "```diff", shown[mutant], "```", ""]
        for mutant in equivalent:
            details += [f"### {mutant}: equivalent", "", EQUIVALENT[mutant][1], ""]
        for mutant in misfits:
            details += [
                f"### {mutant}: argued equivalent for `{EQUIVALENT[mutant][0]}`, not this mutant ({status(codes[mutant])})",
                "",
                "```diff",
                shown[mutant],
                "```",
                "",
            ]
    # Arguments for mutants of the selected modules that those modules no longer have (the code moved on).
    known = {n: results(n, MODULES[n]) for n in selected}
    stale = sorted(
        m
        for m in EQUIVALENT
        if any(counts_in(m, MODULES[n]) for n in selected) and not any(m in known[n] for n in selected)
    )
    if stale:
        details += ["## Stale equivalence arguments (no such mutant now)", "", *[f"- {m}" for m in stale], ""]
    lines += [
        "",
        f"Goal: at least {GOAL:.0%} of the non-equivalent tested mutants killed in every module. score = killed /"
        " (tested - equivalent); a mutant not checked (time limit) counts against it.",
        "",
    ]
    return "\n".join(lines + details), met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"of {', '.join(MODULES)} (default: all)")
    parser.add_argument("--budget", type=float, default=1800, help="seconds for all modules (default 1800)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel mutmut workers (default 2)")
    parser.add_argument(
        "--sample", type=float, help="share of each module's mutants to test (default: per module)"
    )
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the last runs")
    options = parser.parse_args()
    unknown = sorted(set(options.modules) - set(MODULES))
    if unknown:
        parser.error(f"unknown module {unknown[0]!r}; allowed: {', '.join(MODULES)}")
    selected = options.modules or list(MODULES)
    fractions = {
        name: MODULES[name].sample if options.sample is None else options.sample for name in selected
    }
    outcomes: dict[str, tuple[str, float]] = {}
    if not options.report_only:
        deadline = time.monotonic() + options.budget
        for index, name in enumerate(selected):
            # An equal share of what is left: time a quick module does not use goes to the later ones.
            budget = (deadline - time.monotonic()) / (len(selected) - index)
            outcomes[name] = run_module(name, MODULES[name], options.jobs, budget, fractions[name])
            print(f"mutation: {name}: {outcomes[name][0]} after {outcomes[name][1]:.0f} s", flush=True)
    command = "make mutation" + (f" MODULES='{' '.join(options.modules)}'" if options.modules else "")
    text, met = report(selected, fractions, command)
    (RUNS / "report.md").write_text(text)
    print(text.split("\n\n## ")[0])
    print(f"mutation: report in {(RUNS / 'report.md').relative_to(REPO)}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
