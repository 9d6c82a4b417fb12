"""``onnxbridge zoo add|ls|show|rm|verify|export``: the zoo from the command line (onnxbridge.zoo)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

from onnxbridge.zoo import Zoo, ZooError

__all__ = ["ENV_ZOO", "add_zoo_parser"]

ENV_ZOO = "ONNXBRIDGE_ZOO"


def _split(ref: str) -> tuple[str, str | None]:
    name, _, version = ref.partition(":")
    return name, version or None


def _zoo(args: argparse.Namespace) -> Zoo:
    return Zoo(args.root or os.environ.get(ENV_ZOO) or "zoo")


def _cmd_add(args: argparse.Namespace) -> int:
    zoo = _zoo(args)
    if args.model is None:
        if not (args.reason and args.fallback):
            raise ZooError("give a model file, or record an unconverted model with --reason and --fallback")
        entry = zoo.record_unconverted(args.name, reason=args.reason, fallback=args.fallback,
                                       version=args.version, tags=args.tag or (), source=args.source,
                                       description=args.description or "", framework=args.framework or "",
                                       overwrite=args.overwrite)
    else:
        entry = zoo.add(args.model, args.name, args.version, tags=args.tag or (), source=args.source,
                        description=args.description or "", overwrite=args.overwrite)
    print(f"added {entry.summary()}")
    return 0


def _cmd_ls(args: argparse.Namespace) -> int:
    entries = _zoo(args).search(args.text, tag=args.tag, framework=args.framework, input=args.input,
                                status=args.status)
    for e in entries:
        print(e.summary())
    if not entries:
        print("(no entries)", file=sys.stderr)
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    entry = _zoo(args).get(*_split(args.ref))
    print(json.dumps(entry.manifest, indent=2, sort_keys=True))
    return 0


def _cmd_rm(args: argparse.Namespace) -> int:
    name, version = _split(args.ref)
    if version is None:
        raise ZooError(f"name the version to remove: onnxbridge zoo rm {name}:VERSION")
    _zoo(args).remove(name, version)
    print(f"removed {name}:{version}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    name, version = _split(args.ref) if args.ref else (None, None)
    results = _zoo(args).verify(name, version)
    bad = 0
    for ref, problems in results.items():
        if problems:
            bad += 1
            print(f"{ref}: FAILED")
            for p in problems:
                print(f"  {p}")
        else:
            print(f"{ref}: ok")
    return 1 if bad else 0


def _cmd_export(args: argparse.Namespace) -> int:
    out = _zoo(args).export(*_split(args.ref), args.dest)
    print(f"exported to {out}")
    return 0


def add_zoo_parser(add: Callable[[str, str, str], argparse.ArgumentParser]) -> None:
    """Add ``zoo`` and its subcommands to the main parser (``add`` is cli._parser's helper)."""
    zoo = add("zoo", "a local catalog of verified models: add, ls, show, rm, verify, export",
              "onnxbridge zoo --root models/ add churn churn.onnx --tag tabular")
    zoo.add_argument("--root", help=f"the zoo folder (default: ${ENV_ZOO}, else ./zoo)")
    sub = zoo.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND")
    sub.required = True

    add_p = sub.add_parser("add", help="store an .onnx file (or record an unconverted model)")
    add_p.add_argument("name")
    add_p.add_argument("model", nargs="?", help="the .onnx file (leave out with --reason/--fallback)")
    add_p.add_argument("--version", help="default: the next number")
    add_p.add_argument("--tag", action="append", help="a tag (repeatable)")
    add_p.add_argument("--source", help="the source model file to keep beside it (.skops, .pt2 ...)")
    add_p.add_argument("--description")
    add_p.add_argument("--reason", help="why the model could not be converted")
    add_p.add_argument("--fallback", help="what the team does instead")
    add_p.add_argument("--framework", help="the unconverted model's framework")
    add_p.add_argument("--overwrite", action="store_true", help="replace an existing version")
    add_p.set_defaults(func=_cmd_add)

    ls = sub.add_parser("ls", help="every entry, converted or not (filters narrow it)")
    ls.add_argument("text", nargs="?", help="in the name or description")
    ls.add_argument("--tag")
    ls.add_argument("--framework")
    ls.add_argument("--input", help="an input name or type, e.g. tensor(float)")
    ls.add_argument("--status", choices=["converted", "unconverted"])
    ls.set_defaults(func=_cmd_ls)

    show = sub.add_parser("show", help="an entry's manifest")
    show.add_argument("ref", help="NAME or NAME:VERSION")
    show.set_defaults(func=_cmd_show)

    rm = sub.add_parser("rm", help="remove one version")
    rm.add_argument("ref", help="NAME:VERSION")
    rm.set_defaults(func=_cmd_rm)

    verify = sub.add_parser("verify", help="check every file against the manifests (exit 1 if any differ)")
    verify.add_argument("ref", nargs="?", help="NAME or NAME:VERSION (default: all)")
    verify.set_defaults(func=_cmd_verify)

    export = sub.add_parser("export", help="copy a verified entry to a new folder")
    export.add_argument("ref", help="NAME or NAME:VERSION")
    export.add_argument("dest")
    export.set_defaults(func=_cmd_export)
