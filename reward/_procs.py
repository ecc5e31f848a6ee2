"""Process plumbing for the sandbox: capped pipe draining, group kills, stray sweeps, tree removal."""

from __future__ import annotations

import os
import select
import selectors
import shutil
import signal
import socket
import subprocess
import time

MAX_OUTPUT = 64 * 1024  # bytes kept per stream: the first and last halves
EXIT_GRACE_S = 0.2  # after the program exits, how long stray holders of its pipes may keep them


class Capped:
    """A stream's first and last MAX_OUTPUT/2 bytes, however much is written (a flood cannot OOM us)."""

    def __init__(self) -> None:
        self.head, self.tail, self.dropped = bytearray(), bytearray(), 0

    def add(self, chunk: bytes) -> None:
        half = MAX_OUTPUT // 2
        room = max(half - len(self.head), 0)
        self.head += chunk[:room]
        self.tail += chunk[room:]
        if len(self.tail) > half:
            self.dropped += len(self.tail) - half
            del self.tail[:-half]

    def text(self) -> str:
        cut = f"\n[... {self.dropped} bytes dropped ...]\n".encode() if self.dropped else b""
        return bytes(self.head + cut + self.tail).decode("utf-8", "replace")


def collect(proc: subprocess.Popen, status_fd: int, deadline: float) -> tuple[dict, bool]:
    """Drain stdout, stderr and the status pipe until they close, the deadline passes (-> timed out),
    or the program has exited and stray holders have kept its pipes open past EXIT_GRACE_S."""
    streams = {"out": Capped(), "err": Capped(), "status": Capped()}
    sel = selectors.DefaultSelector()
    for name, fd in (("out", proc.stdout.fileno()), ("err", proc.stderr.fileno()), ("status", status_fd)):
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ, name)
    exited_at = None
    try:
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                return streams, True
            if exited_at is None and exited(proc.pid):
                exited_at = now
            if exited_at is not None and now - exited_at > EXIT_GRACE_S:
                break
            for key, _ in sel.select(min(deadline - now, 0.05)):
                try:
                    chunk = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if chunk:
                    streams[key.data].add(chunk)
                else:
                    sel.unregister(key.fd)
        return streams, False
    finally:
        sel.close()


def collect_report(out_fd: int, err_fd: int, sock: socket.socket, deadline: float) -> tuple[dict, bytes | None, bool]:
    """A warm run: drain stdout and stderr until they close, and read the zygote's one report from `sock`.
    (streams, report, timed out): report None when the deadline passed (timed out) or the socket closed
    first. The zygote reports once every process of the program is dead, so the pipes close right after."""
    streams = {out_fd: Capped(), err_fd: Capped()}
    poller = select.poll()
    for fd in streams:
        os.set_blocking(fd, False)
        poller.register(fd, select.POLLIN)
    poller.register(sock, select.POLLIN)
    report, stop, pipes = None, deadline, len(streams)
    while pipes or report is None:
        now = time.monotonic()
        if now >= stop:
            break
        for fd, _ in poller.poll(max(1, int((stop - now) * 1000))):
            if fd == sock.fileno():
                report = sock.recv(4096) or None
                if report is None:  # the zygote is gone
                    return {"out": streams[out_fd], "err": streams[err_fd]}, None, False
                poller.unregister(sock)
                stop = min(deadline, time.monotonic() + EXIT_GRACE_S)
                continue
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if chunk:
                streams[fd].add(chunk)
            else:
                poller.unregister(fd)
                pipes -= 1
    return {"out": streams[out_fd], "err": streams[err_fd]}, report, report is None


def exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it (WNOWAIT keeps its process group id taken)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def user_processes() -> int:
    """How many processes our uid runs now: RLIMIT_NPROC counts them all when no user namespace is new."""
    uid = os.getuid()
    count = 0
    for entry in os.listdir("/proc"):
        try:
            count += entry.isdigit() and os.stat(f"/proc/{entry}").st_uid == uid
        except OSError:
            pass
    return count


def sweep(token: str) -> None:
    """rlimits-only: kill what escaped the process group (setsid + fork), found by the env token.
    Best effort: a program that clears its environment before detaching escapes this."""
    needle = f"POSTTRAIN_SANDBOX={token}".encode()
    for _ in range(5):
        found = False
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        os.kill(int(entry), signal.SIGKILL)
                        found = True
            except OSError:
                pass
        if not found:
            return
        time.sleep(0.01)


def remove_tree(root: str) -> None:
    """rm -rf root, even after the program chmod-ed its own directories shut."""
    try:
        shutil.rmtree(root)
    except OSError:
        for dirpath, dirnames, _ in os.walk(root):
            for d in dirnames:
                path = os.path.join(dirpath, d)
                if not os.path.islink(path):  # never chmod through a link to outside the sandbox
                    try:
                        os.chmod(path, 0o700)
                    except OSError:
                        pass
        shutil.rmtree(root, ignore_errors=True)
