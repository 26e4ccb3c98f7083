"""How `--help` names values: click's plain words (TEXT, INTEGER, FLOAT, PATH; SCRIPT and [ARGS]... for
arguments; nothing for a flag), not the `<str>` and `<list[str]>` type hints newer typer prints."""
from __future__ import annotations

import typer
from typer import _click as click  # typer's own copy of click, whose classes its commands are made of
from typer.core import TyperArgument, TyperOption

PLAIN_TYPES = {"int": "INTEGER", "float": "FLOAT", "str": "TEXT", "path": "PATH", "bool": "BOOLEAN"}


def plain_word(typed: str) -> str:
    """'<int range>' -> INTEGER, '<list[str]>' -> TEXT (a repeatable option says so in its help), '<path>' -> PATH."""
    inner = typed.strip("<>")
    if inner.startswith("list[") and inner.endswith("]"):
        inner = inner[len("list["):-1]
    word = inner.split(" ")[0]
    return PLAIN_TYPES.get(word, word.upper())


class PlainOption(TyperOption):
    def display_type_rich(self, ctx) -> str:
        return "" if self.is_flag else plain_word(self.display_type(ctx))


class PlainArgument(TyperArgument):
    def display_type_rich(self, ctx) -> None:
        return None  # the argument's own name (SCRIPT, RUN) says what it is

    def _usage_display_name(self) -> str:
        name = self.make_metavar_name()
        return (name if self.required else f"[{name}]") + ("..." if self.nargs != 1 else "")

    def make_metavar_name(self) -> str:
        return self.metavar or self.name.upper()


def plain_command(app: typer.Typer):
    """The click command of `app`, every parameter of every command shown with plain metavars."""
    command = typer.main.get_command(app)
    plain(command)
    return command


def plain(command) -> None:
    help_option = command.get_help_option(click.Context(command))  # made now (and kept) so that it is plain too
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        if isinstance(param, TyperOption):
            param.__class__ = PlainOption
        elif isinstance(param, TyperArgument):
            param.metavar = param.metavar or param.name.upper()
            param.__class__ = PlainArgument
    for sub in getattr(command, "commands", {}).values():
        plain(sub)
