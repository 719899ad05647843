"""A local sandbox for untrusted Python programs (Linux only): one fresh, limited process per run.

``run_program(source, stdin)`` runs a program the way a judge does (stdin in, stdout out);
``run_asserts(source, asserts)`` runs a program and then each assert line in its namespace and
reports which passed. Both return a ``RunResult``; neither ever raises because of what the program
does (``SandboxError`` means the sandbox itself could not be set up).

How one run works. The parent writes the config with marshal (json would cost the
launcher 10 ms of imports) into a memfd (never argv or env, which the program could read) and starts a trusted *launcher* (``sandbox_launcher.py``) with ``python -I -S -B`` in a
new session, with a fresh ``mkdtemp`` directory as cwd and an environment of only PATH, LANG, HOME
and TMPDIR (both the temp dir): no inherited variable, so no secret, reaches the program. The
launcher starts as the parent's user and, before reading the program, does in order:

1. ``unshare(CLONE_NEWNET | CLONE_NEWNS)`` where permitted (root, or an unprivileged user namespace):
   a network namespace with only a down loopback, so no socket reaches anything; and a mount
   namespace in which every mount except the temp dir (and /proc, /sys, /dev) is remounted
   read-only, so even world-writable places (/tmp, /dev/shm) cannot be written.
2. As root: drop to a *dedicated* uid/gid (``UID_BASE + slot``, no supplementary groups), claimed by
   an ``flock`` so no two live sandboxes share one. Not ``nobody``: RLIMIT_NPROC counts every
   process of a uid, so a shared uid would let one fork bomb starve concurrent sandboxes (or
   daemons running as nobody), and ``kill(-1)`` would reach them. With its own uid the program
   cannot write root-owned files, signal the parent, or exceed its process count, and afterwards
   the parent kills *every* process of that uid (a daemonised grandchild that left the process
   group included) before removing the temp dir.
3. rlimits, hard = soft so they cannot be raised: CPU seconds (SIGXCPU, then SIGKILL one second
   later), address space, file size, process count, open files, core size 0.

Without a network namespace the launcher replaces ``socket``/``_socket`` constructors with a
function that raises; this fallback is weak (ctypes, or a spawned non-Python process, bypass it).
The parent enforces the wall clock (SIGKILL to the process group, then the uid sweep) and reads at
most ``Limits.stdout_bytes`` of stdout (more kills the run: it can only be wrong) and keeps the
first ``Limits.stderr_bytes`` of stderr, discarding the rest, so a program printing gigabytes costs
the parent bounded memory and no disk. Everything is torn down in ``finally``, so an exception
raised into the parent mid-run (the reward executor's ``ItemTimeout``) still kills and cleans up.

Assert verdicts travel on a separate pipe as ``<nonce> <i> <0|1>`` lines written by the launcher
after each assert ran in the program's namespace, so ``sys.exit(0)``/``os._exit(0)`` before the
asserts, an exception, or a flood on stdout scores nothing. The nonce is random per run and never
in argv, env or on disk.

What this does NOT protect against, honestly:
- The program runs in the same interpreter as the launcher, so code that deliberately digs the
  nonce out of memory (``gc.get_objects()``, frame walking) can forge assert verdicts, and an
  object whose ``__eq__`` always returns True passes ``assert f(x) == y``. Stdin/stdout tests are
  judged by the parent and are not forgeable this way.
- No seccomp filter (the stdlib has no binding): every syscall is reachable, so kernel exploits are
  out of scope, as are side channels and CPU/memory-bandwidth contention with the trainer.
- No pid namespace: the program can list processes and read world-readable /proc entries and
  world-readable files; it cannot read other users' environ or files the dedicated uid cannot.
- Not running as root (a developer machine): no uid drop, so RLIMIT_NPROC counts all of the user's
  processes (usually already above the limit, so forking just fails), a process that leaves the
  process group can outlive the run, and file protection is whatever the user's own is.
"""

from __future__ import annotations

import fcntl
import functools
import marshal
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

UID_BASE = 1_790_000_000  # far above any real or subordinate (userns) uid range
UID_SLOTS = 512
_LOCK_DIR = os.path.join(tempfile.gettempdir(), "r1flow-sandbox-uids")
_SETUP_FAILED = 125
_INTERPRETERS = ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3")
_PROBE = "import fractions, heapq, traceback, decimal\nprint(sum(range(10)))"


class SandboxError(RuntimeError):
    """The sandbox could not be set up (unsupported platform, no usable interpreter...)."""


@dataclass(frozen=True)
class Limits:
    """Per-run resource limits."""

    cpu_s: int = 2
    wall_s: float = 4.0
    memory_mb: int = 256
    file_size_mb: int = 1
    nproc: int = 16
    nofile: int = 64
    stdout_bytes: int = 256 * 1024
    stderr_bytes: int = 16 * 1024


@dataclass
class RunResult:
    """What one run did. ``status`` is one of ok, error (non-zero exit), timeout (wall clock),
    cpu_limit, signal (killed by a signal: segfault, SIGKILL...), output_limit, setup_error."""

    returncode: int | None
    stdout: str
    stderr: str
    status: str
    wall_s: float
    killed_reason: str | None = None
    passed: list[bool] = field(default_factory=list)  # run_asserts only: verdict per assert

    @property
    def timed_out(self) -> bool:
        return self.status in ("timeout", "cpu_limit")


@dataclass(frozen=True)
class Isolation:
    """Which mechanisms work here (probed once per process by ``isolation()``)."""

    python: str
    drop_uid: bool
    netns: bool
    mountns: bool


# The launcher is a file of its own (readable, lintable) but runs as ``python -c`` text: the
# dropped uid may not be able to read this checkout, and ``-c`` needs no path.
_HARNESS = (Path(__file__).parent / "sandbox_launcher.py").read_text()


# ----------------------------------------------------------------------------- isolation probe
@functools.lru_cache(maxsize=1)
def isolation() -> Isolation:
    """Find an interpreter and the strongest isolation that works here, by trial runs.

    As root the sandbox must drop privileges, so the interpreter must be reachable by an
    unprivileged uid (a pyenv build under /root is not; the system python is). Raises
    ``SandboxError`` if nothing works; never falls back to running untrusted code as root.
    """
    if not sys.platform.startswith("linux"):
        raise SandboxError(f"the code sandbox needs Linux (this is {sys.platform})")
    root = os.geteuid() == 0
    candidates = [os.path.realpath(sys.executable), *_INTERPRETERS]
    pythons = [p for p in dict.fromkeys(candidates) if os.access(p, os.X_OK)]
    errors = []
    for python in pythons:
        for netns, mountns in ((True, True), (True, False), (False, False)):
            iso = Isolation(python=python, drop_uid=root, netns=netns, mountns=mountns)
            # modules the launcher itself does not import: they must load after the uid drop
            res = _run(_PROBE, "", None, Limits(), iso)
            if res.status == "ok" and res.stdout == "45\n":
                return iso
            errors.append(f"{python} netns={netns} mountns={mountns}: {res.status} {res.stderr[-200:]}")
    raise SandboxError("no working sandbox configuration:\n" + "\n".join(errors))


# ----------------------------------------------------------------------------- uid slots
def _claim_uid() -> tuple[int, int]:
    """Lock a free slot; returns (uid, lock fd). The lock file holds "1" while a run is in
    flight, so a claimer can tell that the previous owner crashed and sweep its leftovers."""
    os.makedirs(_LOCK_DIR, mode=0o700, exist_ok=True)
    st = os.lstat(_LOCK_DIR)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise SandboxError(f"{_LOCK_DIR} must be a directory owned by uid {os.geteuid()} with mode 0700")
    start = secrets.randbelow(UID_SLOTS)
    for k in range(UID_SLOTS):
        slot = (start + k) % UID_SLOTS
        fd = os.open(os.path.join(_LOCK_DIR, str(slot)), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        if os.pread(fd, 1, 0) == b"1":  # the last owner died mid-run: its processes may live on
            _kill_uid(UID_BASE + slot)
        os.pwrite(fd, b"1", 0)
        return UID_BASE + slot, fd
    raise SandboxError(f"all {UID_SLOTS} sandbox uid slots are in use")


def _kill_uid(uid: int) -> None:
    """SIGKILL every live process whose real, effective or saved uid is ``uid``, until none is
    left (zombies are already dead: their new parent reaps them).

    pidfd binds the signal to the process we checked, so a recycled pid is never hit."""
    wanted = str(uid).encode()
    for _ in range(100):
        found = False
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                pidfd = os.pidfd_open(int(name))
            except OSError:
                continue
            try:
                with open(f"/proc/{name}/status", "rb") as f:
                    status = f.read()
                start = status.index(b"\nUid:") + 5
                state = status[status.index(b"\nState:") + 7 :].split(maxsplit=1)[0]
                if state not in (b"Z", b"X") and wanted in status[start : status.index(b"\n", start)].split():
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    found = True
            except (OSError, ValueError):
                pass
            finally:
                os.close(pidfd)
        if not found:
            return
        time.sleep(0.002)
    raise SandboxError(f"processes of sandbox uid {uid} survive SIGKILL")


# ----------------------------------------------------------------------------- running
def run_program(source: str, stdin: str = "", limits: Limits = Limits()) -> RunResult:
    """Run ``source`` as a script with ``stdin``; judge it by ``status`` and ``stdout``."""
    return _run(source, stdin, None, limits, isolation())


def run_asserts(source: str, asserts: Sequence[str], limits: Limits = Limits()) -> RunResult:
    """Run ``source``, then each assert in its namespace; ``passed[i]`` is assert i's verdict.

    A program that raises or exits before the asserts, or an assert that never reports (the run
    was killed), counts as failed."""
    return _run(source, "", list(asserts), limits, isolation())


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, 0)  # no MFD_CLOEXEC: pass_fds / stdin hand it to the child
    os.write(fd, data) if len(data) < 2**16 else _write_all(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _run(source: str, stdin: str, tests: list[str] | None, limits: Limits, iso: Isolation) -> RunResult:
    t0 = time.monotonic()
    nonce = secrets.token_hex(16)
    workdir = tempfile.mkdtemp(prefix="r1flow-sbx-")
    uid = lock_fd = proc = None
    fds: list[int] = []
    try:
        if iso.drop_uid:
            uid, lock_fd = _claim_uid()
            os.chown(workdir, uid, uid)
        cfg = {
            "source": source, "tests": tests, "nonce": nonce, "workdir": workdir,
            "uid": uid, "gid": uid, "netns": iso.netns, "mountns": iso.mountns,
            "userns": (iso.netns or iso.mountns) and not iso.drop_uid,
            "rlimits": {
                "RLIMIT_CPU": limits.cpu_s, "RLIMIT_AS": limits.memory_mb * 2**20,
                "RLIMIT_FSIZE": limits.file_size_mb * 2**20, "RLIMIT_NPROC": limits.nproc,
                "RLIMIT_NOFILE": limits.nofile, "RLIMIT_CORE": 0,
            },
        }  # fmt: skip
        cfg_fd = _memfd("sandbox-cfg", marshal.dumps(cfg, 4))
        stdin_fd = _memfd("sandbox-stdin", stdin.encode())
        res_r, res_w = os.pipe()
        fds += [cfg_fd, stdin_fd, res_r, res_w]
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}
        proc = subprocess.Popen(
            [iso.python, "-I", "-S", "-B", "-c", _HARNESS, str(cfg_fd), str(res_w)],
            stdin=stdin_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(cfg_fd, res_w),
            cwd=workdir, env=env, start_new_session=True,
        )  # fmt: skip
        for fd in (cfg_fd, stdin_fd, res_w):
            os.close(fd)
            fds.remove(fd)
        out, err, res, killed = _collect(proc, res_r, limits, t0)
        if killed:
            _kill_group(proc)
        rc = proc.wait()
        return _result(rc, out, err, res, killed, nonce, tests, limits, time.monotonic() - t0)
    finally:
        if proc is not None:
            _kill_group(proc)
        if uid is not None:
            _kill_uid(uid)
        if proc is not None:
            proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        for fd in fds:
            os.close(fd)
        _rmtree(workdir)
        if lock_fd is not None:
            os.pwrite(lock_fd, b"0", 0)  # swept clean
            os.close(lock_fd)  # releases the flock: the slot is free again


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _collect(
    proc: subprocess.Popen, res_fd: int, limits: Limits, t0: float
) -> tuple[bytes, bytes, bytes, str | None]:
    """Read stdout, stderr and the verdict pipe until the launcher exits or a limit is hit.

    Returns the three byte strings and why we stopped it early (None if it exited by itself)."""
    assert proc.stdout is not None and proc.stderr is not None
    out_fd = proc.stdout.fileno()
    caps = {out_fd: limits.stdout_bytes, proc.stderr.fileno(): limits.stderr_bytes, res_fd: 1 << 20}
    bufs: dict[int, bytearray] = {fd: bytearray() for fd in caps}
    pidfd = os.pidfd_open(proc.pid)
    sel = selectors.DefaultSelector()
    deadline = t0 + limits.wall_s
    try:
        for fd in caps:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        sel.register(pidfd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return _bufs(bufs, out_fd, proc, res_fd) + ("timeout",)
            exited = False
            for key, _ in sel.select(remaining):
                if key.fd == pidfd:
                    exited = True
                elif _read_into(key.fd, bufs[key.fd], caps[key.fd]) == "eof":
                    sel.unregister(key.fd)
            if len(bufs[out_fd]) > caps[out_fd]:
                return _bufs(bufs, out_fd, proc, res_fd) + ("output_limit",)
            if exited:  # drain what is buffered; descendants that still hold the pipes are ignored
                for fd in caps:
                    while _read_into(fd, bufs[fd], caps[fd]) == "data":
                        pass
                return _bufs(bufs, out_fd, proc, res_fd) + (None,)
    finally:
        sel.close()
        os.close(pidfd)


def _bufs(bufs: dict[int, bytearray], out_fd: int, proc: subprocess.Popen, res_fd: int) -> tuple:
    assert proc.stderr is not None
    return bytes(bufs[out_fd]), bytes(bufs[proc.stderr.fileno()]), bytes(bufs[res_fd])


def _read_into(fd: int, buf: bytearray, cap: int) -> str:
    """Read one chunk: "data", "eof" or "empty". Bytes past ``cap`` (plus one chunk) are dropped."""
    try:
        chunk = os.read(fd, 65536)
    except BlockingIOError:
        return "empty"
    if not chunk:
        return "eof"
    if len(buf) <= cap:
        buf += chunk
    return "data"


def _result(
    rc: int, out: bytes, err: bytes, res: bytes, killed: str | None, nonce: str,
    tests: list[str] | None, limits: Limits, wall_s: float,
) -> RunResult:  # fmt: skip
    lines = res.decode("utf-8", "replace").splitlines()
    ready = bool(lines) and lines[0] == "ready"
    passed = [False] * len(tests or [])
    for i, line in enumerate(lines[1 : 1 + len(passed)]):
        parts = line.split(" ")
        if len(parts) == 3 and secrets.compare_digest(parts[0], nonce) and parts[1] == str(i):
            passed[i] = parts[2] == "1"
    if killed:
        status = killed
    elif not ready:
        status = "setup_error"
    elif rc == 0:
        status = "ok"
    elif rc in (-signal.SIGXCPU, -signal.SIGKILL):
        # SIGXCPU only comes from RLIMIT_CPU; a SIGKILL we did not send is the hard CPU limit
        # (or the kernel's OOM killer, which RLIMIT_AS makes unlikely).
        status = "cpu_limit"
    else:
        status = "signal" if rc < 0 else "error"
    decode = lambda b, cap: b[:cap].decode("utf-8", "replace")  # noqa: E731
    return RunResult(
        returncode=rc, stdout=decode(out, limits.stdout_bytes), stderr=decode(err, limits.stderr_bytes),
        status=status, wall_s=wall_s, killed_reason=killed, passed=passed,
    )  # fmt: skip


def _rmtree(path: str) -> None:
    """Remove the temp dir even if the program made parts of it unreadable (chmod 000)."""

    def fix(func, p, exc):  # only reached when not root: make the parent dir usable and retry
        for q in (os.path.dirname(p), p):
            if not os.path.islink(q):
                try:
                    os.chmod(q, 0o700)
                except OSError:
                    pass
        try:
            func(p)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            shutil.rmtree(p, onerror=fix)

    shutil.rmtree(path, onerror=fix)


# ----------------------------------------------------------------------------- benchmark
def sandbox_programs_per_s(n: int = 100, parallel: int = 2) -> float:
    """Throughput of small programs (``print(sum(range(100)))``) run ``parallel`` at a time."""
    isolation()  # probe outside the timing
    t0 = time.monotonic()
    with ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(lambda _: run_program("print(sum(range(100)))"), range(n)))
    rate = n / (time.monotonic() - t0)
    bad = [r for r in results if r.stdout != "4950\n"]
    if bad:
        raise SandboxError(f"{len(bad)} benchmark runs failed, e.g. {asdict(bad[0])}")
    return rate


if __name__ == "__main__":
    print(isolation())
    print(f"{sandbox_programs_per_s():.1f} programs/s")
