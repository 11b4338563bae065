"""Command line: train, validate, prepare, print-config, launch, plot. Bad input: one line on stderr, exit 2."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from trainer import USAGE_EXIT_CODE
from trainer.config import ConfigError, load_config
from trainer.writable import check_writable, directory_problem


def cmd_train(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    check_writable(config)  # before anything is written
    from trainer.launch import shutdown_timeout_warning
    from trainer.worker import report_exit_code, train

    if warning := shutdown_timeout_warning(os.environ):
        print(warning, file=sys.stderr, flush=True)
    try:
        code = train(config)
    except ConfigError:
        report_exit_code(USAGE_EXIT_CODE)
        raise
    report_exit_code(code)
    return code


def cmd_validate(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    check_writable(config)
    from trainer.prepare import get_encoding
    from trainer.sources import resolve_source

    get_encoding(config.data.encoding)
    print(
        f"config {args.config} is valid: model {config.model.preset}, {resolve_source(config.data).describe}"
    )
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    if args.workers < 0:
        raise ConfigError(f"--workers: expected a process count >= 0, got {args.workers}")
    from trainer.prepare import run_prepare

    run_prepare(config.data, args.workers)
    return 0


def cmd_print_config(args: argparse.Namespace) -> int:
    print(yaml.safe_dump(load_config(args.config, args.overrides).to_dict(), sort_keys=False), end="")
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    from trainer.launch import launch

    return launch(args.config, args.overrides)


def cmd_plot(args: argparse.Namespace) -> int:
    from trainer.plot import plot_loss

    out = Path(os.path.expanduser(args.out))  # checked where it is written; pathlib's raises for ~unknown
    if problem := directory_problem("--out", str(out.absolute().parent)):
        raise ConfigError(problem)
    plot_loss(Path(args.metrics), out)
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer", description="GPT pre-training on DeepSpeed.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    configured = {
        "train": (cmd_train, "train (or resume) until train.max_steps"),
        "validate": (cmd_validate, "check a config and that its data and encoding exist"),
        "prepare": (cmd_prepare, "tokenize the data into token shards once (training does it if needed)"),
        "print-config": (cmd_print_config, "print the resolved config, defaults included"),
        "launch": (cmd_launch, "run train under torchrun from Kubeflow's PET_* variables"),
    }
    for name, (handler, help_text) in configured.items():
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument("--config", required=True, help="the YAML config file")
        command.add_argument(
            "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
            help="override one dotted key, e.g. --set train.max_steps=100 (repeatable)",
        )  # fmt: skip
        command.set_defaults(handler=handler)
        if name == "prepare":
            command.add_argument(
                "--workers", type=int, default=0, metavar="N",
                help="tokenizing processes (default: data.workers, else every CPU this process may use)",
            )  # fmt: skip
    plot = commands.add_parser("plot", help="plot the loss curve of a metrics.jsonl to a PNG")
    plot.add_argument("--metrics", required=True, help="a run's metrics.jsonl")
    plot.add_argument("--out", required=True, help="the PNG to write")
    plot.set_defaults(handler=cmd_plot)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_EXIT_CODE
    except ModuleNotFoundError as error:
        if (error.name or "trainer").partition(".")[0] == "trainer":
            raise  # one of our own missing is a bug: its traceback says where
        print(
            f"error: {error.name} is not installed in {sys.executable}: the trainer needs torch and "
            "trainer/requirements.txt; run `make trainer-venv` first (adds them to .venv: about 5.7 GB in all)",
            file=sys.stderr,
        )
        return USAGE_EXIT_CODE
