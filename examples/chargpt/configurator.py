"""Configuration the nanoGPT way, without exec: defaults < config file < --key=value.

A config file holds `name = literal` lines only; it is parsed with ast, never executed.
"""
import ast


class ConfigError(Exception):
    """A user's mistake in a config file or an option; the message is one line that names it."""


def read_config_file(path):
    try:
        with open(path, encoding='utf-8') as f:
            tree = ast.parse(f.read(), filename=path)
    except (OSError, SyntaxError, ValueError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    values = []
    for stmt in tree.body:
        target = stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else None
        try:  # a target other than a plain name has no .id; a value other than a literal fails literal_eval
            values.append((target.id, ast.literal_eval(stmt.value), f"{target.id} (at {path}:{stmt.lineno})"))
        except (AttributeError, ValueError, TypeError, SyntaxError, RecursionError):
            raise ConfigError(f"{path}:{stmt.lineno}: only `name = literal` lines are allowed") from None
    return values


def parse_config(argv, defaults):
    """The config from defaults, an optional config file (the one positional argument) and --key=value options.

    An option's value is a Python literal (--lr=3e-4, --compile=True) or, failing that, the raw text; a string
    option always takes the raw text (--out_dir=123 is the folder '123'). Each type must match its default's,
    except that an int may stand for a float.
    """
    positional = [a for a in argv if not a.startswith('--')]
    if len(positional) > 1:
        raise ConfigError(f"expected at most one config file, got {' '.join(positional)}")
    values = read_config_file(positional[0]) if positional else []
    for key, eq, text in (a[2:].partition('=') for a in argv if a.startswith('--')):
        if not eq:
            raise ConfigError(f"option --{key} needs a value: --{key}=VALUE")
        try:
            value = text if isinstance(defaults.get(key), str) else ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, RecursionError):
            value = text
        values.append((key, value, f"--{key}"))
    config = dict(defaults)
    for key, value, where in values:
        if key not in defaults:
            raise ConfigError(f"unknown option {where}; known: {', '.join(defaults)}")
        want = type(defaults[key])
        value = float(value) if want is float and type(value) is int else value
        if type(value) is not want:
            raise ConfigError(f"{where} expects {want.__name__}, got {value!r}")
        config[key] = value
    return config
