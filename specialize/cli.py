"""The `specialize` command: one entry point whose subcommands live beside the code they drive.

Each subsystem module defines `register(subparsers)`, adding its subcommands with
`set_defaults(run=handler)`; a handler takes the parsed arguments and returns an exit code.
Heavy imports (torch, ray, ffcv) happen inside handlers, so `specialize --help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn

from common.console import setup_console
from common.errors import SettingError, UserError
from common.io import DISK_FULL_ERRNOS
from common.ray_runner import command_session
from common.redact import redact_text
from common.wandb_runs import logging_to, target_from_args

SUBCOMMAND_MODULES = (
    "data_pipeline.cli",
    "lightning_modules.cli",
    "sweeps.cli",
    "analysis.segregation.cli",
    "analysis.representations.cli",
    "analysis.report.cli",
    "specialize.study",
    "specialize.demo",
    "specialize.cluster",
)


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors (unknown option, bad value, missing argument) are one line on stderr,
    `specialize <command>: error: <what>; see specialize <command> --help`, and exit code 2.

    Subcommand parsers inherit the class, so each error names the (sub)command that met it, unrecognised
    arguments included. The parsed arguments' `prog` names the innermost (sub)command, e.g. "specialize data build".
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, redact_text(f"{self.prog}: error: {' '.join(message.split())}; see {self.prog} --help\n"))

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        if not hasattr(namespace, "prog"):  # a subcommand's parser has set it already
            namespace.prog = self.prog
            namespace.options = {
                action.dest: action.option_strings[0] for action in self._actions if action.option_strings
            }
        return namespace, extras


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every subsystem's subcommands registered."""
    parser = OneLineErrorParser(
        prog="specialize",
        description="Train VGG16s on several visual tasks, lesion every conv filter, and measure task segregation.",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show everything: third-party hints, W&B's blocks, debug messages"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the chosen subcommand, and turn usage errors, user errors and a full disk into one line
    and exit code 2 (secrets redacted)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # a usage error (one line already printed, code 2) or --help (code 0)
        return stop.code if isinstance(stop.code, int) else 0
    setup_console(args.verbose)
    try:
        # --ray-dashboard: one local Ray, with its dashboard, for the whole command; --wandb-*: where stages log
        with command_session(args), logging_to(target_from_args(args)):
            return int(args.run(args) or 0)
    except SettingError as error:  # a setting's own check: a bad option value, said as a usage error is
        if error.key not in args.options:
            return fail(args.prog, str(error))
        return fail(args.prog, f"{error.named(args.options[error.key])}; see {args.prog} --help")
    except UserError as error:
        return fail(args.prog, str(error))
    except OSError as error:
        if error.errno not in DISK_FULL_ERRNOS:
            raise
        where = f" while writing {error.filename}" if error.filename else ""
        return fail(
            args.prog,
            f"{os.strerror(error.errno)}{where}; free space (or raise the quota or file-size "
            "limit) or choose another --out, then rerun the same command to resume",
        )
    except KeyboardInterrupt:
        print(f"{args.prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


def fail(prog: str, message: str) -> int:
    """Print `message` as the (sub)command's one-line error on stderr, secrets redacted; the exit code 2."""
    print(redact_text(f"{prog}: error: {message}"), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
