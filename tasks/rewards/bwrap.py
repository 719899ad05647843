"""The sandbox's walls: a bubblewrap command line, a seccomp filter and a per-run cgroup.

- ``bwrap_argv``: new user, pid, ipc, net, uts and cgroup namespaces; ``--disable-userns`` (no
  nested user namespace, so no nested mount namespace or tmpfs either); ``--die-with-parent``;
  ``--new-session`` (no terminal to inject keystrokes into); all capabilities dropped; an empty
  environment but PATH, LANG and HOME. The filesystem is built from nothing: the interpreter, its
  standard library (``sys.prefix``'s ``lib/pythonX.Y``, minus site-packages) and the shared
  libraries they link, each bound read-only; a fresh ``/proc`` for the new pid namespace (so no
  host process is visible), a minimal ``/dev``, and a private, size-capped tmpfs ``/tmp`` that is
  the program's cwd and HOME and vanishes with the run.
- ``seccomp_filter``: a classic BPF program (x86-64 only; elsewhere none is installed) that returns
  EPERM for the syscalls a judged program has no use for and that widen the kernel's attack
  surface or escape the namespaces: unshare/setns/mount family, ptrace and process_vm_*, bpf,
  perf_event_open, userfaultfd, io_uring, keyctl, kexec/modules, open_by_handle_at, and ``clone``
  with any namespace flag; ``clone3`` gets ENOSYS so libc falls back to ``clone``, whose flags the
  filter can see. Other architectures' syscall ABIs (x32, i386) are killed.
- ``Cgroup``: a memory + pids cgroup (v1 or v2, whichever this machine lets root write) holding the
  whole process tree: ``memory`` (RAM, swap and tmpfs pages together) and ``pids`` caps for the
  tree, not per process. Where none is writable, ``cgroup_kind()`` is None and the documented
  bound is per-process RLIMIT_AS times RLIMIT_NPROC of the dedicated uid (see ``sandbox``).
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
import secrets
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time

_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp"}
_NS_FLAGS = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
_DENY_X86_64 = (
    101,
    135,
    153,
    155,
    159,
    161,
    163,
    164,
    165,
    166,
    167,
    168,
    169,
    172,
    173,
    175,
    176,
    179,
    227,
    246,
    248,
    249,
    250,
    256,
    272,
    298,
    300,
    303,
    304,
    308,
    310,
    311,
    312,
    313,
    320,
    321,
    323,
    425,
    426,
    427,
    428,
    429,
    430,
    431,
    432,
    433,
    434,
    438,
    442,
)  # ptrace personality vhangup pivot_root adjtimex chroot acct settimeofday mount umount2 swapon
# swapoff reboot iopl ioperm init_module delete_module quotactl clock_settime kexec_load add_key
# request_key keyctl migrate_pages unshare perf_event_open fanotify_init name_to_handle_at
# open_by_handle_at setns process_vm_readv process_vm_writev kcmp finit_module kexec_file_load bpf
# userfaultfd io_uring_setup/enter/register open_tree move_mount fsopen fsconfig fsmount fspick
# pidfd_open pidfd_getfd mount_setattr
_CLONE, _CLONE3 = 56, 435
_LIB_DIR, _LOADER = (
    f"/usr/lib/{platform.machine()}-linux-gnu",
    f"ld-linux-{platform.machine().replace('_', '-')}.so.2",
)
_AUDIT_ARCH_X86_64 = 0xC000003E


class SandboxUnavailable(RuntimeError):
    """A piece the sandbox needs is missing; the message names it and how to get it."""


_PROBE_PATHS = "import sys, sysconfig; print(sys.executable); print(sysconfig.get_path('stdlib'))"


@functools.lru_cache(maxsize=1)
def bwrap_path() -> str:
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxUnavailable(
            "the code sandbox needs bubblewrap (the `bwrap` program), which is not installed: "
            "`apt-get install bubblewrap` (done by `make setup` as root)"
        )
    return path


@functools.lru_cache(maxsize=4)
def visible_paths(python: str) -> tuple[str, ...]:
    """The files the sandbox sees: the interpreter, its stdlib and every shared library they load."""
    out = subprocess.run(
        [python, "-I", "-S", "-c", _PROBE_PATHS],
        capture_output=True, text=True, check=True,
    ).stdout.split("\n")  # fmt: skip
    exe, stdlib = os.path.realpath(out[0]), out[1]
    objects = [exe] + [
        os.path.join(d, f)
        for d, _, fs in os.walk(os.path.join(stdlib, "lib-dynload"))
        for f in fs
        if f.endswith(".so")
    ]
    libs: set[str] = set()
    for chunk in range(0, len(objects), 64):
        ldd = subprocess.run(["ldd", *objects[chunk : chunk + 64]], capture_output=True, text=True).stdout
        libs.update(re.findall(r"(/\S+\.so[.\d]*) \(0x", ldd))
        libs.update(re.findall(r"=> (/\S+)", ldd))
    for lib in list(libs):
        libs.add(os.path.realpath(lib))
    return (exe, stdlib, *sorted(libs))


@functools.lru_cache(maxsize=4)
def staged_libs(python: str) -> str:
    """One directory holding (hard links to) exactly the shared libraries the interpreter needs, so
    the sandbox binds one directory instead of dozens of files (each bind costs bwrap a few ms).

    Named by a hash of the libraries' paths, inodes and mtimes, so an upgrade makes a fresh one;
    root-owned under /var/cache (the user's cache when not root), never writable by the sandbox."""
    libs = [p for p in visible_paths(python)[2:] if "/" in p]
    key = hashlib.sha256(
        repr([(p, os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in libs]).encode()
    ).hexdigest()
    base = "/var/cache/r1flow-sandbox" if os.geteuid() == 0 else os.path.expanduser("~/.cache/r1flow-sandbox")
    stage = os.path.join(base, key[:16])
    if os.path.isdir(stage):
        return stage
    os.makedirs(base, mode=0o755, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=base)
    for lib in libs:
        dest = os.path.join(tmp, os.path.basename(lib))
        if not os.path.exists(dest):
            try:
                os.link(os.path.realpath(lib), dest)
            except OSError:  # another file system: copy
                shutil.copy2(os.path.realpath(lib), dest)
    os.chmod(tmp, 0o755)
    try:
        os.rename(tmp, stage)
    except OSError:  # a concurrent process staged it first
        shutil.rmtree(tmp)
    return stage


def bwrap_argv(python: str, tmp_mb: int, seccomp_fd: int | None, info_fd: int | None = None) -> list[str]:
    """The bwrap command line that runs ``python`` (the arguments follow it)."""
    argv = [bwrap_path(), "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-net",
            "--unshare-uts", "--unshare-cgroup", "--disable-userns", "--die-with-parent", "--new-session",
            "--as-pid-1",
            "--cap-drop", "ALL", "--hostname", "sandbox", "--clearenv"]  # fmt: skip
    for key, value in _ENV.items():
        argv += ["--setenv", key, value]
    exe, stdlib = visible_paths(python)[:2]
    argv += ["--ro-bind", exe, python]
    if os.path.realpath(python) != python:
        argv += ["--ro-bind", exe, exe]
    argv += ["--ro-bind", stdlib, stdlib]
    site = os.path.join(stdlib, "site-packages")
    if os.path.isdir(site):  # a non-Debian build keeps third-party packages inside the stdlib dir
        argv += ["--tmpfs", site, "--remount-ro", site]
    # the libraries in the dynamic loader's default directory; the loader where the ELF header says
    argv += ["--ro-bind", staged_libs(python), _LIB_DIR, "--symlink", "usr/lib", "/lib"]
    argv += ["--symlink", f"{_LIB_DIR}/{_LOADER}", f"/lib64/{_LOADER}"]
    argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(tmp_mb * 2**20), "--tmpfs", "/tmp",
             "--chdir", "/tmp"]  # fmt: skip
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    if info_fd is not None:  # bwrap writes {"child-pid": N}: the pid namespace's init, in our pids
        argv += ["--info-fd", str(info_fd)]
    return argv + ["--", python]


@functools.lru_cache(maxsize=1)
def seccomp_filter() -> bytes | None:
    """The BPF program described in the module docstring, or None off x86-64."""
    if platform.machine() != "x86_64" or sys.byteorder != "little":
        return None
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, kill, eperm, enosys = 0x7FFF0000, 0x80000000, 0x00050000 | 1, 0x00050000 | 38
    n = len(_DENY_X86_64)
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, _AUDIT_ARCH_X86_64), (ret, 0, 0, kill), (ld, 0, 0, 0),
            (jge, 0, 1, 0x40000000), (ret, 0, 0, kill)]  # fmt: skip
    # deny list: each match jumps to the EPERM return at the end
    for k, nr in enumerate(_DENY_X86_64):
        prog.append((jeq, n - k + 6, 0, nr))
    prog += [
        (jeq, 2, 0, _CLONE3),  # -> ENOSYS
        (jeq, 2, 0, _CLONE),  # -> the flags check
        (ret, 0, 0, allow),
        (ret, 0, 0, enosys),
        (ld, 0, 0, 16),  # clone's first argument (flags), low 32 bits
        (jset, 1, 0, _NS_FLAGS),
        (ret, 0, 0, allow),
        (ret, 0, 0, eperm),
    ]
    return b"".join(struct.pack("<HBBI", *ins) for ins in prog)


def wait_for_namespace(info_fd: int, timeout_s: float = 2.0) -> None:
    """Wait until the pid namespace's init has exited: the kernel makes it wait for (and kill)
    every process of the namespace first, so after this no process of the run is left running.
    Called after bwrap was killed; bwrap's ``--die-with-parent`` makes the init die with it."""
    os.set_blocking(info_fd, False)
    try:
        info = os.read(info_fd, 4096).decode("ascii", "replace")
    except (BlockingIOError, OSError):
        return
    found = re.search(r'"child-pid":\s*(\d+)', info)
    if not found:
        return
    try:
        pidfd = os.pidfd_open(int(found.group(1)))
    except OSError:  # already gone
        return
    try:
        select.select([pidfd], [], [], timeout_s)
    finally:
        os.close(pidfd)


# ----------------------------------------------------------------------------- cgroups
@functools.lru_cache(maxsize=1)
def cgroup_kind() -> str | None:
    """ "v1" or "v2" if root may create memory+pids cgroups here (probed by doing it), else None."""
    for kind in ("v2", "v1"):
        try:
            probe = Cgroup(kind, 64, 16)
            probe.kill_all()
            probe.remove()
            return kind
        except OSError:
            continue
    return None


class Cgroup:
    """One run's cgroup: memory (with swap) capped at ``memory_mb`` and ``pids`` processes."""

    def __init__(self, kind: str, memory_mb: int, pids: int, name: str | None = None) -> None:
        """A new cgroup, or the existing one called ``name`` (a uid slot's, reused run after run:
        creating and removing a memory cgroup costs more than the rest of a run's set-up)."""
        self.kind, name = kind, name or f"r1flow-sbx-{os.getpid()}-{secrets.token_hex(4)}"
        limit = str(memory_mb * 2**20)
        if kind == "v2":
            root = "/sys/fs/cgroup"
            with open(f"{root}/cgroup.controllers") as f:
                if not {"memory", "pids"} <= set(f.read().split()):
                    raise OSError("cgroup v2 without memory and pids controllers")
            self.dirs = [f"{root}/{name}"]
            os.makedirs(self.dirs[0], exist_ok=True)
            self._write(self.dirs[0], {"memory.max": limit, "memory.swap.max": "0", "pids.max": str(pids)})
        else:
            self.dirs = [f"/sys/fs/cgroup/memory/{name}", f"/sys/fs/cgroup/pids/{name}"]
            for d in self.dirs:
                os.makedirs(d, exist_ok=True)
            self._write(self.dirs[0], {"memory.limit_in_bytes": limit, "memory.memsw.limit_in_bytes": limit})
            self._write(self.dirs[1], {"pids.max": str(pids)})
        self._ooms = self._oom_count()

    def _write(self, d: str, values: dict[str, str]) -> None:
        try:
            for key, value in values.items():
                if key == "memory.memsw.limit_in_bytes" and not os.path.exists(f"{d}/{key}"):
                    continue  # no swap accounting: the kernel has no swap limit to set
                with open(f"{d}/{key}", "w") as f:
                    f.write(value)
        except OSError:
            self.remove()
            raise

    def procs_files(self) -> list[str]:
        return [f"{d}/cgroup.procs" for d in self.dirs]

    def oom_killed(self) -> bool:
        """Whether the memory cap killed a process since this object was made (this run)."""
        return self._oom_count() > self._ooms

    def _oom_count(self) -> int:
        name = "memory.events" if self.kind == "v2" else "memory.oom_control"
        try:
            with open(f"{self.dirs[0]}/{name}") as f:
                found = re.search(r"oom_kill (\d+)", f.read())
        except OSError:
            return 0
        return int(found.group(1)) if found else 0

    def kill_all(self) -> None:
        """SIGKILL every process still in the cgroup and wait until it is empty."""
        for _ in range(500):
            pids = self._pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            time.sleep(0.002)

    def settle(self) -> None:
        """Wait (up to 2 s) until no process is charged to the cgroup: a killed process leaves
        cgroup.procs at once but holds its pids slot until it is reaped, so a reused slot's next run
        could start with its budget taken. With ``--as-pid-1`` the kernel reaps the namespace when
        the program exits and bwrap reaps the program, so this is normally already true."""
        for _ in range(1000):
            if self._charged() == 0:
                break
            time.sleep(0.002)

    def _charged(self) -> int:
        try:
            with open(f"{self.dirs[-1]}/pids.current") as f:
                return int(f.read())
        except (OSError, ValueError):
            return 0

    def _pids(self) -> list[int]:
        try:
            with open(self.procs_files()[0]) as f:
                return [int(p) for p in f.read().split()]
        except OSError:
            return []

    def remove(self) -> None:
        for d in getattr(self, "dirs", []):
            for _ in range(200):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:  # still busy for a moment after its last process died
                    time.sleep(0.002)
