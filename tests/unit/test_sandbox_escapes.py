# ruff: noqa: F811  (the fixtures imported from test_sandbox are used as arguments)
"""Escapes and forgeries found against the old sandbox (issue 10), each now scoring what the program
honestly earns (0 for a non-solution), changing nothing outside and leaving nothing behind (the
``unharmed`` fixture of test_sandbox.py checks files, stray files and processes after each test).

Assert tests are ``f(2) == 4``, ``f(3) == 9``, ``f(10) == 100``; no program here computes squares.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from test_sandbox import FAST, SECRET, _score, canaries, unharmed  # noqa: F401

from tasks.rewards.code import run_tests
from tasks.rewards.sandbox import run_asserts, run_program

SQUARES = [{"assert": "assert f(2) == 4"}, {"assert": "assert f(3) == 9"}, {"assert": "assert f(10) == 100"}]

FORGERIES = {
    "frame walking": (
        "import sys, gc\nseen = []\nfr = sys._getframe()\nwhile fr:\n    seen += [repr(v) for v in fr.f_locals.values()]\n"
        "    fr = fr.f_back\nseen += [o for o in gc.get_objects() if isinstance(o, str)]\n"
        "table = {{}}\nfor s in seen:\n    for part in str(s).split('assert ')[1:]:\n"
        "        call, _, want = part.partition('==')\n        table[call.strip()] = want.strip(\" '\\\")]\")\n"
        "def f(x):\n    return int(table.get(f'f({{x}})', '0'))"
    ),
    "reporter call and forged result lines": (
        "import os, sys\nfor fd in range(3, 40):\n    try:\n        os.write(fd, b'0 4\\n1 9\\n2 100\\n')\n"
        "    except OSError:\n        pass\nfor v in list(sys._getframe(1).f_locals.values()):\n    if callable(v):\n"
        "        try:\n            v(0, 1)\n        except BaseException:\n            pass\ndef f(x):\n    return 0"
    ),
    "monkeypatched builtins": (
        "import builtins\nbuiltins.eval = lambda *a, **k: 4\nbuiltins.repr = lambda *a: '4'\n"
        "builtins.compile = lambda *a, **k: compile('4', 'x', 'eval')\ndef f(x):\n    return 0"
    ),
    "__eq__ always True": (
        "class Any(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
        "    def __repr__(self):\n        return '4'\ndef f(x):\n    return Any(0)"
    ),
    "atexit and forked child after the verdict": (
        "import atexit, os, time\ndef late():\n    if os.fork() == 0:\n        time.sleep(0.3)\n"
        "        for fd in range(1, 40):\n            try:\n                os.write(fd, b'0 4\\n1 9\\n2 100\\n')\n"
        "            except OSError:\n                pass\n        os._exit(0)\natexit.register(late)\n"
        "def f(x):\n    return 0"
    ),
}


@pytest.mark.parametrize("name", list(FORGERIES))
def test_assert_verdicts_cannot_be_forged(name, canaries):
    assert _score(FORGERIES[name], SQUARES, canaries) == 0.0
    honest = "def f(x):\n    return x * x if x < 5 else 0"  # the same tests still score honestly
    assert _score(honest, SQUARES, canaries) == pytest.approx(2 / 3)


def test_expected_outputs_on_the_host_disk_are_invisible(canaries, tmp_path):
    leak = Path("/tmp") / f"r1flow-leak-{os.getpid()}.jsonl"
    leak.write_text(f'{{"input": "7 8", "output": "{SECRET}"}}\n')
    leak.chmod(0o644)
    prog = (
        "import os\nfor d, _, fs in os.walk('/'):\n    for f in fs:\n        try:\n"
        "            t = open(os.path.join(d, f), errors='ignore').read(10**6)\n        except OSError:\n"
        "            continue\n        if '7 8' in t and 'output' in t:\n"
        "            print(t.split('output\": \"')[1].split('\"')[0])"
    )
    try:
        assert run_tests(prog, [{"input": "7 8", "output": SECRET}], budget_s=3.0, base=FAST) == [False]
    finally:
        leak.unlink()


def test_unix_sockets_on_the_host_are_unreachable(canaries, tmp_path):
    path = f"/tmp/r1flow-listener-{os.getpid()}.sock"
    with socket.socket(socket.AF_UNIX) as srv, socket.socket(socket.AF_UNIX) as abstract:
        srv.bind(path)
        os.chmod(path, 0o777)
        abstract.bind(f"\0r1flow-{os.getpid()}")
        for s in (srv, abstract):
            s.listen()
            s.settimeout(0.1)
        prog = (
            f"import socket\nfor a in [{path!r}, '\\0r1flow-{os.getpid()}']:\n    s = socket.socket(socket.AF_UNIX)\n"
            "    try:\n        s.connect(a)\n        s.sendall(b'x')\n        print('sent')\n    except OSError as e:\n"
            "        print(type(e).__name__)"
        )
        try:
            res = run_program(prog, limits=FAST)
            assert res.status == "ok" and "sent" not in res.stdout, res.stdout + res.stderr
            for s in (srv, abstract):
                with pytest.raises(TimeoutError):
                    s.accept()
        finally:
            os.unlink(path)


def _shm_ids() -> set[str]:
    lines = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    return {line.split()[1] for line in lines}


def test_sysv_shared_memory_dies_with_the_run(canaries):
    before = _shm_ids()
    prog = (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nids = [libc.shmget(0, 64 << 20, 0o1777) "
        "for _ in range(6)]\nprint(ids)"
    )
    res = run_program(prog, limits=FAST)
    assert res.status == "ok", res.stderr
    assert _shm_ids() <= before  # the segments lived in the run's own IPC namespace


def test_no_nested_namespaces_and_no_tmpfs_beyond_the_cap(canaries):
    prog = (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nprint(libc.unshare(0x10000000 | 0x20000), "
        "ctypes.get_errno())\nf = open('/tmp/fill', 'wb')\ntry:\n    for _ in range(1024):\n"
        "        f.write(b'x' * 2**20)\nexcept OSError as e:\n    print('stopped', type(e).__name__)"
    )
    res = run_program(prog, limits=FAST)
    assert res.stdout.startswith("-1 1\n"), res.stdout + res.stderr  # EPERM
    assert "stopped" in res.stdout or res.status != "ok"


def test_memory_cap_holds_for_the_whole_tree(canaries):
    prog = (
        "import os, time\nkids = []\nfor i in range(14):\n    pid = os.fork()\n    if pid == 0:\n"
        "        b = bytearray(200 << 20)\n        b[::4096] = b'x' * len(b[::4096])\n"
        "        open(f'/tmp/ok{i}', 'w').close()\n        time.sleep(1.5)\n        os._exit(0)\n    kids.append(pid)\n"
        "time.sleep(1)\nprint(len([n for n in os.listdir('/tmp') if n.startswith('ok')]))"
    )
    res = run_program(prog, limits=FAST)
    held = int(res.stdout) if res.stdout.strip().isdigit() else 0
    assert held * 200 <= FAST.memory_mb, (res.status, res.stdout, res.stderr[-300:])


def test_host_command_lines_are_invisible(canaries):
    sleeper = subprocess.Popen(["sleep", "30", SECRET])
    try:
        prog = (
            "import os\nfor p in os.listdir('/proc'):\n    if p.isdigit():\n        try:\n"
            "            print(open(f'/proc/{p}/cmdline').read())\n        except OSError:\n            pass"
        )
        res = run_program(prog, limits=FAST)
        assert res.status == "ok" and SECRET not in res.stdout
    finally:
        sleeper.kill()
        sleeper.wait()


def test_signals_cannot_reach_another_sandbox(canaries):
    victim: list = []
    t = threading.Thread(
        target=lambda: victim.append(run_program("import time\ntime.sleep(1.0)\nprint('ok')"))
    )
    t.start()
    attacker = "import os\nfor p in range(2, 4 << 15):\n    try:\n        os.kill(p, 9)\n    except OSError:\n        pass"
    res = run_program(attacker + "\nos.kill(-1, 9)", limits=FAST)
    t.join()
    assert victim[0].status == "ok" and victim[0].stdout == "ok\n"
    # the attacker is its namespace's init: kill(-1) finds no one else there (ESRCH -> "error")
    assert res.status in ("signal", "cpu_limit", "ok", "timeout", "error")


def test_assert_values_come_back_as_literals():
    res = run_asserts(
        "def f(x):\n    return {'a': [1, (2.5, None)], 'b': {3}, 'c': b'x', 'd': 1j}",
        ["assert f(0) == {'a': [1, (2.5, None)], 'b': {3}, 'c': b'x', 'd': 1j}", "assert len(f(0)) == 4",
         "assert not f(0)", "assert f(0)['a'][1] == (2.5, None)"],
    )  # fmt: skip
    assert res.passed == [True, True, False, True]
