"""Hypothesis strategies for what a hostile or broken laptop sends an agent (see sandboxed_agent.py).

Requests of every kind the agent serves, most as the laptop sends them and some with fields dropped or of the
wrong type; hostile paths (`..`, absolute, `.offload/`, NUL, very long, through links out of the project or
into its records); puts whose blobs are shorter or longer than announced; lines of another protocol version,
bad JSON, noise, a truncated last line.

Where the laptop names a directory on the host by an absolute path (project_dir, run_dir, cwd, lock) the agent
serves it by design, so those fields are the sandbox's own directories, relative paths (which it must refuse:
they would be taken from its home) or values of the wrong type. What the agent must fence, the project's name
and every path inside a project, is fuzzed freely. `facts` and a real `bench` are
left out: each imports torch (seconds), and neither reads a path inside a project.
"""

from __future__ import annotations

from hypothesis import strategies as st

from sandboxed_agent import OTHER_PROJECT, PREPARE, PROJECT, WELL_FRAMED_BYTES, Message, Nested, Raw, Stream

from remote_agent import protocol

junk = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.text(max_size=8),
    st.sampled_from([float("nan"), float("inf"), -1, 0, 10 ** 30, "", [], {}, [1, "a"], {"a": 1}]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def weighted(*choices):
    """One of the strategies, each (weight, strategy) drawn in proportion to its weight."""
    return st.sampled_from([strategy for weight, strategy in choices for _ in range(weight)]).flatmap(lambda s: s)


HOSTILE_PATHS = [
    "../escaped.txt", "../../outside/sentinel.txt", "../neighbour.txt", "{outside}/sentinel.txt", "{outside}/new.txt",
    "/escaped.txt", "escape/sentinel.txt", "escape/new.txt", "escape/sub/deep.txt", "escape_file", "up/neighbour.txt",
    "up/escaped.txt", "up/" + PROJECT + "/via-up.txt", ".offload/synced.json", ".offload", ".offload/x/y", "sub/../..",
    "a/../../escaped.txt", "./a", "a//b", "a/", "~/x", "x\0y", "", ".", "..", "n" * 300, "d/" * 600 + "deep",
]
GOOD_PATHS = ["new.txt", "sub/new.txt", "a/b/c.txt", "日本/ünï.txt", "kept.txt", "sub", "a", "a/b", "link",
              "line\nbreak.txt", "missing/line\nbreak.txt"]
path_part = st.sampled_from(["a", "b", "..", ".", "", ".offload", "escape", "escape_file", "up", "sub", "kept.txt",
                             "n\0ul", "x" * 300, " "])
relpath = weighted((3, st.sampled_from(HOSTILE_PATHS)), (3, st.sampled_from(GOOD_PATHS)),
                   (1, st.lists(path_part, min_size=1, max_size=4).map("/".join)), (1, st.text(max_size=12)))
relpaths = st.lists(relpath, max_size=4)
# An apply's first refused name fails it (what came before it stays written), so an entry names what may be
# written, what only the fence (links out of the project) stops, or what is refused by its name.
FENCED_PATHS = ["escape/new.txt", "escape/sentinel.txt", "escape/sub/deep.txt", "escape_file", "up/neighbour.txt",
                "up/escaped.txt", "up/" + PROJECT + "/via-up.txt", "link/new.txt", "link/sentinel.txt",
                "records/synced.json", "records/planted.txt", "records/tree.lock", "records/stages/x",
                "itself/.offload/planted.txt", "itself/.offload", "itself/records/planted.txt", "link/planted.txt"]
entry_path = weighted((3, st.sampled_from(GOOD_PATHS)), (3, st.sampled_from(FENCED_PATHS)),
                      (2, st.sampled_from(HOSTILE_PATHS)), (1, relpath))

# Where the laptop names a directory: the sandbox's, or a relative path (a value of the wrong type: `mutated`).
project_dir = st.sampled_from(["{project_dir}"] * 4 + ["{work}/" + OTHER_PROJECT, "", "relative/dir"])
run_dir = st.sampled_from(["{project_dir}/.offload/runs/r1"] * 2 + ["{project_dir}/.offload/runs/r2"] * 2 +
                          ["{project_dir}", "{project_dir}/.offload/runs/none", "", "run"])
project_name = weighted((2, st.just(PROJECT)), (1, st.just(OTHER_PROJECT)), (1, st.text(max_size=10)),
                        (6, st.sampled_from(["../escaped", "..", ".", "", "a/b", "{outside}/abs-project", "/",
                                             "up/" + PROJECT, "x\0y", "n" * 300, "escape/" + PROJECT])))


@st.composite
def mutated(draw, fields: dict) -> dict:
    """Mostly the message as it is; else one or two of its fields (never its type) dropped or swapped for a
    value of the wrong type, or one field more."""
    fields = dict(fields)
    keys = sorted(key for key in fields if key != "t")
    if not keys or draw(st.integers(0, 3)):
        return fields
    for key in draw(st.lists(st.sampled_from(keys), min_size=1, max_size=2, unique=True)):
        if draw(st.booleans()):
            del fields[key]
        else:
            fields[key] = draw(junk)
    if draw(st.integers(0, 3)) == 0:
        fields[draw(st.sampled_from(["size", "path", "project_dir", "x"]))] = draw(junk)
    return fields


def plain_request(kind: str, **field_strategies):
    return st.fixed_dictionaries({"t": st.just(kind), **field_strategies}).flatmap(mutated).map(Message)


@st.composite
def prepare_request(draw) -> Message:
    """A prepare of any project name. The workdir is the sandbox's or not a string: a relative one is the
    user's own setting, under the host's home (as in a shell there)."""
    fields = draw(mutated({"t": "prepare", "project": draw(project_name), "for_run": draw(st.booleans()),
                           "manifest": draw(st.booleans())}))
    fields["workdir"] = draw(st.sampled_from(["{work}"] * 6 + [None, 5, [], {}]))
    return Message(fields)


NOT_EXECUTABLE = {  # what no supervisor can start: answered at once, refused or as a failed start
    "argv": [[], [""], "{python}", [1], ["a\0b"], None],
    "env": [{"A": 1}, {"A=B": "c"}, {"": "x"}, {"A": "b\0"}, []],
    "lock": ["", 0],
    "cwd": ["{work}/missing", None, ""],
    "tree": [0, "", "stage", [None]],  # a well-formed tree is left out: see start_request
}


@st.composite
def start_request(draw) -> Message:
    """A start of a harmless job (`python -c pass`) in the project, or one with one field no supervisor can
    start from, or with fields dropped. A well-formed `tree` is left out: the job then waits for the project's
    tree, by design, while this agent's sync holds it."""
    fields = {"t": "start", "run_dir": draw(run_dir), "cwd": "{project_dir}", "argv": ["{python}", "-c", "pass"],
              "env": draw(st.sampled_from([{}, {"A": "b"}])),
              "lock": draw(st.sampled_from([None, "{project_dir}/.offload/gpu.lock"])), "keep_tree": draw(st.booleans())}
    broken = draw(st.sampled_from([None, None, None, "mutated", *NOT_EXECUTABLE]))
    if broken == "mutated":
        fields = draw(mutated(fields))
    elif broken is not None:
        fields[broken] = draw(st.sampled_from(NOT_EXECUTABLE[broken]))
    return Message(fields)


PLAIN_REQUESTS = [
    plain_request("ping"), plain_request("device"), plain_request("free_port"), plain_request("sync_done"),
    plain_request("release_tree", project_dir=project_dir),
    prepare_request(),
    plain_request("blocks", project_dir=project_dir, paths=relpaths),
    start_request(), start_request(),
    plain_request("follow", run_dir=run_dir, offset=st.integers(-5, 1 << 20), metrics_offset=st.integers(-5, 100),
                  until_now=st.booleans()),
    plain_request("status", run_dir=run_dir), plain_request("stop", run_dir=run_dir, grace=st.floats(0, 1)),
    plain_request("setup_state", project_dir=project_dir,
                  state=st.sampled_from([None, {"key": "k"}, {"key": 1}, "k"])),
    plain_request("list_files", project_dir=project_dir, patterns=relpaths, run_dir=st.one_of(run_dir, st.none()),
                  current=st.booleans()),
    plain_request("read_file", project_dir=project_dir, path=relpath, offset=st.integers(-5, 100),
                  end=st.one_of(st.none(), st.integers(-5, 100))),
    st.sampled_from([None, "soon", float("nan"), float("inf"), -1, 0, 10 ** 9, True, [10], {}]).map(
        lambda seconds: Message({"t": "bench", "seconds": seconds})),  # never a real one: see the docstring
    st.builds(lambda kind, rest: Message({"t": kind, **rest}),
              st.one_of(st.text(max_size=10), junk), st.dictionaries(st.text(max_size=4), junk, max_size=3)),
]


@st.composite
def file_entry(draw) -> Message:
    """A put, patch or digests entry of an apply, its blob as long as announced, or shorter, or longer."""
    kind = draw(st.sampled_from(["put", "put", "put", "put", "patch", "digests"]))
    data = draw(st.binary(max_size=64))
    blob = data + draw(st.sampled_from([b"\1"] * 4 + [b"\0", b""]))
    fields = {"t": kind, "path": draw(entry_path), "mode": draw(st.sampled_from([0o644, 0o755, 0o7777])),
              "mtime_ns": 1_700_000_000_000_000_000, "size": len(blob)}
    if kind == "put":
        fields["kind"] = draw(st.sampled_from(["file"] * 4 + ["link", "dir", "fifo"]))
        if fields["kind"] == "link":
            fields["target"] = draw(st.sampled_from(["{outside}", "{outside}/sentinel.txt", "../../outside", "sub",
                                                      ".offload", "..", "kept.txt"]))
        if fields["kind"] != "file":
            fields["size"], blob = 0, b""
    else:
        fields.update(file_size=draw(st.sampled_from([0, len(data), 1 << 20, 10 ** 15])),
                      ranges=draw(st.sampled_from([[], [[0, 1]], [[-1, 1]], [[0, 10 ** 12]], "x"])))
    fields = draw(mutated(fields))
    announced = fields.get("size")
    if isinstance(announced, int) and not isinstance(announced, bool) and 0 <= announced < 1 << 16:
        blob = draw(st.sampled_from([blob] * 8 + [blob[:announced // 2], (blob + bytes(announced))[:announced],
                                                  blob + b"\n@offload/1 {\"t\":\"end\"}\n", blob[:-1]]))
    return Message(fields, blob=blob)


@st.composite
def apply_request(draw) -> list:
    """An apply, then its entries (noise among them), then usually `end`."""
    entry_paths = weighted((2, st.just([])), (1, st.lists(entry_path, max_size=3)))
    fields = draw(mutated({"t": "apply", "project_dir": draw(project_dir), "delete": draw(entry_paths),
                           "forget": draw(entry_paths), "adopt": draw(entry_paths), "paths": draw(entry_paths),
                           "record": draw(st.booleans()), "force": draw(st.booleans())}))
    pieces = [Message(fields)]
    for _ in range(draw(st.integers(0, 5))):
        pieces.append(draw(weighted((6, file_entry()), (1, noise_line()), (1, broken_line()),
                                    (1, plain_request("ping")))))
    if draw(st.integers(0, 7)):
        pieces.append(Message({"t": "end"}))
    return pieces


def noise_line():
    """What a .bashrc or a broken laptop might put between messages: never a message of this protocol."""
    return st.one_of(
        st.binary(max_size=40).map(lambda data: Raw(data.replace(b"@", b"") + b"\n")),
        st.sampled_from([Raw(b"\n"), Raw(b"@offload/2 {\"t\":\"ping\"}\n"), Raw(b"@offload/0 {\"t\":\"ping\"}\n"),
                         Raw(b"@offload/1{\"t\":\"ping\"}\n"), Raw(b"offload/1 {\"t\":\"ping\"}\n")]),
    )


def broken_line():
    """A line that claims to be a message of this protocol and is not one."""
    return weighted(
        (1, st.binary(max_size=40).map(lambda data: Raw(protocol.PREFIX + data.replace(b"\n", b"") + b"\n"))),
        (2, st.sampled_from([3, 5_000, 100_000]).map(Nested)),
        (3, st.sampled_from([Raw(protocol.PREFIX + b"[1,2]\n"), Raw(protocol.PREFIX + b"{\"no\":\"type\"}\n"),
                         Raw(protocol.PREFIX + b"{\"t\":\"ping\"\n"), Raw(protocol.PREFIX + b"\"ping\"\n"),
                         Raw(protocol.PREFIX + b"9" * 5000 + b"\n"),
                         Raw(protocol.PREFIX + b"{\"t\":\"ping\",\"x\":NaN}\n"),
                         Raw(b"noise" + protocol.PREFIX + b"{\"t\":\"ping\"}\n")])),
    )


@st.composite
def streams(draw) -> Stream:
    pieces = draw(weighted((1, st.just([])), (1, prepare_request().map(lambda m: [m])),
                           (3, st.just([PREPARE]))))  # most begin as a sync does, so the applies that follow write
    for _ in range(draw(st.integers(1, 6))):
        pieces.extend(draw(weighted((3, apply_request()), (4, st.one_of(*PLAIN_REQUESTS).map(lambda m: [m])),
                                    (1, noise_line().map(lambda r: [r])), (1, broken_line().map(lambda r: [r])))))
    pieces += draw(weighted((3, st.just([])), (2, broken_line().map(lambda r: [r])),  # it ends the session anyway
                            (1, st.sampled_from([protocol.PREFIX + b"{\"t\":\"pi", protocol.PREFIX, b"noise"]).map(
                                lambda cut: [Raw(cut)]))))  # the last line cut short
    return Stream(pieces)


@st.composite
def well_framed_put(draw) -> Message:
    """A put that is a message as the laptop sends them, of any path: a file, a link (out of the project too),
    or a directory."""
    kind, path = draw(st.sampled_from(["file", "file", "link", "dir"])), draw(entry_path)
    fields = {"t": "put", "path": path, "kind": kind, "mode": 0o644, "mtime_ns": 1_700_000_000_000_000_000, "size": 0}
    if kind == "link":
        fields["target"] = draw(st.sampled_from(["{outside}", "{outside}/sentinel.txt", "../..", "..", ".offload",
                                                  "."]))
    blob = b""
    if kind == "file":
        blob = WELL_FRAMED_BYTES + b"\1"
        fields["size"] = len(blob)
    return Message(fields, blob=blob)


@st.composite
def hostile_path_applies(draw) -> Stream:
    """A sync whose every apply is well framed, each with one hostile thing, so that the refusal of one never
    hides the next: a put of any path, or the adoption (then deletion) of a path that is not the project's."""
    project = draw(weighted((1, st.just(PROJECT)), (1, project_name)))  # the project's name is a path too
    pieces = [Message({"t": "prepare", "workdir": "{work}", "project": project})]
    for _ in range(draw(st.integers(1, 8))):
        fields = {"t": "apply", "project_dir": "{project_dir}", "delete": [], "forget": [], "adopt": [],
                  "force": draw(st.booleans())}
        entries = []
        if draw(st.booleans()):
            entries.append(draw(well_framed_put()))
        else:
            path = draw(relpath)
            fields.update(adopt=[path], delete=[path])
        pieces += [Message(fields), *entries, Message({"t": "end"})]
    return Stream(pieces)


@st.composite
def request_runs(draw) -> Stream:
    """Requests of every kind, one after another with nothing between them to end the session early."""
    pieces = draw(weighted((1, st.just([])), (3, st.just([PREPARE]))))
    return Stream(pieces + draw(st.lists(st.one_of(*PLAIN_REQUESTS), min_size=4, max_size=12)))
