#!/usr/bin/env python3
"""session_mem_bench.py - postern's memory per SMTP session under load.

Two loads against one postern (relaying to smtp-sink on loopback):

  idle   IDLE sessions open at once, each greeted and past EHLO, then
         left waiting for a command;
  big    BIG sessions at once, each in DATA streaming a SIZE_MB message
         in 64 KiB writes, all interleaved, then ending it and waiting
         for the 250.

For each: postern's VmRSS (sampled every 0.1 s, peak kept) minus its
VmRSS just before the load, divided by the sessions; for idle, also the
process's whole VmRSS with them open (issue 15's target: 10,000 idle
sessions in under 50 MB); for big with one session, the growth is the
20 MB message's (target: under 8 MB). VmHWM is printed too.

    bench/session_mem_bench.py BUILD_DIR [--idle 500] [--big 100]
                               [--size-mb 20] [--timeout 600]
    bench/session_mem_bench.py BUILD_DIR --idle 10000 --big 1

Every process started is ended by PID and the temp dir removed. Not run
by ctest.
"""
import argparse
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_bench import (Sink, free_port, raise_nofile,  # noqa: E402
                        status_kib, user_line, wait_port)


def read_reply(s):
    """Read one complete (possibly multiline) SMTP reply."""
    buf = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("connection closed")
        buf += chunk
        lines = buf.split(b"\r\n")
        for ln in lines[:-1]:
            if len(ln) >= 4 and ln[3:4] == b" ":
                return ln
        # incomplete; keep reading


def cmd(s, line, want):
    s.sendall(line + b"\r\n")
    r = read_reply(s)
    if not r.startswith(want):
        raise RuntimeError("%r -> %r" % (line, r))


class RssPeak(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak = pid, 0
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.wait(0.1):
            self.peak = max(self.peak, status_kib(self.pid, "VmRSS"))

    def finish(self):
        self.stop_ev.set()
        self.join()
        return max(self.peak, status_kib(self.pid, "VmRSS"))


def settle_rss(pid, secs=1.0):
    time.sleep(secs)
    return status_kib(pid, "VmRSS")


def idle_load(port, pid, n):
    base = settle_rss(pid)
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), 10)
            socks.append(s)
            read_reply(s)
            cmd(s, b"EHLO idle.bench.test", b"250")
        rss = settle_rss(pid)
    finally:
        for s in socks:
            s.close()
    return base, rss


def big_load(port, pid, n, size_mb, timeout):
    base = settle_rss(pid)
    socks = []
    line = b"x" * 76 + b"\r\n"
    chunk = line * (65536 // len(line))
    total = size_mb * 1024 * 1024 // len(chunk) * len(chunk)
    mon = RssPeak(pid)
    mon.start()
    t0 = time.monotonic()
    try:
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port), 30)
            socks.append(s)
            read_reply(s)
            cmd(s, b"EHLO big.bench.test", b"250")
            cmd(s, b"MAIL FROM:<from@bench.test> SIZE=%d" % total, b"250")
            cmd(s, b"RCPT TO:<to%d@sink.test>" % i, b"250")
            cmd(s, b"DATA", b"354")
            s.sendall(b"Subject: big %d\r\n\r\n" % i)
            s.setblocking(False)
        sel = selectors.DefaultSelector()
        sent = {}
        for s in socks:
            sel.register(s, selectors.EVENT_WRITE)
            sent[s] = 0
        view = memoryview(chunk)
        while sent and time.monotonic() - t0 < timeout:
            for key, _ in sel.select(1.0):
                s = key.fileobj
                off = sent[s] % len(chunk)
                try:
                    k = s.send(view[off:])
                except BlockingIOError:
                    continue
                sent[s] += k
                if sent[s] >= total:
                    sel.unregister(s)
                    del sent[s]
        if sent:
            raise RuntimeError("timeout while streaming")
        t_stream = time.monotonic() - t0
        for s in socks:
            s.setblocking(True)
            s.settimeout(timeout)
            s.sendall(b".\r\n")
        for s in socks:
            r = read_reply(s)
            if not r.startswith(b"250"):
                raise RuntimeError("end of data -> %r" % r)
        t_done = time.monotonic() - t0
    finally:
        peak = mon.finish()
        for s in socks:
            s.close()
    return base, peak, total, t_stream, t_done


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--idle", type=int, default=500)
    ap.add_argument("--big", type=int, default=100)
    ap.add_argument("--size-mb", type=int, default=20)
    ap.add_argument("--timeout", type=int, default=600)
    a = ap.parse_args()
    sessions = max(5000, a.idle + a.big + 100)
    if raise_nofile(sessions + 1024) < a.idle + a.big + 64:
        sys.exit("session_mem_bench.py: RLIMIT_NOFILE too low for %d "
                 "sessions" % (a.idle + a.big))
    tmp = tempfile.mkdtemp(prefix="mem-bench-")
    sink = pst = None
    try:
        sink = Sink(tmp)
        port = free_port()
        conf = os.path.join(tmp, "postern.conf")
        with open(conf, "w") as f:
            f.write("""hostname = "bench.test";
%s
listeners = ( { address = "127.0.0.1"; port = %d; } );
limits = { sessions = %d; sessions_per_ip = %d; message_size = "%dM";
           recipients = 10; };
relay = { trusted_networks = [ "127.0.0.0/8" ]; };
queue = { directory = "%s/spool"; };
delivery = { default_route = "smtp:[127.0.0.1]:%d"; concurrency = 100;
             destination_concurrency = 20; };
logging = { level = "info"; };
""" % (user_line(), port, sessions, sessions, a.size_mb + 2, tmp,
       sink.port))
        os.chmod(tmp, 0o755)
        log = open(os.path.join(tmp, "postern.log"), "wb")
        pst = subprocess.Popen([os.path.join(a.build, "bin", "postern"),
                                "-c", conf], stdout=log, stderr=log)
        wait_port(port)
        start_rss = status_kib(pst.pid, "VmRSS")
        base, rss = idle_load(port, pst.pid, a.idle)
        print("idle: %d sessions past EHLO: VmRSS %.1f -> %.1f MiB "
              "(%.1f MB), %.1f KiB per session"
              % (a.idle, base / 1024, rss / 1024, rss * 1024 / 1e6,
                 (rss - base) / a.idle), flush=True)
        base, peak, total, t_stream, t_done = big_load(
            port, pst.pid, a.big, a.size_mb, a.timeout)
        print("big: %d sessions each in DATA with a %.1f MiB message: "
              "VmRSS %.1f -> peak %.1f MiB, %.1f KiB per session "
              "(streamed in %.1fs, all 250 after %.1fs)"
              % (a.big, total / 1048576, base / 1024, peak / 1024,
                 (peak - base) / a.big, t_stream, t_done), flush=True)
        end = time.monotonic() + a.timeout
        while sink.count < a.big and time.monotonic() < end:
            time.sleep(0.1)
        print("relayed to smtp-sink: %d of %d; postern VmRSS at start %.1f "
              "MiB, VmHWM %.1f MiB"
              % (sink.count, a.big, start_rss / 1024,
                 status_kib(pst.pid, "VmHWM") / 1024))
    finally:
        if pst:
            pst.terminate()
            try:
                pst.wait(30)
            except subprocess.TimeoutExpired:
                pst.kill()
                pst.wait()
        if sink:
            sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
