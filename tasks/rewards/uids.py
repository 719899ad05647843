"""Dedicated uids for sandbox runs: one per live run, claimed by an ``flock`` on a slot file.

Not ``nobody``: RLIMIT_NPROC counts every process of a uid, so a shared uid would let one fork bomb
starve concurrent sandboxes (or daemons running as nobody). The slot file holds "1" while a run is
in flight, so a claimer can tell that the previous owner crashed and sweep its leftovers.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import signal
import tempfile
import time

UID_BASE = 1_790_000_000  # far above any real or subordinate (userns) uid range
UID_SLOTS = 512
_LOCK_DIR = os.path.join(tempfile.gettempdir(), "r1flow-sandbox-uids")


class SlotError(RuntimeError):
    """No uid slot could be claimed, or a uid's processes would not die."""


def claim_uid() -> tuple[int, int]:
    """Lock a free slot; returns (uid, lock fd). The lock file holds "1" while a run is in
    flight, so a claimer can tell that the previous owner crashed and sweep its leftovers."""
    os.makedirs(_LOCK_DIR, mode=0o700, exist_ok=True)
    st = os.lstat(_LOCK_DIR)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise SlotError(f"{_LOCK_DIR} must be a directory owned by uid {os.geteuid()} with mode 0700")
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
            kill_uid(UID_BASE + slot)
        os.pwrite(fd, b"1", 0)
        return UID_BASE + slot, fd
    raise SlotError(f"all {UID_SLOTS} sandbox uid slots are in use")


def kill_uid(uid: int) -> None:
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
    raise SlotError(f"processes of sandbox uid {uid} survive SIGKILL")
