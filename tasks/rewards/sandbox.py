"""A sandbox for untrusted Python programs (Linux): one fresh bubblewrap container per run.

``run_program(source, stdin)`` runs a program the way a judge does (stdin in, stdout out; the
caller compares the output); ``run_asserts(source, asserts)`` runs a program and judges assert
tests in the trusted parent (``tasks.rewards.asserts``: only the calls go in, their values come
back as literals, the expected values never enter). Both return a ``RunResult``; neither raises
because of what the program does. ``SandboxError`` means the sandbox could not be set up, and
names what is missing (no bubblewrap: ``apt-get install bubblewrap``; there is no weaker mode).

One run: the parent writes the config with marshal into a memfd (never argv, env or disk) and
starts ``sh`` (which moves itself into the run's cgroup) -> ``setpriv`` (as root: drop to a
dedicated uid, ``UID_BASE + slot``, claimed by an ``flock`` so no two live sandboxes share one, no
groups, no capabilities, no_new_privs) -> ``bwrap`` (``tasks.rewards.bwrap``: new user, pid, ipc,
net, uts, cgroup namespaces, no nested user namespaces, seccomp, only the interpreter, stdlib and
their libraries visible read-only, own /proc, private tmpfs /tmp as cwd and HOME,
``--die-with-parent``, ``--as-pid-1``) -> the launcher (``sandbox_launcher.py``, ``python -I -S
-B``): rlimits, then the program as its namespace's init, so when it exits the kernel reaps the
rest and bwrap reaps it (bwrap's own init would be left to the host's, holding a pids charge).

What it guarantees:
- Expected results never enter the sandbox (stdin/stdout: the caller compares; asserts: the parent
  compares), so nothing the program prints, writes, returns or exits with passes a test it did not
  pass, and no frame, memory, file or environment variable of the program holds an answer.
- No network (an empty network namespace; unix sockets: no host socket file is visible, abstract
  ones are per namespace), no IPC object shared with or left for anyone (own IPC namespace, gone
  with the run), no view of host processes (own pid namespace and /proc), no host file visible but
  the interpreter's, all read-only; nothing the program writes survives the run (tmpfs).
- Limits: CPU seconds (SIGXCPU, then SIGKILL), wall clock (the parent kills), file size, open
  files and core size by rlimit; address space per process by rlimit; memory and process count for
  the whole process tree by a cgroup (memory with swap, tmpfs pages included; ``pids``) where the
  machine lets root create one (``Isolation.cgroup``). Without a cgroup, the tree's memory is
  bounded by ``memory_mb * nproc`` (RLIMIT_AS per process times RLIMIT_NPROC of the dedicated uid)
  plus ``tmp_mb`` of tmpfs. Stdout beyond ``stdout_bytes`` kills the run; stderr is truncated.
- Teardown in ``finally`` (also when the executor's timer interrupts us): SIGKILL to bwrap's
  session, taking its pid namespace with it; every process left in the cgroup (or of the uid) is
  killed and waited for (until their pids are released), then the slot is freed.
  Signals cannot reach other sandboxes or the trainer: they are outside the pid namespace.

What it does not guarantee:
- Kernel exploits through the syscalls the filter allows, and side channels (timing, CPU, memory
  bandwidth contention with the trainer) are out of scope; seccomp is x86-64 only.
- Without root (a developer machine) there is no uid drop and usually no cgroup: RLIMIT_NPROC then
  counts all of the user's processes, and the memory bound is the rlimit one.
- An assert whose expected side mentions a name (``== sys.getsizeof(t)``) is evaluated inside.
"""

from __future__ import annotations

import functools
import marshal
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tasks.rewards import asserts as assert_plan
from tasks.rewards.bwrap import (
    Cgroup,
    SandboxUnavailable,
    bwrap_argv,
    bwrap_path,
    cgroup_kind,
    seccomp_filter,
    wait_for_namespace,
)
from tasks.rewards.uids import claim_uid, kill_uid

_INTERPRETERS = ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3")
_PROBE = "import fractions, heapq, traceback, decimal, json, re\nprint(sum(range(10)))"
_JOIN_CGROUP = 'for f in $R1FLOW_CGROUP_PROCS; do echo $$ > "$f" || exit 125; done; exec "$@"'


class SandboxError(RuntimeError):
    """The sandbox could not be set up (unsupported platform, bubblewrap missing...)."""


@dataclass(frozen=True)
class RLimits:
    """Per-run resource limits (``memory_mb`` and ``nproc`` cap the whole tree where a cgroup can
    be made, else per process / per uid)."""

    cpu_s: int = 2
    wall_s: float = 4.0
    memory_mb: int = 256
    file_size_mb: int = 1
    nproc: int = 16
    nofile: int = 64
    tmp_mb: int = 16
    stdout_bytes: int = 256 * 1024
    stderr_bytes: int = 16 * 1024


@dataclass
class RunResult:
    """What one run did. ``status`` is one of ok, error (non-zero exit), timeout (wall clock),
    cpu_limit, memory_limit (the tree's cgroup cap), signal (killed by a signal: segfault...),
    output_limit, setup_error."""

    returncode: int | None
    stdout: str
    stderr: str
    status: str
    wall_s: float
    killed_reason: str | None = None
    passed: list[bool] = field(default_factory=list)  # run_asserts only: verdict per assert test

    @property
    def timed_out(self) -> bool:
        return self.status in ("timeout", "cpu_limit")


@dataclass(frozen=True)
class Isolation:
    """What this machine gives the sandbox (probed once per process by ``isolation()``)."""

    python: str
    drop_uid: bool
    seccomp: bool
    cgroup: str | None  # "v1", "v2" or None (the rlimit bound applies)


# The launcher is a file of its own (readable, lintable) but runs as ``python -c`` text: it is not
# visible inside the sandbox, and ``-c`` needs no path.
_HARNESS = (Path(__file__).parent / "sandbox_launcher.py").read_text()


@functools.lru_cache(maxsize=1)
def isolation() -> Isolation:
    """Find a system interpreter that runs inside bubblewrap here, by a trial run.

    As root the sandbox drops to a dedicated uid, so bwrap must be able to read the interpreter
    as that uid (a pyenv build under /root cannot be); the system python can. Raises
    ``SandboxError`` naming what is missing; never runs untrusted code without bubblewrap.
    """
    if not sys.platform.startswith("linux"):
        raise SandboxError(f"the code sandbox needs Linux (this is {sys.platform})")
    try:
        bwrap_path()
    except SandboxUnavailable as e:
        raise SandboxError(str(e)) from None
    root = os.geteuid() == 0
    pythons = [
        p for p in dict.fromkeys([*_INTERPRETERS, os.path.realpath(sys.executable)]) if os.access(p, os.X_OK)
    ]
    errors = []
    for python in pythons:
        iso = Isolation(python, root, seccomp_filter() is not None, cgroup_kind() if root else None)
        try:
            res = _run(_PROBE, "", None, RLimits(), iso)
        except (OSError, subprocess.SubprocessError) as e:
            errors.append(f"{python}: {e}")
            continue
        if res.status == "ok" and res.stdout == "45\n":
            return iso
        errors.append(f"{python}: {res.status} {res.stderr[-300:]}")
    raise SandboxError("bubblewrap could not run any interpreter here:\n" + "\n".join(errors))


# ----------------------------------------------------------------------------- running
def run_program(source: str, stdin: str = "", limits: RLimits = RLimits()) -> RunResult:
    """Run ``source`` as a script with ``stdin``; judge it by ``status`` and ``stdout``."""
    return _run(source, stdin, None, limits, isolation())


def run_asserts(source: str, asserts: Sequence[str], limits: RLimits = RLimits()) -> RunResult:
    """Run ``source``, then judge each assert test in the parent; ``passed[i]`` is test i's verdict.

    A program that raises or exits before the tests, or a value that never comes back (the run was
    killed, or it is not a plain built-in value), fails the tests that need it."""
    plan = assert_plan.plan(asserts, source)
    res = _run(source, "", plan.steps, limits, isolation())
    res.passed = assert_plan.judge(plan, res.values)  # type: ignore[attr-defined]
    del res.values  # type: ignore[attr-defined]
    return res


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, 0)  # no MFD_CLOEXEC: pass_fds / stdin hand it to the child
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _run(
    source: str, stdin: str, steps: list[assert_plan.Step] | None, limits: RLimits, iso: Isolation
) -> RunResult:
    t0 = time.monotonic()
    uid = lock_fd = proc = cgroup = info_r = None
    fds: list[int] = []
    try:
        if iso.drop_uid:
            uid, lock_fd = claim_uid()
        if iso.cgroup:
            cgroup = Cgroup(
                iso.cgroup, limits.memory_mb, limits.nproc, f"r1flow-sbx-uid{uid}" if uid else None
            )
        cfg = {
            "source": source,
            "steps": None if steps is None else [(s.kind, s.source) for s in steps],
            "rlimits": {
                "RLIMIT_CPU": limits.cpu_s, "RLIMIT_AS": limits.memory_mb * 2**20,
                "RLIMIT_FSIZE": limits.file_size_mb * 2**20, "RLIMIT_NPROC": limits.nproc,
                "RLIMIT_NOFILE": limits.nofile, "RLIMIT_CORE": 0,
            },
        }  # fmt: skip
        cfg_fd = _memfd("sandbox-cfg", marshal.dumps(cfg, 4))
        stdin_fd = _memfd("sandbox-stdin", stdin.encode())
        seccomp = seccomp_filter() if iso.seccomp else None
        sec_fd = _memfd("sandbox-seccomp", seccomp) if seccomp else None
        res_r, res_w = os.pipe()
        info_r, info_w = os.pipe()
        fds += [cfg_fd, stdin_fd, res_r, res_w, info_r, info_w] + ([sec_fd] if sec_fd is not None else [])
        argv = ["/bin/sh", "-c", _JOIN_CGROUP, "sh"]
        if uid is not None:
            argv += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
                     "--no-new-privs", "--"]  # fmt: skip
        argv += bwrap_argv(iso.python, limits.tmp_mb, sec_fd, info_w)
        argv += ["-I", "-S", "-B", "-c", _HARNESS, str(cfg_fd), str(res_w)]
        env = {
            "PATH": "/usr/bin:/bin",
            "R1FLOW_CGROUP_PROCS": " ".join(cgroup.procs_files() if cgroup else []),
        }
        passed = tuple(fd for fd in (cfg_fd, res_w, info_w, sec_fd) if fd is not None)
        proc = subprocess.Popen(
            argv, stdin=stdin_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=passed,
            cwd="/", env=env, start_new_session=True,
        )  # fmt: skip
        for fd in (cfg_fd, stdin_fd, res_w, info_w, sec_fd):
            if fd is not None:
                os.close(fd)
                fds.remove(fd)
        out, err, res, killed = _collect(proc, res_r, limits, t0)
        if killed:
            _kill_group(proc)
        rc = proc.wait()
        oom = cgroup is not None and cgroup.oom_killed()
        result = _result(rc, out, err, res, killed, oom, limits, time.monotonic() - t0)
        result.values = _values(res, steps)  # type: ignore[attr-defined]
        return result
    finally:
        _teardown(proc, info_r, cgroup, uid, fds, lock_fd)


def _teardown(proc, info_r, cgroup, uid, fds: list[int], lock_fd) -> None:
    """Whatever happened: kill the run's processes, wait for its pid namespace to end, sweep its
    cgroup or uid, close every fd, and free the uid slot."""
    if proc is not None:
        _kill_group(proc)
    if info_r is not None:
        wait_for_namespace(info_r)
    if cgroup is not None:
        cgroup.kill_all()
        if uid is None:
            cgroup.remove()
    elif uid is not None:
        kill_uid(uid)
    if proc is not None:
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    if cgroup is not None and uid is not None:
        cgroup.settle()  # after our own child is reaped: the reused slot's next run gets its budget
    for fd in fds:
        os.close(fd)
    if lock_fd is not None:
        os.pwrite(lock_fd, b"0", 0)  # swept clean
        os.close(lock_fd)  # releases the flock: the slot is free again


def _values(res: bytes, steps: list | None) -> dict[int, str]:
    """Step index -> the repr text sent for it ("" for an exec step). The *last* line for a step
    wins: the launcher writes each one right after the step ran, so lines the program wrote
    beforehand are superseded; lines that do not parse are ignored."""
    values: dict[int, str] = {}
    if not steps:
        return values
    for line in res.decode("utf-8", "replace").split("\n")[1:]:
        index, _, text = line.partition(" ")
        if index.isdigit() and int(index) < len(steps):
            values[int(index)] = text
    return values


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _collect(
    proc: subprocess.Popen, res_fd: int, limits: RLimits, t0: float
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
    rc: int, out: bytes, err: bytes, res: bytes, killed: str | None, oom: bool, limits: RLimits, wall_s: float
) -> RunResult:
    ready = res.startswith(b"ready\n")
    if rc > 128:  # bwrap reports a child killed by signal N as exit status 128 + N
        rc = -(rc - 128)
    if killed:
        status = killed
    elif not ready:
        status = "setup_error"
    elif oom:
        status = "memory_limit"
    elif rc == 0:
        status = "ok"
    elif rc in (-signal.SIGXCPU, -signal.SIGKILL):
        status = (
            "cpu_limit"  # SIGXCPU only comes from RLIMIT_CPU; a SIGKILL we did not send is its hard limit
        )
    else:
        status = "signal" if rc < 0 else "error"
    decode = lambda b, cap: b[:cap].decode("utf-8", "replace")  # noqa: E731
    return RunResult(
        returncode=rc, stdout=decode(out, limits.stdout_bytes), stderr=decode(err, limits.stderr_bytes),
        status=status, wall_s=wall_s, killed_reason=killed,
    )  # fmt: skip


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
    print(isolation(), f"{sandbox_programs_per_s():.1f} programs/s", sep="\n")
