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

from common.errors import UserError
from common.io import DISK_FULL_ERRNOS
from common.redact import redact_text

SUBCOMMAND_MODULES = (
    "data_pipeline.cli",
    "lightning_modules.cli",
    "sweeps.cli",
    "analysis.cli",
    "analysis.representation_cli",
    "analysis.report.cli",
    "specialize.study",
    "specialize.demo",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every subsystem's subcommands registered."""
    parser = argparse.ArgumentParser(
        prog="specialize",
        description="Train VGG16s on several visual tasks, lesion every conv filter, and measure task segregation.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the chosen subcommand, and turn user errors and a full disk into one line and exit
    code 2 (secrets redacted)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except UserError as error:
        return fail(args.command, str(error))
    except OSError as error:
        if error.errno not in DISK_FULL_ERRNOS:
            raise
        where = f" while writing {error.filename}" if error.filename else ""
        return fail(args.command, f"{os.strerror(error.errno)}{where}; free space (or raise the "
                                  "quota or file-size limit) or choose another --out, then rerun the same command "
                                  "to resume")
    except KeyboardInterrupt:
        print(f"specialize {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


def fail(command: str, message: str) -> int:
    """Print `message` as the command's one-line error on stderr, secrets redacted; the exit code 2."""
    print(redact_text(f"specialize {command}: error: {message}"), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
