"""offload's own options written after SCRIPT (`offload run train.py --detach`): everything after SCRIPT is the
script's, byte for byte, so they still go to the script, but never silently: one line says so, with the command
that gives them to offload instead.
"""
from __future__ import annotations

import shlex

from offload.console import say


def own_options(command) -> dict:
    """Each option name of the (click) command (`--host`, `-H`...) -> whether it takes a value."""
    names = {}
    for param in command.params:
        if param.param_type_name == "option":
            for name in (*param.opts, *param.secondary_opts):
                names[name] = not param.is_flag and not param.count
    return names


def split_own_options(args: list, options: dict) -> tuple:
    """(offload's options found in args, with the values they take; the rest). After a `--` nothing is
    offload's: the user said so."""
    own, rest, index = [], [], 0
    while index < len(args):
        word = args[index]
        if word == "--":
            rest += args[index:]
            break
        name = word.split("=", 1)[0]
        if name in options:
            takes_value = options[name] and "=" not in word and index + 1 < len(args)
            own += args[index:index + 2] if takes_value else [word]
            index += 2 if takes_value else 1
            continue
        rest.append(word)
        index += 1
    return own, rest


def options_after_script_warning(command_line: list, script: str, args: list, options: dict) -> str | None:
    """The one line for offload's options among the script's arguments, or None when there are none."""
    own, rest = split_own_options(args, options)
    if not own:
        return None
    names = [word for word in own if word.split("=", 1)[0] in options]
    script_at = len(command_line) - len(args) - 1
    before = command_line[:script_at] if script_at >= 1 and command_line[script_at] == script else ["run"]
    fixed = shlex.join(["offload", *before, *own, script, *rest])
    return (f"{', '.join(names)} after {script} {'goes' if len(names) == 1 else 'go'} to the script, not to offload "
            f"(everything after SCRIPT is the script's); for offload, put {'it' if len(names) == 1 else 'them'} "
            f"before SCRIPT: {fixed}")


def warn_options_after_script(command, command_line: list, script: str | None, args: list) -> None:
    """Said for `command` (the click command that parsed command_line), when SCRIPT is given."""
    if script is None:
        return
    warning = options_after_script_warning(command_line, script, args, own_options(command))
    if warning:
        say(warning)
