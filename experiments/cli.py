"""One command-line front for every ``python -m experiments.<name>`` (issue 22).

Flags are ml_collections' ``--config path.py:<preset>`` (with ``--config.a.b=value``
overrides) plus ``--workdir`` and ``--overwrite``. Before absl parses anything, the command line
is checked against the preset itself, so a mistake costs one or two lines and exit code 2, never
a traceback or a compile:

* ``--help``: the experiment's description, its presets and the config's top-level fields (exit 0);
* ``--config path.py`` without ``:<preset>``: an error listing the presets;
* an unknown field: the valid fields of its section, with a "did you mean";
* :class:`harness.ConfigError` (bad values, caught by the trainers' validators before they
  build anything) and :class:`harness.WorkdirError`: their one-line message.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags
from ml_collections import config_flags

import harness
from harness import parallel

EXIT_USAGE = 2
FLAGS = flags.FLAGS


class UsageError(Exception):
    """A command-line mistake; its message is printed alone."""


def _load_config_module(path: str):
    if not os.path.exists(path):
        raise UsageError(f"--config {path}: no such file")
    spec = importlib.util.spec_from_file_location(f"_cli_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _flag_value(argv: Sequence[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return None


def _overrides(argv: Sequence[str]) -> list[str]:
    """Dotted field paths of every ``--config.<path>[=value]`` argument."""
    return [a[len("--config.") :].split("=", 1)[0] for a in argv if a.startswith("--config.")]


def _fields(node: Any) -> list[str]:
    return sorted(node.keys()) if hasattr(node, "keys") else []


def check_override(config: Any, path: str) -> None:
    """Raises :class:`UsageError` naming the valid fields of the section ``path`` falls in."""
    node, walked = config, []
    for part in path.split("."):
        fields = _fields(node)
        if part not in fields:
            section = "config." + ".".join(walked) if walked else "config"
            close = difflib.get_close_matches(part, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(
                f"unknown field config.{path}{hint}; {section} has: {', '.join(fields)}"
            )
        node, walked = node[part], [*walked, part]


def describe(doc: str, module: Any, default_preset: str | None) -> str:
    """The ``--help`` text: description, presets, and the top-level fields of one preset."""
    presets = list(getattr(module, "PRESETS", {}))
    preset = default_preset if default_preset in presets else (presets[0] if presets else None)
    config = module.get_config(preset)
    lines = [doc.strip(), "", f"presets: {', '.join(presets)}"]
    lines.append(f"top-level fields (preset {preset}): {', '.join(_fields(config))}")
    lines.append("flags: --config PATH.py:<preset> [--config.<field>=<value> ...]")
    return "\n".join(lines)


def precheck(argv: Sequence[str], doc: str, default_config: str | None) -> None:
    """Checks the command line against the chosen preset before absl sees it.

    Prints ``--help`` and exits 0; raises :class:`UsageError` on a missing preset or an unknown
    field.
    """
    spec = _flag_value(argv, "config") or default_config
    if spec is None:
        raise UsageError("--config PATH.py:<preset> is required")
    path, _, preset = spec.partition(":")
    module = _load_config_module(path)
    presets = list(getattr(module, "PRESETS", {}))
    if "--help" in argv or "-h" in argv:
        print(describe(doc, module, preset or None))
        sys.exit(0)
    if presets and not preset:
        raise UsageError(
            f"--config {path} needs a preset, as {path}:<preset>; presets: {', '.join(presets)}"
        )
    try:
        config = module.get_config(preset or None)
    except harness.ConfigError as err:
        raise UsageError(str(err)) from None
    for override in _overrides(argv):
        check_override(config, override)


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def define_flags(
    config_help: str, default_config: str | None = None, workdir_help: str = ""
) -> None:
    """``--config`` (locked ConfigDict from ``path.py:<preset>``), ``--workdir``, ``--overwrite``."""
    config_flags.DEFINE_config_file("config", default_config, config_help, lock_config=True)
    flags.DEFINE_string("workdir", None, workdir_help or "Output directory (reused to resume).")
    flags.DEFINE_bool(
        "overwrite", False, "Move a different run already in --workdir aside (never deletes it)."
    )


def run(
    doc: str,
    main: Callable[[Any, str], Any],
    *,
    default_config: str | None = None,
    claim: bool = True,
    resolve: Callable[[Any], Any] | None = None,
    argv: Sequence[str] | None = None,
) -> None:
    """Parses the command line and calls ``main(config, workdir)`` with clean errors.

    ``claim``: the command writes a run into ``--workdir`` (checked before anything is built by
    :func:`harness.claim_workdir`); commands that read a finished run (the wind tunnel) pass
    False. ``resolve``: the trainer's own config completion (e.g. the fields an algorithm pins,
    :func:`adarl.train.resolve_config`), applied before the claim so that the workdir records
    the config the trainer will run and claims again without a mismatch.
    """
    argv = list(sys.argv if argv is None else argv)
    try:
        precheck(argv[1:], doc, default_config)
    except UsageError as err:
        _fail(str(err))

    def parse(args: list[str]) -> list[str]:
        try:
            return FLAGS(args)
        except flags.Error as err:
            _fail(str(err).splitlines()[0])
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            _fail(f"bad --config override: {err}")

    def absl_main(rest: list[str]) -> None:
        if len(rest) > 1:
            _fail(f"unexpected arguments: {' '.join(rest[1:])}")
        if not FLAGS.workdir:
            _fail("--workdir is required")
        try:
            if "parallel" in FLAGS.config:
                # Joins the multi-process runtime before anything touches a device, then
                # checks the mesh against the devices that exist (issue 23).
                parallel.initialize(FLAGS.config)
                parallel.mesh_shape(FLAGS.config)
            config = FLAGS.config if resolve is None else resolve(FLAGS.config)
            if claim:
                harness.claim_workdir(config, FLAGS.workdir, overwrite=FLAGS.overwrite)
            main(config, FLAGS.workdir)
        except harness.ConfigError as err:
            _fail(str(err))
        except (harness.CheckpointError, harness.NonFiniteError) as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)

    app.run(absl_main, argv=argv, flags_parser=parse)
