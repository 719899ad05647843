"""The sandbox's launcher: run by ``tasks/rewards/sandbox.py`` as ``python -I -S -B -c <this file's
text> <cfg_fd> <result_fd>``, never imported. Standard library only; it isolates itself (namespaces,
uid drop, rlimits), then runs the untrusted program and reports assert verdicts on the result fd.
It also runs under the system interpreter (whatever its version), so it keeps to old, plain syntax.
"""
# ruff: noqa: E401, I001, UP031
import marshal, os, resource, sys
_cfg_fd, _res_fd = int(sys.argv[1]), int(sys.argv[2])
with os.fdopen(_cfg_fd, "rb") as _f:
    _cfg = marshal.loads(_f.read())

def _fail(msg):
    os.write(2, ("sandbox setup failed: " + msg + "\n").encode())
    os._exit(125)

def _unshare(net, mnt, userns, workdir):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    flags = (0x40000000 if net else 0) | (0x20000 if mnt else 0) | (0x10000000 if userns else 0)
    if libc.unshare(flags) != 0:
        _fail("unshare: errno %d" % ctypes.get_errno())
    if not mnt:
        return
    ms_rdonly, ms_nosuid, ms_nodev, ms_noexec, ms_remount, ms_bind, ms_rec, ms_private = (
        1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
    if libc.mount(b"none", b"/", None, ms_rec | ms_private, None) != 0:
        _fail("make mounts private: errno %d" % ctypes.get_errno())
    w = workdir.encode()
    if libc.mount(w, w, None, ms_bind, None) != 0:
        _fail("bind workdir: errno %d" % ctypes.get_errno())
    with open("/proc/self/mountinfo") as f:
        lines = f.read().splitlines()
    for line in lines:
        parts = line.split()
        point = parts[4].encode().decode("unicode_escape")  # \040 -> space
        if point == workdir or point.split("/")[1:2] in (["proc"], ["sys"]) or (
                point.startswith("/dev") and not point.startswith("/dev/shm")):
            continue
        opts = parts[5].split(",")
        flags = ms_remount | ms_bind | ms_rdonly
        flags |= (ms_nosuid if "nosuid" in opts else 0) | (ms_nodev if "nodev" in opts else 0)
        flags |= ms_noexec if "noexec" in opts else 0
        libc.mount(None, point.encode(), None, flags, None)  # best effort per mount
    if libc.mount(None, b"/", None, ms_remount | ms_bind | ms_rdonly, None) != 0:
        _fail("read-only root: errno %d" % ctypes.get_errno())
    os.chdir(workdir)  # the old cwd still points into the read-only root mount, not the bind

if _cfg["netns"] or _cfg["mountns"]:
    _unshare(_cfg["netns"], _cfg["mountns"], _cfg["userns"], _cfg["workdir"])
if _cfg["uid"] is not None:
    try:
        os.setgroups([])
        os.setgid(_cfg["gid"])
        os.setuid(_cfg["uid"])
    except OSError as e:
        _fail("drop privileges: %s" % e)
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        _fail("privileges were not dropped")
for _name, _value in _cfg["rlimits"].items():
    _hard = _value + 1 if _name == "RLIMIT_CPU" else _value
    resource.setrlimit(getattr(resource, _name), (_value, _hard))
os.umask(0o077)
if not _cfg["netns"]:
    import _socket, socket
    def _denied(*a, **k):
        raise PermissionError("network access is disabled in this sandbox")
    for _m in (_socket, socket):
        for _n in ("socket", "SocketType", "socketpair", "fromfd", "create_connection",
                   "create_server", "getaddrinfo", "gethostbyname", "gethostbyname_ex"):
            if hasattr(_m, _n):
                setattr(_m, _n, _denied)

# Everything the verdict path calls is bound here, before the program runs, so a program that
# replaces builtins.exec, os.write or os._exit cannot turn a failure into a pass; trace and
# profile hooks (which can rewrite a frame's locals) are refused through the public API.
def _main(src, tests, report, exec=exec, compile=compile, enumerate=enumerate,
          BaseException=BaseException, exit=os._exit):
    import types
    mod = types.ModuleType("__main__")
    mod.__file__ = "solution.py"
    if tests is not None:
        def _no_hooks(*a, **k):
            raise RuntimeError("trace and profile hooks are disabled in this sandbox")
        sys.settrace = sys.setprofile = _no_hooks
    sys.modules["__main__"] = mod
    sys.argv = ["solution.py"]
    code = compile(src, "solution.py", "exec")
    if tests is None:
        exec(code, mod.__dict__)
        return
    try:
        exec(code, mod.__dict__)
    except BaseException:
        import traceback
        traceback.print_exc()
        exit(1)
    for i, test in enumerate(tests):
        try:
            exec(compile(test, "test_%d" % i, "exec"), mod.__dict__)
        except BaseException:
            report(i, 0)
        else:
            report(i, 1)
    try:
        sys.stdout.flush()
    finally:
        exit(0)

def _reporter(fd, nonce, write=os.write, encode=str.encode):
    def report(i, ok):
        write(fd, encode("%s %d %d\n" % (nonce, i, ok)))
    return report

os.write(_res_fd, b"ready\n")
_main(_cfg.pop("source"), _cfg.pop("tests"), _reporter(_res_fd, _cfg.pop("nonce")))
del _cfg
