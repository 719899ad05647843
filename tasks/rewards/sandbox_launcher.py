"""The sandbox's launcher: run by ``tasks/rewards/sandbox.py`` inside bubblewrap as ``python -I -S -B
-c <this file's text> <cfg_fd> <result_fd>``, never imported. Standard library only, and old plain
syntax: it runs under the system interpreter, whatever its version.

It sets the rlimits (hard = soft, so they cannot be raised), then runs the program and, for assert
tests, the steps the parent planned (``tasks.rewards.asserts``): statements to ``exec`` and holes to
``eval``, each in the program's namespace. Every result goes to the result fd as one line ``<step>
<repr>`` (``<step>`` alone for an exec step; nothing for a step that raised). Values are written
only if they are built-in values all the way down, through the built-in types' own methods (a
subclass's ``__eq__`` or ``__repr__`` never runs; other objects are refused); the parent reads them
back with ``ast.literal_eval``. Nothing here is a secret: the expected values never come into the
sandbox, so a program that tampers with this launcher can only report values it made itself.
"""

# ruff: noqa: E401, I001, UP031
import marshal, os, resource, sys

_cfg_fd, _res_fd = int(sys.argv[1]), int(sys.argv[2])
with os.fdopen(_cfg_fd, "rb") as _f:
    _cfg = marshal.loads(_f.read())
for _name, _value in _cfg["rlimits"].items():
    # soft = hard: the program is the pid namespace's init (bwrap --as-pid-1), which ignores a
    # SIGXCPU it has no handler for, so the CPU limit is the kernel's SIGKILL at the hard limit
    resource.setrlimit(getattr(resource, _name), (_value, _value))
os.umask(0o077)

# Values of built-in types and their subclasses (Counter, defaultdict, namedtuple, IntEnum...) are
# written through the *base* type's own methods, so no method the program defined ever runs: the
# parent compares plain values, with Python's equality for those types.
_SCALARS = (
    (bool, bool.__repr__),
    (int, int.__repr__),
    (float, float.__repr__),
    (complex, complex.__repr__),
    (str, str.__repr__),
    (bytes, bytes.__repr__),
    (type(None), repr),
)
_INF = float("inf")


def _encode(v, depth=0, isinstance=isinstance, len=len, list=list, sorted=sorted):
    if depth > 50:
        raise ValueError("too deep")
    for base, rep in _SCALARS:
        if isinstance(v, base):
            if base is float and (float.__ne__(v, v) or float.__abs__(v) == _INF):
                raise ValueError("not a literal")
            return rep(v)
    if isinstance(v, (list, tuple)):
        items = list(list.__iter__(v) if isinstance(v, list) else tuple.__iter__(v))
        inner = ", ".join([_encode(x, depth + 1) for x in items])
        if isinstance(v, list):
            return "[%s]" % inner
        return "(%s,)" % inner if len(items) == 1 else "(%s)" % inner
    if isinstance(v, (set, frozenset)):
        items = list(set.__iter__(v) if isinstance(v, set) else frozenset.__iter__(v))
        body = "{%s}" % ", ".join([_encode(x, depth + 1) for x in items]) if items else ""
        return (body or "set()") if isinstance(v, set) else "frozenset(%s)" % body
    if isinstance(v, dict):
        pairs = list(dict.items(v))
        return "{%s}" % ", ".join(
            ["%s: %s" % (_encode(k, depth + 1), _encode(x, depth + 1)) for k, x in pairs]
        )
    raise ValueError("not a plain value")


def _main(
    src,
    steps,
    fd,
    exec=exec,
    eval=eval,
    compile=compile,
    enumerate=enumerate,
    BaseException=BaseException,
    exit=os._exit,
    write=os.write,
    encode=_encode,
):
    import types

    mod = types.ModuleType("__main__")
    mod.__file__ = "solution.py"
    sys.modules["__main__"] = mod
    sys.argv = ["solution.py"]
    code = compile(src, "solution.py", "exec")
    if steps is None:
        exec(code, mod.__dict__)
        return
    try:
        exec(code, mod.__dict__)
    except BaseException:
        import traceback

        traceback.print_exc()
        exit(1)
    for i, (kind, text) in enumerate(steps):
        try:
            if kind == "exec":
                exec(compile(text, "test_step_%d" % i, "exec"), mod.__dict__)
                line = "%d\n" % i
            else:
                line = "%d %s\n" % (i, encode(eval(compile(text, "test_step_%d" % i, "eval"), mod.__dict__)))
        except BaseException:
            continue
        if "\n" in line[:-1]:  # str/bytes reprs never hold a raw newline; refuse rather than split
            continue
        data = line.encode("utf-8", "backslashreplace")
        while data:
            data = data[write(fd, data) :]
    try:
        sys.stdout.flush()
    finally:
        exit(0)


os.write(_res_fd, b"ready\n")
_main(_cfg.pop("source"), _cfg.pop("steps"), _res_fd)
del _cfg
