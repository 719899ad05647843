"""The code sandbox against hostile programs: each scores 0 (or its honest score), the test process
is unharmed, no file outside the sandbox's temp dir changes, and no sandbox process outlives a run.

Canaries: a private dir under tmp_path, a world-readable dir under /tmp (the place an unprivileged
uid could reach) and a file in $HOME. Every test snapshots them (content, mode, mtime) before and
after, and checks that nothing owned by a sandbox uid appeared in /tmp or /dev/shm. Hostile runs
use short limits (1 s CPU, 1.5 s wall) so the file stays well under a minute.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest

from tasks.rewards import sandbox
from tasks.rewards.code import run_tests
from tasks.rewards.sandbox import RLimits, isolation, run_asserts, run_program
from tasks.rewards.uids import UID_BASE, UID_SLOTS

FAST = RLimits(cpu_s=1, wall_s=1.5)
SECRET = "r1flow-test-secret-5f2c9a"
OK = [{"input": "", "output": "ok"}]  # a test only an honest, working run passes
ASSERTS = [{"assert": "assert f(2) == 4"}, {"assert": "assert f(3) == 6"}]


def _sandbox_pids() -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                status = Path(f"/proc/{name}/status").read_text()
            except OSError:
                continue
            uid = int(status.split("\nUid:")[1].split()[0])
            state = status.split("\nState:")[1].split()[0]
            if UID_BASE <= uid < UID_BASE + UID_SLOTS and state not in ("Z", "X"):
                pids.append(int(name))
    return pids


def _snapshot(paths: list[Path]) -> dict[str, tuple]:
    snap = {}
    for top in paths:
        for p in [top, *top.rglob("*")] if top.is_dir() else [top]:
            st = p.lstat()
            data = p.read_bytes() if p.is_file() else sorted(x.name for x in p.iterdir())
            snap[str(p)] = (data, st.st_mode, st.st_mtime_ns, st.st_uid)
    return snap


def _stray_files() -> list[str]:
    out = []
    for d in ("/tmp", "/dev/shm"):
        for name in os.listdir(d):
            try:
                if os.lstat(os.path.join(d, name)).st_uid >= UID_BASE:
                    out.append(os.path.join(d, name))
            except FileNotFoundError:
                pass
    return out


@pytest.fixture(scope="module")
def canaries(tmp_path_factory):
    private = tmp_path_factory.mktemp("canary")
    (private / "data.txt").write_text("private canary\n")
    public = Path(tempfile.mkdtemp(prefix="r1flow-canary-"))
    public.chmod(0o755)
    (public / "file.txt").write_text("public canary\n")
    (public / "file.txt").chmod(0o644)
    (public / "sub").mkdir(mode=0o755)
    (public / "sub" / "x").write_text("x\n")
    home = Path.home() / f".r1flow-canary-{os.getpid()}"
    home.write_text("home canary\n")
    yield {"private": private, "public": public, "home": home}
    shutil.rmtree(public)
    home.unlink()


@pytest.fixture(autouse=True)
def unharmed(canaries, request):
    if "canaries" not in request.fixturenames:
        yield
        return
    paths = list(canaries.values())
    before = _snapshot(paths)
    yield
    assert _snapshot(paths) == before, "a file outside the sandbox changed"
    assert _stray_files() == [], "a sandbox uid left files in /tmp or /dev/shm"
    assert _sandbox_pids() == [], "a sandbox process outlived its run"


def _fmt(program: str, canaries) -> str:
    return program.format(**{k: str(v) for k, v in canaries.items()}, secret=SECRET)


def _score(program: str, tests: list[dict], canaries, limits: RLimits = FAST) -> float:
    verdicts = run_tests(_fmt(program, canaries), tests, budget_s=3.0, base=limits)
    return sum(verdicts) / len(verdicts)


# ----------------------------------------------------------------------------- hostile programs
HOSTILE = {
    "infinite loop": "while True: pass\nprint('ok')",
    "busy loop in C": "print(sum(range(10**12)) and 'ok')",
    "sleep forever": "import time\ntime.sleep(10**6)\nprint('ok')",
    "sigterm ignored": "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: pass",
    "fork bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
    "os.system": "import os\nos.system('echo pwned > {public}/file.txt; echo pwned > {home}')",
    "subprocess shell": "import subprocess\nsubprocess.run(['sh', '-c', 'rm -rf {public} {private}; echo x > /tmp/pwned'])",
    "memory bomb": "b = bytearray(10**10)\nprint('ok')",
    "list growth": "a = []\nwhile True:\n    a.append(' ' * 10**6)",
    "write absolute": "open('{public}/file.txt', 'w').write('pwned')",
    "write ../": "open('../pwned-by-sandbox', 'w').write('pwned')",
    "write home": "open('{home}', 'a').write('pwned')",
    "write /tmp and /dev/shm": "open('/tmp/pwned-by-sandbox', 'w')\nopen('/dev/shm/pwned', 'w')",
    "rmtree": "import shutil\nshutil.rmtree('{public}')\nshutil.rmtree('{private}')",
    "remove": "import os\nos.remove('{public}/file.txt')",
    "chmod outside": "import os\nos.chmod('{public}/file.txt', 0o777)",
    "kill parent": "import os\nos.kill(os.getppid(), 9)",
    "kill everything": "import os\nos.killpg(0, 9)\nos.kill(-1, 9)",
    "ctypes kill parent": "import ctypes, os\nctypes.CDLL(None).kill(os.getppid(), 9)",
    "segfault": "import ctypes\nctypes.string_at(0)",
    "recursion": "def f(n):\n    return f(n + 1)\nf(0)",
    "deep recursion": "import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)\nf(0)",
    "huge file": "open('big', 'wb').write(b'x' * 50 * 2**20)\nprint('ok')",
    "many files": "fs = [open(f'f{{i}}', 'w') for i in range(10000)]\nprint('ok')",
    "thread bomb": "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(100,)).start()",
    "chdir and write": "import os\nos.chdir('{public}')\nopen('new.txt', 'w').write('pwned')",
    "chmod workdir 000": "import os\nos.mkdir('d')\nopen('d/f', 'w').write('x')\nos.chmod('d', 0)\nos.chmod('.', 0)",
    "symlink out": "import os\nos.symlink('{public}/file.txt', 'link')\nopen('link', 'w').write('pwned')",
    "hardlink out": "import os\nos.link('{public}/file.txt', 'hl')\nopen('hl', 'w').write('pwned')",
    "setsid daemon": "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(100)\nprint('ok', end='')\nos._exit(3)",
    "raise privilege": "import os\nos.setuid(0)\nprint('ok')",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_program_scores_zero_and_harms_nothing(name, canaries):
    t0 = time.monotonic()
    assert _score(HOSTILE[name], OK, canaries) == 0.0
    # Ended by the 3 s budget, not by the program (those that wait at all wait >= 100 s). The margin
    # above 3 s is for bwrap start-up and tear-down on a loaded box: CI once measured 3.50 s.
    assert time.monotonic() - t0 < 10.0


def test_process_limit_is_enforced_before_fork_bomb_is_trusted(canaries):
    # NPROC is per uid and not enforced for root: check it bites for the sandbox uid
    prog = (
        "import os, time\nn = 0\nfor _ in range(40):\n    try:\n        pid = os.fork()\n"
        "    except OSError:\n        continue\n    if pid == 0:\n        time.sleep(5)\n        os._exit(0)\n"
        "    n += 1\nprint(n)"
    )
    res = run_program(prog, limits=FAST)
    assert res.status == "ok" and 1 <= int(res.stdout) < FAST.nproc


def test_environment_is_scrubbed(canaries, monkeypatch):
    monkeypatch.setenv("R1FLOW_TEST_SECRET", SECRET)
    prog = (
        "import os\nprint(dict(os.environ))\nprint(open('/proc/self/environ').read())\n"
        "for p in os.listdir('/proc'):\n    if p.isdigit():\n        print(p, open(f'/proc/{p}/environ').read())"
    )
    res = run_program(prog, limits=FAST)
    assert res.status == "ok", res.stderr
    assert SECRET not in res.stdout + res.stderr
    assert "{'PATH': '/usr/bin:/bin', 'LANG': 'C.UTF-8', 'HOME': '/tmp', 'PWD': '/tmp'}" in res.stdout


def test_tcp_connect_never_reaches_a_local_listener(canaries):
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        srv.settimeout(0.2)
        port = srv.getsockname()[1]
        prog = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\ns.sendall(b'x')\nprint('ok')"
        res = run_program(prog, limits=FAST)
        assert res.status == "error" and "Error" in res.stderr
        with pytest.raises(TimeoutError):
            srv.accept()


def test_udp_and_dns_go_nowhere(canaries):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(0.2)
        port = rx.getsockname()[1]
        prog = (
            "import socket\ntry:\n    socket.getaddrinfo('example.com', 80)\n    print('resolved')\n"
            "except OSError as e:\n    print('no dns')\n"
            f"s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'x', ('127.0.0.1', {port}))"
        )
        res = run_program(prog, limits=FAST)
        assert res.stdout == "no dns\n"  # the datagram goes to the sandbox's own loopback
        with pytest.raises(TimeoutError):
            rx.recvfrom(10)


def test_gigabytes_of_output_are_capped_and_prompt(canaries):
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res = run_program("while True: print('x' * 10**6)", limits=FAST)
    assert res.status == "output_limit" and res.wall_s < 1.0
    assert len(res.stdout) <= FAST.stdout_bytes
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 50 * 1024  # KiB


def test_cleanup_survives_chmod_000(canaries):
    prog = "import os\nprint(os.getcwd(), os.listdir('.'))\nos.makedirs('a/b')\nos.chmod('a', 0)\nos.chmod('.', 0)"
    first, second = run_program(prog), run_program(prog)
    assert first.status == second.status == "ok", first.stderr
    assert first.stdout == second.stdout == "/tmp []\n"  # a private, empty tmpfs each run


def test_daemonised_grandchild_is_killed(canaries):
    prog = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(100)\nprint(os.getpid())"
    res = run_program(prog, limits=FAST)
    assert res.status == "ok"
    # the unharmed fixture asserts that no process of a sandbox uid remains


# ----------------------------------------------------------------------------- forging a pass
FORGERIES = {
    "sys.exit(0) before asserts": "def f(x):\n    return 2 * x\nimport sys\nsys.exit(0)",
    "os._exit(0) before asserts": "def f(x):\n    return 2 * x\nimport os\nos._exit(0)",
    "guessed markers on every fd": (
        "import os\nfor fd in range(1, 20):\n    try:\n        os.write(fd, b'ready\\n0 0 1\\n0 1 1\\n')\n"
        "    except OSError:\n        pass\ndef f(x):\n    return 0"
    ),
    "replace exec and os.write": (
        "import builtins, os\nbuiltins.exec = lambda *a, **k: None\n"
        "_w = os.write\nos.write = lambda fd, b: _w(fd, b.replace(b' 0\\n', b' 1\\n'))\ndef f(x):\n    return 0"
    ),
    "trace hook": "import sys\nsys.settrace(lambda *a: None)\ndef f(x):\n    return 0",
    "exit from atexit": "import atexit, os\natexit.register(os._exit, 0)\ndef f(x):\n    raise SystemExit(0)",
}


@pytest.mark.parametrize("name", list(FORGERIES))
def test_assert_verdicts_cannot_be_forged_cheaply(name, canaries):
    assert _score(FORGERIES[name], ASSERTS, canaries) == 0.0


# ----------------------------------------------------------------------------- honest programs
def test_correct_programs_score_one(canaries):
    assert (
        _score(
            "a, b = map(int, input().split())\nprint(a + b)", [{"input": "2 3\n", "output": "5"}], canaries
        )
        == 1.0
    )
    assert _score("def f(x):\n    return 2 * x", ASSERTS, canaries) == 1.0


def test_partial_credit_is_the_fraction_passed(canaries):
    tests = [
        {"input": "2\n", "output": "4\n"},
        {"input": "3\n", "output": "9  \n\n"},  # trailing whitespace and blank lines do not count
        {"input": "0\n", "output": "1"},
        {"assert": "assert f(2) == 4"},
        {"assert": "assert f(5) == 11"},
    ]
    prog = (
        "import sys\ndef f(x):\n    return x * x\ndata = sys.stdin.read()\nif data:\n    print(f(int(data)))"
    )
    assert run_tests(prog, tests, base=FAST) == [True, True, False, True, False]


def test_run_result_fields():
    res = run_program("import sys\nprint(sys.stdin.read().upper(), end='')\nsys.exit(3)", "abc")
    assert (res.returncode, res.stdout, res.status, res.timed_out) == (3, "ABC", "error", False)
    res = run_asserts("x = 1", ["assert x == 1", "assert x == 2", "1/0"])
    assert (res.status, res.passed) == ("ok", [True, False, False])


def test_isolation_active_here():
    iso = isolation()
    if os.geteuid() == 0:
        assert iso.drop_uid and iso.seccomp and iso.cgroup in ("v1", "v2")
    assert sandbox.sandbox_programs_per_s(n=10) > 0


def test_parent_alive_and_nothing_left_at_the_end():
    os.kill(os.getppid(), 0)  # raises if our parent died
    assert _sandbox_pids() == []
    assert not [n for n in os.listdir(tempfile.gettempdir()) if n.startswith("r1flow-sbx-")]
