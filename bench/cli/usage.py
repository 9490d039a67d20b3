"""The command line's frame: plain help pages, and every usage error as one line.

typer (over the click it vendors) draws help pages and usage errors in rich
boxes, four or five lines for a typo, with type labels such as ``<list[str]>``.
gradsweep turns rich help off (it alone costs ~90 ms of imports per call),
labels values readably (``--workers INTEGER``, ``SPEC``), and runs the app with
``standalone_mode=False`` so :func:`error_line` can print each usage error as
one line: what is wrong, the value given, what is valid, and where help is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from typer._click.core import ParameterSource
from typer._click.exceptions import (
    BadParameter,
    MissingParameter,
    NoArgsIsHelpError,
    NoSuchOption,
    UsageError,
)
from typer.core import TyperCommand, TyperGroup

from gradsweep.errors import printable

#: Labels of option values by their Python type (``--workers INTEGER``).
TYPE_LABELS: dict[Any, str] = {str: "TEXT", int: "INTEGER", float: "NUMBER", Path: "PATH"}
#: What a value of each type must be, for error lines.
TYPE_EXPECTED: dict[Any, str] = {int: "an integer", float: "a number"}
#: Most close matches an error line suggests.
MAX_SUGGESTIONS = 3
#: The one-line error's prefix (the same as a :class:`~gradsweep.errors.BadInput` line's).
ERROR_PREFIX = "gradsweep: error: "
#: typer's prefix of a value's conversion error.
VALUE_ERROR = "Value error, "

__all__ = ["BadParameter", "Command", "Group", "NoArgsIsHelpError", "UsageError", "error_line",
           "value_label"]


def _annotation(param) -> Any:
    """The Python type of one value of ``param`` (the element type of a list)."""
    desc = param.type_descriptor
    annotation = desc.annotation
    args = getattr(annotation, "__args__", ())
    return args[0] if desc.is_list and args else annotation


def value_label(param) -> str:
    """How help shows a value of ``param``: its metavar, its choices ``a|b|c``, or its
    type in capitals (``TEXT``, ``INTEGER``, ``NUMBER``, ``PATH``)."""
    if param.metavar:
        return param.metavar
    desc = param.type_descriptor
    if desc.is_choice:
        return "|".join(str(c) for c in desc.choices)
    return TYPE_LABELS.get(_annotation(param), "VALUE")


def _keep_default(param) -> None:
    """Take ``param``'s default as declared when the command line leaves it unset.

    typer coerces every value, defaults included, through a pydantic adapter that
    it builds on first use (~70 ms of imports): a default is already of its
    declared type, so ``gradsweep list`` need not pay for it.
    """
    coerce = param.process_value

    def process_value(ctx, value):
        if param.required or ctx.get_parameter_source(param.name) is not ParameterSource.DEFAULT:
            return coerce(ctx, value)
        if value is None and (param.multiple or param.nargs == -1):
            value = ()
        return param.callback(ctx, param, value) if param.callback is not None else value

    param.process_value = process_value


def _prepare_params(command) -> None:
    """Readable metavars for options that take a value; defaults kept as declared."""
    for param in command.params:
        if param.param_type_name == "option" and not (param.is_flag or param.count):
            param.metavar = value_label(param)
        _keep_default(param)


def _argument_piece(param) -> str:
    """An argument in a usage line: ``SPEC``, ``[SWEEP]``, ``[SWEEPS]...``."""
    name = param.metavar or param.name.upper()
    piece = name if param.required else f"[{name}]"
    return piece + ("..." if param.nargs != 1 else "")


class _Readable:
    """Help layout shared by commands and groups: readable labels, plain usage pieces."""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None and self._help_kept is not option:  # made on first use
            _keep_default(option)
            self._help_kept = option
        return option

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        pieces += [_argument_piece(p) for p in self.get_params(ctx)
                   if p.param_type_name == "argument"]
        return pieces

    def format_options(self, ctx, formatter) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append((param.metavar or param.name.upper(), record[1]))
            else:
                options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


class Command(_Readable, TyperCommand):
    """A gradsweep command: plain help with readable value labels."""

    _help_kept = None

    def __init__(self, *args, **kwargs) -> None:
        kwargs["rich_markup_mode"] = None
        super().__init__(*args, **kwargs)
        _prepare_params(self)


class Group(_Readable, TyperGroup):
    """A group of commands: an unknown command is a usage error listing the commands."""

    _help_kept = None

    def __init__(self, *args, **kwargs) -> None:
        kwargs["rich_markup_mode"] = None
        super().__init__(*args, **kwargs)
        _prepare_params(self)

    def collect_usage_pieces(self, ctx) -> list[str]:
        return [*_Readable.collect_usage_pieces(self, ctx), self.subcommand_metavar]

    def format_options(self, ctx, formatter) -> None:
        _Readable.format_options(self, ctx, formatter)
        self.format_commands(ctx, formatter)

    def resolve_command(self, ctx, args: list[str]):
        name = args[0] if args else ""
        if (name and not name.startswith("-") and self.get_command(ctx, name) is None
                and not ctx.resilient_parsing):
            raise UsageError(unknown("command", name, list(self.commands)), ctx)
        return super().resolve_command(ctx, args)


def unknown(kind: str, given: str, valid: Sequence[str]) -> str:
    """``no command 'runn' (did you mean run? commands: list, run, ...)``."""
    from difflib import get_close_matches

    close = get_close_matches(given, valid, n=MAX_SUGGESTIONS)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return f"no {kind} {given!r} ({hint}{kind}s: {', '.join(valid)})"


def _given(param, argv: Sequence[str]) -> str | None:
    """The last value ``argv`` gave option ``param`` (``--opt V`` or ``--opt=V``)."""
    found = None
    names = [*param.opts, *param.secondary_opts]
    for i, token in enumerate(argv):
        if token in names and i + 1 < len(argv):
            found = argv[i + 1]
        for name in names:
            if name.startswith("--") and token.startswith(name + "="):
                found = token[len(name) + 1:]
    return found


def expected(param, ranges: dict | None = None) -> str:
    """What a value of ``param`` must be: ``one of a, b``, ``an integer in [1, 4096]``."""
    desc = param.type_descriptor
    if desc.is_choice:
        return "one of " + ", ".join(str(c) for c in desc.choices)
    annotation = _annotation(param)
    name = param.opts[0] if param.opts else ""
    if ranges and name in ranges:
        return ranges[name].describe(annotation is int)
    return TYPE_EXPECTED.get(annotation, value_label(param).lower())


def _param_name(param) -> str:
    if param.param_type_name == "argument":
        return param.metavar or param.name.upper()
    return "/".join(param.opts)


def describe(exc: UsageError, argv: Sequence[str], ranges: dict | None = None) -> str:
    """The message of one usage error, without prefix (see :func:`error_line`)."""
    param = getattr(exc, "param", None)
    if isinstance(exc, MissingParameter) and param is not None:
        value = f" {value_label(param)}" if param.param_type_name == "option" else ""
        return f"missing {param.param_type_name} {_param_name(param)}{value}"
    if isinstance(exc, BadParameter) and param is not None:
        value = _given(param, argv) if param.param_type_name == "option" else None
        got = f"got {value!r}" if value is not None else exc.message.removeprefix(VALUE_ERROR)
        return f"{_param_name(param)}: {got} (expected {expected(param, ranges)})"
    if isinstance(exc, NoSuchOption) and exc.ctx is not None:
        options = [o for p in exc.ctx.command.get_params(exc.ctx)
                   if p.param_type_name == "option" for o in (*p.opts, *p.secondary_opts)]
        return unknown("option", exc.option_name, options)
    message = exc.format_message()
    return message[:1].lower() + message[1:]


def error_line(exc: UsageError, argv: Sequence[str], ranges: dict | None = None) -> str:
    """One line for a usage error, e.g. ``gradsweep: error: --workers: got '0' (expected
    an integer in [1, 4096]); see 'gradsweep run --help'``; control characters escaped.

    Parameters
    ----------
    exc : UsageError
        What typer raised while parsing ``argv``.
    argv : sequence of str
        The command line after the program name (to quote the value given).
    ranges : dict, optional
        Option name -> :class:`~gradsweep.errors.Range` of numeric options.
    """
    where = exc.ctx.command_path if exc.ctx is not None else "gradsweep"
    text = " ".join(describe(exc, argv, ranges).split())
    return printable(f"{ERROR_PREFIX}{text}; see '{where} --help'")
