#!/usr/bin/env python3
"""tls_bench.py - STARTTLS on both sides: postern against Postfix 3.7.

The client is bench/smtp_tls_load (smtp-source has no STARTTLS), one
connection per session, the downstream its sink mode (STARTTLS offered,
a thread per connection). Both servers have the same ECDSA P-256
certificate, OpenSSL's default protocol (TLS 1.3) and groups, tickets for
resumption (postern: tls.session_tickets; Postfix: tlsmgr's keys, no
smtpd session cache) and STARTTLS to the downstream when offered, which
the sink does (postern: delivery.tls = "may", its default, connections
reused; Postfix: smtp_tls_security_level = may, smtp_tls_connection_reuse
= yes through tlsproxy, its client session cache in smtp_scache; the
sink's handshake count shows TLS was used). Five cases, each at every
concurrency:

  plain           EHLO, QUIT, no TLS: what a connection costs without it
  handshake       EHLO, STARTTLS, full handshake, EHLO, QUIT: new TLS
                  sessions per second (server CPU per session)
  handshake-r     the same, each connection resuming the ticket its
                  session's previous one got (returning clients)
  message         as handshake, plus a SIZE-octet message relayed to the
                  sink: accepted/s, relayed/s, server CPU per message
  message-r       message with resumption

Runs are interleaved (postern, Postfix, postern, ...), each on a fresh
server with an empty queue and a fresh sink; medians and postern/Postfix
ratios are printed. Per run: the generator's rate and its own CPU per
connection (so it is plain whether the generator is the limit), the
server's CPU (/proc, postern's one process with all its threads; Postfix's
master and every process it ran, exited ones through cutime+cstime), the
sink's TLS handshakes (and how many resumed), the load average, and
before each pair of runs the disk's fsync time (peer_bench.fsync_probe).

    bench/tls_bench.py BUILD_DIR [--connections N] [--runs R]
                       [--concurrency 1,20] [--cases handshake,...]
                       [--size 1024] [--run-timeout S] [--total-timeout S]
    bench/tls_bench.py BUILD_DIR --callgrind [--connections N] [--cases ...]
    bench/tls_bench.py BUILD_DIR --strace [--connections N] [--cases ...]

--callgrind and --strace measure postern alone, one session in flight,
with figures that do not depend on the machine's load: the instructions
its process runs per connection (valgrind's callgrind, all threads; a run
of N connections less a run of none, so start and stop cancel out), and
its system calls per connection (strace -f -c attached to every thread).

Must run as root (Postfix's master). Reuses bench/peer_bench.py's process
accounting and its private Postfix instance; nothing system-wide is
touched. Not run by ctest.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_bench as pb            # noqa: E402

CASES = {
    # name: (a message?, resume?, TLS?)
    "plain": (False, False, False),
    "handshake": (False, False, True),
    "handshake-r": (False, True, True),
    "message": (True, False, True),
    "message-r": (True, True, True),
}


KEYS = {"p256": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "rsa2048": ["-newkey", "rsa:2048"]}
KEY = "p256"                        # --key


def make_cert(d):
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509"] + KEYS[KEY] +
                   ["-nodes", "-days", "2", "-keyout", key, "-out", cert,
                    "-subj", "/CN=bench.test",
                    "-addext", "subjectAltName=DNS:bench.test"],
                   check=True, capture_output=True, timeout=60)
    os.chmod(key, 0o644)            # read by postern after its drop too
    return cert, key


class TlsSink:
    """smtp_tls_load sink on a free port; counts messages and handshakes."""

    def __init__(self, tool, tmp, cert, key):
        self.port = pb.free_port()
        self.count = self.tls = self.resumed = 0
        self.proc = subprocess.Popen(
            [tool, "sink", "-c", cert, "-k", key,
             "127.0.0.1:%d" % self.port],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=tmp)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        try:
            pb.wait_port(self.port)
        except RuntimeError:
            self.stop()
            raise

    def _read(self):
        rx = re.compile(rb"mesg=(\d+) tls=(\d+) resumed=(\d+)")
        buf = b""
        while True:
            chunk = self.proc.stdout.read1(4096)
            if not chunk:
                return
            buf = (buf + chunk)[-512:]
            m = rx.findall(buf)
            if m:
                self.count, self.tls, self.resumed = map(int, m[-1])

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(5)


class Postern(pb.Postern):
    def config(self, tmp, sink_port):
        return super().config(tmp, sink_port) + """\
tls = { certificates = ( { cert = "%s/cert.pem"; key = "%s/key.pem"; } ); };
""" % (tmp, tmp)


class Postfix(pb.Postfix):
    MASTER_CF = pb.Postfix.MASTER_CF + """\
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
tlsproxy  unix  -       -       n       -       0       tlsproxy
"""
    MAIN_CF = pb.Postfix.MAIN_CF + """\
smtpd_tls_cert_file = %(d)s/../cert.pem
smtpd_tls_key_file = %(d)s/../key.pem
smtpd_tls_security_level = may
smtpd_tls_session_cache_timeout = 3600s
smtp_tls_security_level = may
smtp_tls_session_cache_database = btree:${data_directory}/smtp_scache
smtp_tls_connection_reuse = yes
"""


def load_run(tool, port, conc, n, size, resume, timeout, tls=True):
    argv = [tool, "send", "-s", str(conc), "-m", str(n), "-d",
            str(timeout), "-l", str(size),
            "-f", "from@bench.test", "-t", "to@sink.test"]
    if resume:
        argv.append("-r")
    if not tls:
        argv.append("-P")
    argv.append("127.0.0.1:%d" % port)
    r = subprocess.run(argv, capture_output=True, timeout=timeout + 60)
    out = r.stdout.decode()
    kv = dict(re.findall(r"(\w+)=([^\s\"]+|\"[^\"]*\")", out))
    if r.returncode != 0 or "done" not in kv:
        raise RuntimeError("smtp_tls_load: %s %s" % (out, r.stderr.decode()))
    return {k: float(v) for k, v in kv.items() if k != "error"}


def one_run(server, tool, case, n, conc, size, timeout):
    msg, resume, tls = CASES[case]
    tmp = tempfile.mkdtemp(prefix="tls-bench-")
    sink, started, sampler = None, False, None
    try:
        cert, key = make_cert(tmp)
        sink = TlsSink(tool, tmp, cert, key)
        started = True
        server.start(tmp, sink.port)
        sampler = pb.Sampler(server.root)
        sampler.sample()
        sampler.start()
        load0 = os.getloadavg()[0]
        cpu0 = pb.tree_cpu(server.root)
        t0 = time.monotonic()
        g = load_run(tool, server.port, conc, n, size if msg else 0, resume,
                     timeout, tls)
        t_in = time.monotonic() - t0
        end = t0 + timeout
        while msg and sink.count < n and time.monotonic() < end:
            time.sleep(0.01)
        t_all = time.monotonic() - t0
        cpu = pb.tree_cpu(server.root) - cpu0
        sampler.finish()
        done = int(g["done"])
        if done < n:
            raise RuntimeError("%s: %d of %d connections" % (server.name,
                                                             done, n))
        if msg and sink.count < n:
            raise RuntimeError("%s: only %d of %d relayed within %ds"
                               % (server.name, sink.count, n, timeout))
        if msg and sink.tls == 0:
            raise RuntimeError("%s: relayed without TLS" % server.name)
        if resume and g["resumed"] < done - conc:
            raise RuntimeError("%s: only %d of %d connections resumed"
                               % (server.name, g["resumed"], done))
        return {"rate": done / t_in,
                "relayed": sink.count / t_all if msg else 0.0,
                "cpu_ms": cpu * 1000 / done,
                "gen_cpu_ms": g["cpu_ms_per_conn"],
                "gen_cpu_share": g["cpu"] / t_in,
                "resumed": g["resumed"] / done,
                "sink_tls": sink.tls, "sink_resumed": sink.resumed,
                "rss": sampler.rss, "nproc": sampler.nproc,
                "load": load0}
    finally:
        if sampler and sampler.is_alive():
            sampler.stop_ev.set()
            sampler.join()
        if started:
            server.stop(sampler.seen if sampler else {})
            server.root = None
        if sink:
            sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def callgrind_postern(build, tmp):
    """A Postern that runs under callgrind; (server, its output file).
    The file is made now for postern's user, who writes it at exit."""
    out = os.path.join(tmp, "postern.cg")
    wrapper = os.path.join(tmp, "postern-callgrind")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nexec valgrind -q --tool=callgrind "
                "--callgrind-out-file=%s %s \"$@\"\n"
                % (out, os.path.abspath(os.path.join(build, "bin",
                                                      "postern"))))
    os.chmod(wrapper, 0o755)
    open(out, "w").close()
    if os.geteuid() == 0:
        shutil.chown(out, "postern", "postern")
    s = Postern(build)
    s.bin = wrapper
    return s, out


def callgrind_ir(path):
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError("no totals in %s" % path)


def deterministic(a, tool, cases):
    """--callgrind / --strace: per connection, postern only, c=1."""
    for case in cases:
        msg, resume, tls = CASES[case]
        size = a.size if msg else 0
        if a.callgrind:
            ir = []
            for n in (0, a.connections):
                tmp = tempfile.mkdtemp(prefix="tls-bench-cg-")
                os.chmod(tmp, 0o777)
                sink = None
                s, out = callgrind_postern(a.build, tmp)
                try:
                    cert, key = make_cert(tmp)
                    sink = TlsSink(tool, tmp, cert, key)
                    s.start(tmp, sink.port)
                    if n:
                        load_run(tool, s.port, 1, n, size, resume,
                                 a.run_timeout, tls)
                        end = time.monotonic() + a.run_timeout
                        while msg and sink.count < n and \
                                time.monotonic() < end:
                            time.sleep(0.05)
                    s.stop()
                    ir.append(callgrind_ir(out))
                finally:
                    s.stop()
                    if sink:
                        sink.stop()
                    shutil.rmtree(tmp, ignore_errors=True)
            print("%-11s postern instructions per connection: %d"
                  % (case, (ir[1] - ir[0]) // a.connections), flush=True)
        if a.strace:
            tmp = tempfile.mkdtemp(prefix="tls-bench-st-")
            sink, st, s = None, None, Postern(a.build)
            try:
                cert, key = make_cert(tmp)
                sink = TlsSink(tool, tmp, cert, key)
                s.start(tmp, sink.port)
                load_run(tool, s.port, 1, 10, size, resume, a.run_timeout,
                         tls)
                out = os.path.join(tmp, "strace")
                argv = ["strace", "-f", "-c", "-o", out]
                for t in os.listdir("/proc/%d/task" % s.root):
                    argv += ["-p", t]
                st = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
                time.sleep(1.0)
                n0 = sink.count
                load_run(tool, s.port, 1, a.connections, size, resume,
                         a.run_timeout, tls)
                end = time.monotonic() + a.run_timeout
                while msg and sink.count < n0 + a.connections and \
                        time.monotonic() < end:
                    time.sleep(0.05)
                st.send_signal(2)
                st.wait(30)
                st = None
                calls, top = 0, []
                with open(out) as f:
                    for line in f:
                        tok = line.split()
                        if len(tok) >= 5 and tok[0][0].isdigit():
                            if tok[-1] == "total":
                                calls = int(tok[3])
                            else:
                                top.append((int(tok[3]), tok[-1]))
                top.sort(reverse=True)
                print("%-11s postern system calls per connection: %.1f (%s)"
                      % (case, calls / a.connections, ", ".join(
                          "%s %.1f" % (name, k / a.connections)
                          for k, name in top[:6])), flush=True)
            finally:
                if st:
                    st.send_signal(2)
                    st.wait(30)
                s.stop()
                if sink:
                    sink.stop()
                shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build")
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--concurrency", default="1,20")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--run-timeout", type=int, default=180)
    ap.add_argument("--total-timeout", type=int, default=3600)
    ap.add_argument("--key", choices=sorted(KEYS), default="p256",
                    help="the servers' (and the sink's) key")
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--strace", action="store_true")
    a = ap.parse_args()
    global KEY
    KEY = a.key
    if os.geteuid() != 0:
        sys.exit("tls_bench.py: must run as root (Postfix's master)")
    tool = os.path.abspath(os.path.join(a.build, "bin", "smtp_tls_load"))
    for t in (tool, shutil.which("postfix"), shutil.which("openssl")):
        if not t or not os.path.exists(t):
            sys.exit("tls_bench.py: %s not found" % t)
    cases = a.cases.split(",")
    for c in cases:
        if c not in CASES:
            sys.exit("tls_bench.py: unknown case %s" % c)
    if a.callgrind or a.strace:
        deterministic(a, tool, cases)
        return
    concs = [int(c) for c in a.concurrency.split(",")]
    servers = [Postern(a.build), Postfix()]
    deadline = time.monotonic() + a.total_timeout
    res, probes = {}, []
    for case in cases:
        for c in concs:
            for i in range(a.runs):
                probes.append(pb.fsync_probe())
                for s in servers:
                    if time.monotonic() > deadline:
                        sys.exit("tls_bench.py: total timeout reached")
                    r = one_run(s, tool, case, a.connections, c, a.size,
                                a.run_timeout)
                    res.setdefault((case, c, s.name), []).append(r)
                    print("%-11s c=%-3d run %d %-7s %7.0f/s relayed %7.0f/s "
                          "cpu %.3f ms/conn resumed %.2f | generator %.3f "
                          "ms/conn (%.0f%% of a core) | sink tls %d "
                          "resumed %d | load %.2f fsync %.2f ms"
                          % (case, c, i + 1, s.name, r["rate"], r["relayed"],
                             r["cpu_ms"], r["resumed"], r["gen_cpu_ms"],
                             r["gen_cpu_share"] * 100, r["sink_tls"],
                             r["sink_resumed"], r["load"], probes[-1]),
                          flush=True)

    def med(k, key):
        return statistics.median(r[key] for r in res[k])

    print()
    print("%d connections per run, %d runs per server, medians [min-max]; "
          "message size %d; %s key" % (a.connections, a.runs, a.size,
                                       a.key))
    hdr = ("case", "conc", "server", "conns/s", "relayed/s", "server CPU "
           "ms/conn", "generator CPU ms/conn", "generator % of a core",
           "resumed")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "|".join("---" for _ in hdr) + "|")
    p, q = servers[0].name, servers[1].name
    for case in cases:
        for c in concs:
            for s in servers:
                rs = res[(case, c, s.name)]

                def rng(key, fmt, scale=1.0):
                    v = [r[key] * scale for r in rs]
                    return (fmt % statistics.median(v) + " [" + fmt % min(v)
                            + "-" + fmt % max(v) + "]")
                print("| %s | %d | %s | %s | %s | %s | %s | %s | %.2f |" % (
                    case, c, s.name, rng("rate", "%.0f"),
                    rng("relayed", "%.0f") if CASES[case][0] else "-",
                    rng("cpu_ms", "%.3f"), rng("gen_cpu_ms", "%.3f"),
                    rng("gen_cpu_share", "%.0f", 100),
                    med((case, c, s.name), "resumed")))
            kp, kq = (case, c, p), (case, c, q)
            print("| %s | %d | postern/Postfix | %.2f | %s | %.2f | | | |" % (
                case, c, med(kp, "rate") / med(kq, "rate"),
                "%.2f" % (med(kp, "relayed") / med(kq, "relayed"))
                if CASES[case][0] else "-",
                med(kp, "cpu_ms") / med(kq, "cpu_ms")))
    print("\nfsync of a new 1 KiB file before each pair, ms: median %.2f "
          "[%.2f-%.2f]; load average (1 min) at the runs' starts: "
          "%.2f-%.2f" % (statistics.median(probes), min(probes), max(probes),
                         min(r["load"] for v in res.values() for r in v),
                         max(r["load"] for v in res.values() for r in v)))


if __name__ == "__main__":
    main()
