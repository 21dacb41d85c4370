#!/usr/bin/env python3
"""spf_bench.py - what the spf module costs per message: postern with the
module (its DNS answers cached after the first message) against postern
without it, N messages one connection each from 127.0.0.2, against dnsmasq
on a free loopback port.

    bench/spf_bench.py BUILD_DIR [MESSAGES] [--strace | --callgrind]

Prints per message: the gateway's CPU time, the helpers' CPU time, the
wall-clock time from connect to the 250 after the dot (median; valid only on
a quiet machine), and with --strace the gateway's system calls, all threads
(strace -c attached for the run: deterministic whatever the load; the CPU
and wall-clock figures of such a run carry strace's cost, take them from a
run without it), or with --callgrind the instructions the gateway
executes per message (valgrind's callgrind, the helpers not traced: the
difference between a run of MESSAGES and one of 0 messages, divided by
MESSAGES; deterministic). Not run by
ctest; every process it starts is ended by PID (the e2e harness).
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
import harness  # noqa: E402

RECORDS = ["--txt-record=bench.test,v=spf1 ip4:10.0.0.0/8 "
           "include:_spf.bench.test -all",
           "--txt-record=_spf.bench.test,v=spf1 ip4:127.0.0.2 -all",
           "--local-ttl=3600"]
MSG = (b"From: <a@bench.test>\r\nTo: <u@dest.test>\r\nSubject: bench\r\n"
       b"\r\n" + b"x" * 900 + b"\r\n")


def cpu(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(ppid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == ppid:
                        out.append(int(d))
            except OSError:
                pass
    return out


def one(p):
    t0 = time.monotonic()
    c = p.client(source="127.0.0.2")
    c.greeting()
    c.ehlo("client.bench.test")
    c.cmd("MAIL FROM:<a@bench.test>", 250)
    c.cmd("RCPT TO:<u@dest.test>", 250)
    c.cmd("DATA", 354)
    c.send(harness.dot_stuff(MSG))
    c.expect(250)
    dt = time.monotonic() - t0
    c.quit()
    return dt


def callgrind_wrapper(tmp, build):
    """A script that runs postern under callgrind (its output in /tmp,
    which postern's user can write)."""
    path = os.path.join(tmp, "postern-callgrind")
    with open(path, "w") as f:
        f.write("#!/bin/sh\nexec valgrind -q --tool=callgrind "
                "--callgrind-out-file=/tmp/%s.cg %s/bin/postern \"$@\"\n"
                % (os.path.basename(tmp), build))
    os.chmod(path, 0o755)
    # callgrind creates its file at start (as root) and writes it at exit
    # (as postern's user): create it for that user now
    out = "/tmp/%s.cg" % os.path.basename(tmp)
    open(out, "w").close()
    os.chmod(out, 0o666)
    if os.geteuid() == 0:
        import pwd
        pw = pwd.getpwnam(harness.RUN_AS)
        os.chown(out, pw.pw_uid, pw.pw_gid)
    return path


def callgrind_ir(tmp):
    with open("/tmp/%s.cg" % os.path.basename(tmp)) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    return 0


def run(build, n, spf, use_strace, use_cg=False):
    tmp = tempfile.mkdtemp(prefix="spf-bench-")
    os.chmod(tmp, 0o777)          # callgrind writes as postern's user
    dns = harness.Dnsmasq(tmp, RECORDS)
    conf = {"relay": {"trusted_networks": [], "domains": ["dest.test"]},
            "resolver": dns.resolver(timeout=2000),
            "delivery": {"default_route": "maildir:" +
                         os.path.join(tmp, "mail")},
            "logging": {"level": "info"}}
    if spf:
        conf["filters"] = [{"module": "spf"}]
    binary = os.path.join(build, "bin", "postern")
    if use_cg:
        binary = callgrind_wrapper(tmp, build)
        conf["filters"] = [dict(f, helper=os.path.join(build, "bin",
                                                        "postern-spf"))
                           for f in conf.get("filters", [])] or None
    p = harness.Postern(tmp, conf, binary=binary)
    p.start()
    one(p)                      # warm: the DNS answers enter the cache
    helpers = children(p.proc.pid)
    tr = None
    if use_strace:
        out = os.path.join(tmp, "strace.txt")
        tids = os.listdir("/proc/%d/task" % p.proc.pid)
        argv = ["strace", "-f", "-c", "-o", out]
        for t in tids:
            argv += ["-p", t]
        tr = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
    g0 = cpu(p.proc.pid)
    h0 = sum(cpu(h) for h in helpers)
    lat = [one(p) for _ in range(n)]
    g1 = cpu(p.proc.pid)
    h1 = sum(cpu(h) for h in helpers)
    calls = None
    if tr is not None:
        tr.send_signal(2)
        tr.wait(30)
        with open(out) as f:
            for line in f:
                if line.strip().endswith("total"):
                    calls = int(line.split()[3])
    p.stop()
    dns.stop()
    ir = callgrind_ir(tmp) if use_cg else 0
    return {"ir": ir,
            "gw_ms": (g1 - g0) * 1000 / max(n, 1),
            "helpers_ms": (h1 - h0) * 1000 / max(n, 1),
            "median_ms": statistics.median(lat) * 1000 if lat else 0,
            "syscalls": calls / n if calls is not None else None}


def main():
    build = os.path.abspath(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2].isdigit() \
        else 500
    use_strace = "--strace" in sys.argv
    print("messages=%d load=%s" % (n, open("/proc/loadavg").read().split()[0]))
    if "--callgrind" in sys.argv:
        for spf in (False, True):
            base = run(build, 0, spf, False, True)["ir"]
            full = run(build, n, spf, False, True)["ir"]
            print("spf=%-3s gateway_instructions=%d per message"
                  % ("on" if spf else "off", (full - base) // n))
        return
    for spf in (False, True):
        r = run(build, n, spf, use_strace)
        print("spf=%-3s gateway_cpu=%.3f ms helpers_cpu=%.3f ms "
              "median_wall=%.2f ms%s" % (
                  "on" if spf else "off", r["gw_ms"], r["helpers_ms"],
                  r["median_ms"],
                  " syscalls=%.1f" % r["syscalls"] if r["syscalls"] else ""))


if __name__ == "__main__":
    main()
