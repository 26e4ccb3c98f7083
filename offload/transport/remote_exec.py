"""One command on the host over its own SSH exec channel, as `ssh host CMD` runs it: the laptop's stdin goes
to it, its stdout and stderr come back on their own streams, byte for byte, and its exit status is ours.

The command line is handed to `sh -c`, whatever the user's login shell (fish, zsh) would make of it.
"""
from __future__ import annotations

import os
import select
import shlex
import threading

import paramiko

PIECE = 32 << 10
POLL_S = 0.05  # how often a quiet pump looks up: the command ending, stdin closing
NO_STATUS = 255  # as ssh: the command left no exit status (killed by a signal, or the link went)


def sh_line(script: str) -> str:
    return f"sh -c {shlex.quote(script)}"


def in_project(project_dir: str, python: str, command: str) -> str:
    """A shell script that runs command (shell text) in project_dir, with the host python's directory first on
    PATH (where `command -v` finds it; also in $OFFLOAD_PYDIR, unexported) and PYTHONUNBUFFERED set, as a run's
    job has."""
    return (f"cd {shlex.quote(project_dir)} || exit 127; "
            f"py=$(command -v {shlex.quote(python)}) && case $py in */*) OFFLOAD_PYDIR=${{py%/*}}; "
            f"PATH=\"$OFFLOAD_PYDIR:$PATH\";; esac; export PATH PYTHONUNBUFFERED=1; {command}")


# bash as a login shell would start (its profiles, which on Debian reset PATH and source ~/.bashrc), then the
# host's python first on PATH and the project's directory again, whatever those files did; it removes itself.
BASH_LOGIN_RC = """[ -r /etc/profile ] && . /etc/profile
for profile in ~/.bash_profile ~/.bash_login ~/.profile; do [ -r "$profile" ] && { . "$profile"; break; }; done
[ -n "$OFFLOAD_PYDIR" ] && PATH="$OFFLOAD_PYDIR:$PATH"
cd "$OFFLOAD_DIR" 2>/dev/null
rm -f "$OFFLOAD_RC"; unset OFFLOAD_PYDIR OFFLOAD_DIR OFFLOAD_RC profile"""


def login_shell(project_dir: str, python: str, exports: str = "") -> str:
    """A shell script that starts the user's login shell in project_dir with the host's python first on PATH
    (bash through BASH_LOGIN_RC, so its profiles cannot undo that; any other shell as `SHELL -l`)."""
    return in_project(project_dir, python,
                      f"OFFLOAD_DIR=$PWD; export OFFLOAD_PYDIR OFFLOAD_DIR; {exports}"
                      f"case ${{SHELL:-/bin/sh}} in */bash) OFFLOAD_RC=$(mktemp) && export OFFLOAD_RC && "
                      f"printf '%s\\n' {shlex.quote(BASH_LOGIN_RC)} > \"$OFFLOAD_RC\" && "
                      f"exec \"$SHELL\" --rcfile \"$OFFLOAD_RC\" -i;; esac; exec \"${{SHELL:-/bin/sh}}\" -l")


def run_on_host(client, command_line: str, stdin_fd: int | None, stdout_fd: int, stderr_fd: int) -> int:
    """Run command_line (a line for the login shell) on a new channel of client's connection; its exit status.
    stdin_fd None: the command reads an empty stdin."""
    channel = client.get_transport().open_session()
    try:
        channel.exec_command(command_line)
        stop = threading.Event()
        feeder = threading.Thread(target=feed, args=(channel, stdin_fd, stop), name="exec-stdin", daemon=True)
        if stdin_fd is None:
            channel.shutdown_write()
        else:
            feeder.start()
        try:
            drain(channel, stdout_fd, stderr_fd)
        finally:
            stop.set()
        if feeder.is_alive():
            feeder.join(timeout=1)
        status = channel.recv_exit_status()
    finally:
        channel.close()
    return NO_STATUS if status < 0 else status


def drain(channel, stdout_fd: int, stderr_fd: int) -> None:
    """Copy the channel's stdout and stderr to ours until both have ended."""
    while True:
        moved = False
        while channel.recv_ready():
            write_all(stdout_fd, channel.recv(PIECE))
            moved = True
        while channel.recv_stderr_ready():
            write_all(stderr_fd, channel.recv_stderr(PIECE))
            moved = True
        if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
            if channel.eof_received or channel.closed:
                return
        if not moved:
            select.select([channel], [], [], POLL_S)


def feed(channel, stdin_fd: int, stop: threading.Event) -> None:
    """Our stdin to the command until it ends (then EOF there), or the command does. Polled, so that no read
    of the terminal outlives the command and takes what the user types next."""
    try:
        while not stop.is_set():
            ready, _, _ = select.select([stdin_fd], [], [], POLL_S)
            if not ready:
                continue
            data = os.read(stdin_fd, PIECE)
            if not data:
                break
            channel.sendall(data)
        channel.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException):  # the command ended and its channel with it: what is left is not for it
        pass


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def run_in_terminal(client, command_line: str, tty_fd: int, out_fd: int, term: str) -> int:
    """command_line on a pty of the host's, sized as our terminal and resized with it, our terminal raw meanwhile
    (Ctrl-C, Ctrl-D and the arrows are the host's); its exit status. The size is polled, not signalled: inside
    the link keeper a SIGWINCH goes to the keeper's client, never here."""
    import termios  # lazy: POSIX terminals only, and only `offload shell` needs them
    import tty  # lazy: as termios

    size = os.get_terminal_size(tty_fd)
    channel = client.get_transport().open_session()
    try:
        channel.get_pty(term=term, width=size.columns, height=size.lines)
        channel.exec_command(command_line)
        saved = termios.tcgetattr(tty_fd)
        tty.setraw(tty_fd)
        try:
            relay_terminal(channel, tty_fd, out_fd, size)
        finally:
            termios.tcsetattr(tty_fd, termios.TCSADRAIN, saved)
        status = channel.recv_exit_status()
    finally:
        channel.close()
    return NO_STATUS if status < 0 else status


def relay_terminal(channel, tty_fd: int, out_fd: int, size) -> None:
    """Keys to the host, the host's screen to ours, until the shell has ended."""
    typing = True
    while True:
        watched = [channel, tty_fd] if typing else [channel]
        ready, _, _ = select.select(watched, [], [], POLL_S)
        if channel in ready or channel.recv_ready():
            data = channel.recv(PIECE)
            if not data:
                return
            write_all(out_fd, data)
        if tty_fd in ready:
            keys = os.read(tty_fd, PIECE)
            if keys:
                channel.sendall(keys)
            else:  # our terminal went away: the host's shell hears EOF
                typing = False
                channel.shutdown_write()
        now = os.get_terminal_size(tty_fd)
        if now != size:
            size = now
            channel.resize_pty(width=size.columns, height=size.lines)
        if channel.exit_status_ready() and not channel.recv_ready():
            return
