"""The ``anynet`` command."""

from __future__ import annotations

import argparse
import platform
import sys

from . import __version__
from .backend import available_devices, device, library_versions

__all__ = ["main"]


def _devices(args: argparse.Namespace) -> int:
    names = available_devices()
    print(f"anynet {__version__} on Python {platform.python_version()} ({platform.machine()})")
    print("libraries:")
    for module, version in library_versions().items():
        print(f"  {module:<18} {version}")
    print("devices usable here (pass one to --device or anynet.device()):")
    for name in names:
        print(f"  {name}")
    print(f"'auto' picks: {device('auto').name}")
    if not any(name.startswith("cuda") for name in names):
        print('no CUDA device through CuPy; on a CUDA machine: pip install "anynet[cuda12]" or "anynet[cuda13]"')
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anynet",
        description="The neural network of 'Deep Learning from Scratch' on NumPy, CuPy, PyTorch or array-api-strict.",
    )
    parser.add_argument("--version", action="version", version=f"anynet {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    devices = commands.add_parser("devices", help="list the devices usable on this machine, with library versions")
    devices.set_defaults(run=_devices)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except BrokenPipeError:  # output piped into head and cut short
        return 0
    except (ValueError, TypeError, OSError) as error:
        print(f"anynet {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
