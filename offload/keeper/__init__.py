"""The link keeper: a background process that keeps SSH connections and agents open between commands.

As ssh's ControlMaster/ControlPersist does for ssh: the first `offload run`, `logs`, `status`, `stop`, `fetch` or
`sync` starts it; every later one hands its command line to it over a unix socket in OFFLOAD_HOME and skips
Python's heavy imports, the TCP and SSH handshakes and the agent's start. Commands run one at a time, in this
process's main thread, through the same CLI code as in-process (command.py), with the client's own stdin,
stdout and stderr (passed over the socket), cwd, environment and umask; Ctrl-C at the client is raised in the
command where Python would raise it. A client that goes away (kill -9) aborts its command: its link is closed
at once, so the host drops a half-sent file exactly as when the client held the link itself. A client that
arrives while a command runs is told the keeper is busy and runs its command in its own process.

Only this user's processes reach it: its socket is in OFFLOAD_HOME or in a private directory of this
user's, and each client's uid is checked (SO_PEERCRED) before a byte of it is read. Its socket's path is
recorded in OFFLOAD_HOME (keeper.socket), so a client with another TMPDIR finds it at once.

It exits after OFFLOAD_KEEP_ALIVE seconds (default 600) without a command, on SIGTERM (`offload hosts
disconnect`; a command running then finishes first, while the next command already starts a new keeper), when
a client runs other code or another Python than it does (offload was upgraded), or when its socket, its record
or its pid file is no longer its own.
"""
