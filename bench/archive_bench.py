#!/usr/bin/env python3
"""archive_bench.py - what a message with a small zip attachment costs
postern with the attachments module on: archives are walked in helper
processes (filters/attach_jail.c), so this is the figure that shows what
the hand-off costs.

smtplib clients (threads, one connection each, a transaction after
another) send N messages of ~3 KiB, each a text part and a zip of three
deflated members (one a blocked .exe, stripped), to postern with
bench/attach_policy.conf, relaying to smtp-sink on loopback. Prints wall
time and postern's CPU per message: utime+stime of postern, of its live
children (the archive helpers) and of those it reaped, from /proc.

    bench/archive_bench.py BUILD_DIR [MESSAGES] [SESSIONS] [--plain]

--plain sends the same messages without the zip (the module still on), so
the difference of two runs is the archive's cost. Not run by ctest.
"""
import io
import os
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import relay_bench as rb    # noqa: E402  (ports, smtp-sink)

HERE = os.path.dirname(os.path.abspath(__file__))


def message(with_zip):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("notes.txt", "minutes of the meeting\n" * 40)
        z.writestr("data.csv", "a,b,c\n1,2,3\n" * 60)
        z.writestr("setup.exe", b"MZ" + b"\0" * 500)
    att = __import__("base64").encodebytes(buf.getvalue()).replace(
        b"\n", b"\r\n")
    parts = [b"--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"]
    if with_zip:
        parts.append(b"--b\r\nContent-Type: application/zip; name=\"a.zip\""
                     b"\r\nContent-Transfer-Encoding: base64\r\n\r\n" + att)
    return (b"From: a@bench.test\r\nTo: b@sink.test\r\nSubject: zip\r\n"
            b"MIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n" +
            b"".join(parts) + b"--b--\r\n")


def cpu_with_children(pid):
    """utime+stime of pid, of the children it reaped and of those alive
    (the archive helpers, one per filter worker thread)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    reaped = sum(int(x) for x in fields[13:15]) / os.sysconf("SC_CLK_TCK")
    return rb.tree_cpu_seconds(pid) + reaped


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    plain = "--plain" in sys.argv
    build = args[0]
    n = int(args[1]) if len(args) > 1 else 2000
    sessions = int(args[2]) if len(args) > 2 else 4
    with open(os.path.join(HERE, "attach_policy.conf")) as f:
        extra = f.read()
    msg = message(not plain)
    tmp = tempfile.mkdtemp(prefix="archive-bench-")
    procs = []
    try:
        sink_port, port = rb.free_port(), rb.free_port()
        procs.append(rb.start_sink(sink_port))
        rb.wait_port(sink_port)
        pst = rb.start_postern(build, tmp, port, sink_port, extra)
        procs.append(pst)
        rb.wait_port(port)
        per = [n // sessions + (1 if i < n % sessions else 0)
               for i in range(sessions)]

        def client(k):
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as c:
                for _ in range(k):
                    c.sendmail("a@bench.test", ["b@sink.test"], msg)

        cpu0 = cpu_with_children(pst.pid)
        t0 = time.monotonic()
        ts = [threading.Thread(target=client, args=(k,)) for k in per]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        path = os.path.join(tmp, "postern.log")
        done = rb.wait_delivered(path, n)
        wall = time.monotonic() - t0
        cpu = cpu_with_children(pst.pid) - cpu0
        with open(path, "rb") as f:
            stripped = f.read().count(b"action=strip")
        print("archive=%s messages=%d sessions=%d delivered=%d stripped=%d "
              "wall=%.2fs (%.0f/s) postern_cpu=%.2fs (%.3f ms/msg)"
              % ("no" if plain else "zip", n, sessions, done, stripped,
                 wall, done / wall, cpu, cpu * 1000 / max(done, 1)))
    finally:
        rb.stop_all(procs, tmp)


if __name__ == "__main__":
    main()
