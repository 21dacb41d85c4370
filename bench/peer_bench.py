#!/usr/bin/env python3
"""peer_bench.py - postern against Postfix 3.7, side by side, on loopback,
and against the ceiling: no gateway at all.

Both relay 1 KiB messages from Postfix's smtp-source (one connection per
message) to smtp-sink, at several concurrencies, runs interleaved
(postern, Postfix, ceiling, postern, Postfix, ceiling, ...), each run on a
fresh instance with an empty queue and a fresh smtp-sink. The ceiling run
is smtp-source sending straight into smtp-sink: what the load generator
and the sink manage on this machine with nothing between them. Prints
medians, ratios to Postfix and to the ceiling, and the load generator's own
CPU (smtp-source's share of a core: near 100% it, not the server, is the
limit):

  accepted/s    messages / wall time of smtp-source
  relayed/s     messages / time from smtp-source's start until smtp-sink
                has received the last one (smtp-sink's own counter)
  CPU ms/msg    utime+stime of every process of the server (postern's one
                process, all threads; Postfix's master and every child it
                ran, the exited ones through the master's cutime+cstime)
                over the same interval, divided by the messages
  peak RSS      sum of VmRSS over the server's processes, sampled every
                0.25 s (postern: also its VmHWM); peak PSS the same with
                shared pages divided among the processes sharing them
  fsync/msg     fsync+fdatasync calls of every server process, counted by
                `strace -f -c` attached to all of them, in one extra run per
                concurrency that is not timed (below 1,000 sessions)
  fsync probe   before each pair of runs, the median time to create,
                write (1 KiB) and fsync a file in /tmp: how fast the shared
                disk is at that moment, since it moves the figures most
  source CPU    smtp-source's user+system time over its wall time (a share
                of one core: it is one process), and per message

At 1,000 sessions and more a run sends at least 5 messages per session
(--messages is raised to that), so that connecting is not all it does.

    bench/peer_bench.py BUILD_DIR [--messages N] [--runs R]
                        [--concurrency 1,20,100,1000] [--size 1024]
                        [--run-timeout S] [--total-timeout S] [--no-strace]
                        [--servers postern,Postfix,ceiling]

Must run as root (Postfix's master starts as root and drops to the
`postfix` user). The Postfix instance lives entirely under a temp dir (its
own config_directory, queue_directory, data_directory and log file,
listening on a free loopback port); it is started with `postfix -c DIR
start` and stopped with `postfix -c DIR stop`, and every process it ran is
then checked gone by PID. No system-wide Postfix is touched. Not run by
ctest.
"""
import argparse
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HZ = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, deadline=30):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            c = socket.create_connection(("127.0.0.1", port), 0.5)
            c.settimeout(5)
            c.recv(512)             # the greeting: the server is serving
            c.sendall(b"QUIT\r\n")
            c.close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d not serving" % port)


def proc_stat(pid):
    """(ppid, own cpu ticks, reaped children's cpu ticks) or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # fields[0] is state (field 3); utime is field 14 -> index 11
    return (int(fields[1]), int(fields[11]) + int(fields[12]),
            int(fields[13]) + int(fields[14]))


def tree(root):
    """root and all its live descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        st = proc_stat(int(d))
        if st:
            children.setdefault(st[0], []).append(int(d))
    out, stack = [], [root]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(children.get(p, ()))
    return out


def tree_cpu(root):
    """CPU seconds of root and its descendants, live and reaped."""
    t = 0
    for p in tree(root):
        st = proc_stat(p)
        if st:
            t += st[1] + st[2]
    return t / HZ


def status_kib(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kib(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    """Peak summed RSS/PSS and process count of a process tree."""

    def __init__(self, root, every=0.25):
        super().__init__(daemon=True)
        self.root, self.every = root, every
        self.stop_ev = threading.Event()
        self.rss = self.pss = self.nproc = 0
        self.seen = {}              # pid -> start time, every one sighted

    def sample(self):
        pids = tree(self.root)
        for p in pids:
            if p not in self.seen:
                self.seen[p] = start_time(p)
        rss = sum(status_kib(p, "VmRSS") for p in pids)
        pss = sum(pss_kib(p) for p in pids)
        self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)
        self.nproc = max(self.nproc, len(pids))

    def run(self):
        while not self.stop_ev.wait(self.every):
            self.sample()

    def finish(self):
        self.stop_ev.set()
        self.join()
        self.sample()


class Sink:
    """smtp-sink on a free port; counts messages it received."""

    def __init__(self, tmp):
        self.port = free_port()
        self.count = 0
        self.proc = subprocess.Popen(
            ["smtp-sink", "-c", "-u", "nobody",
             "127.0.0.1:%d" % self.port, "1000"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=tmp)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        try:
            wait_port(self.port)
        except RuntimeError:
            self.stop()
            raise

    def _read(self):
        rx = re.compile(rb"mesg=(\d+)")
        buf = b""
        while True:
            chunk = self.proc.stdout.read1(4096)
            if not chunk:
                return
            buf = (buf + chunk)[-256:]
            m = rx.findall(buf)
            if m:
                self.count = int(m[-1])

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(5)


class Postern:
    name = "postern"

    def __init__(self, build):
        self.bin = os.path.abspath(os.path.join(build, "bin", "postern"))
        self.proc = None

    def config(self, tmp, sink_port):
        """The config file (tls_bench.py adds a tls section)."""
        return """hostname = "bench.test";
%s
listeners = ( { address = "127.0.0.1"; port = %d; } );
limits = { sessions = 4000; sessions_per_ip = 4000; };
relay = { trusted_networks = [ "127.0.0.0/8" ]; };
queue = { directory = "%s/spool"; };
delivery = { default_route = "smtp:[127.0.0.1]:%d"; concurrency = 100;
             destination_concurrency = 20; };
logging = { level = "info"; };
""" % (user_line(), self.port, tmp, sink_port)

    def start(self, tmp, sink_port):
        self.port = free_port()
        conf = os.path.join(tmp, "postern.conf")
        with open(conf, "w") as f:
            f.write(self.config(tmp, sink_port))
        os.chmod(tmp, 0o755)
        self.log = open(os.path.join(tmp, "postern.log"), "wb")
        self.proc = subprocess.Popen([self.bin, "-c", conf],
                                     stdout=self.log, stderr=self.log)
        self.root = self.proc.pid
        wait_port(self.port)

    def hwm_kib(self):
        return status_kib(self.root, "VmHWM")

    def stop(self, seen=None):
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self.log.close()


class Postfix:
    name = "Postfix"

    MASTER_CF = """\
127.0.0.1:%(port)d inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""
    MAIN_CF = """\
compatibility_level = 3.6
queue_directory = %(d)s/queue
data_directory = %(d)s/data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.test
mydomain = bench.test
myorigin = bench.test
mydestination =
local_recipient_maps =
local_transport = error:local delivery disabled
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:%(sink)d
default_process_limit = 250
default_destination_concurrency_limit = 20
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
in_flow_delay = 0
maillog_file = %(d)s/maillog
maillog_file_prefixes = %(d)s
biff = no
"""

    def start(self, tmp, sink_port):
        self.port = free_port()
        self.root = None
        d = os.path.join(tmp, "postfix")
        self.dir = d
        for sub in ("etc", "queue", "data"):
            os.makedirs(os.path.join(d, sub))
        os.chmod(tmp, 0o755)
        os.chmod(d, 0o755)
        shutil.chown(os.path.join(d, "data"), "postfix")
        with open(os.path.join(d, "etc", "main.cf"), "w") as f:
            f.write(self.MAIN_CF % {"d": d, "sink": sink_port})
        with open(os.path.join(d, "etc", "master.cf"), "w") as f:
            f.write(self.MASTER_CF % {"port": self.port})
        subprocess.run(["postfix", "-c", os.path.join(d, "etc"), "start"],
                       check=True, timeout=60, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        with open(os.path.join(d, "queue", "pid", "master.pid")) as f:
            self.root = int(f.read().strip())
        wait_port(self.port)

    def hwm_kib(self):
        return 0

    def stop(self, seen=None):
        seen = dict(seen or {})
        if self.root is None:       # start failed before the pid file
            pidf = os.path.join(self.dir, "queue", "pid", "master.pid")
            try:
                with open(pidf) as f:
                    self.root = int(f.read().strip())
            except (OSError, ValueError):
                pass
        if self.root is not None:
            for p in tree(self.root):
                seen.setdefault(p, start_time(p))
        subprocess.run(["postfix", "-c", os.path.join(self.dir, "etc"),
                        "stop"], timeout=60, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        left = gone_or_kill(seen)
        if left:
            print("warning: Postfix processes killed after stop: %s"
                  % sorted(left), file=sys.stderr)


class Ceiling:
    """No gateway: smtp-source sends straight to smtp-sink."""
    name = "ceiling"

    def start(self, tmp, sink_port):
        self.port = sink_port
        self.root = os.getpid()     # nothing of its own: CPU 0, RSS 0

    def hwm_kib(self):
        return 0

    def stop(self, seen=None):
        pass


def user_line():
    """postern started as root must be told whom to run as."""
    return 'user = "postern";' if os.geteuid() == 0 else ""


def start_time(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except OSError:
        return None


def alive(pid, started):
    """pid still runs the process we saw (not a reused pid)."""
    return start_time(pid) == started


def gone_or_kill(ids, wait=15):
    """Wait for every process {pid: start time} to end; SIGKILL (by pid)
    the ones left."""
    pids = list(ids)
    end = time.monotonic() + wait
    left = []
    while time.monotonic() < end:
        left = [p for p in pids if alive(p, ids[p])]
        if not left:
            return []
        time.sleep(0.1)
    for p in left:
        if not alive(p, ids[p]):
            continue
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    return left


def fsync_probe(k=21):
    """Median latency (ms) of creating, writing 1 KiB to and fsyncing a
    file in the temp dir's file system: the disk weather of the moment."""
    d = tempfile.mkdtemp(prefix="peer-bench-probe-")
    lat = []
    try:
        for i in range(k):
            path = os.path.join(d, str(i))
            t = time.monotonic()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            os.write(fd, b"x" * 1024)
            os.fsync(fd)
            os.close(fd)
            lat.append((time.monotonic() - t) * 1000)
            os.unlink(path)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return statistics.median(lat)


# the load generator: smtp-source, or bench/smtp_uv_load.c (--generator uv:
# the same job on one libuv loop, cheaper per message) at this path
UV_LOAD = None


def smtp_source(port, n, conc, size, timeout):
    """Run the load generator; returns its CPU seconds (user+system)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [UV_LOAD, "-d", str(timeout)] if UV_LOAD else ["smtp-source"]
    subprocess.run(cmd + ["-s", str(conc), "-l", str(size),
                          "-m", str(n), "-f", "from@bench.test",
                          "-t", "to@sink.test", "127.0.0.1:%d" % port],
                   check=True, timeout=timeout, stdout=subprocess.DEVNULL)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def one_run(server, n, conc, size, timeout, strace=False):
    tmp = tempfile.mkdtemp(prefix="peer-bench-")
    sink, started, sampler, st = None, False, None, None
    try:
        sink = Sink(tmp)
        started = True              # stop() copes with a half-done start
        server.start(tmp, sink.port)
        sampler = Sampler(server.root)
        sampler.sample()
        if strace:
            pids = tree(server.root)
            out = os.path.join(tmp, "strace")
            args = ["strace", "-f", "-c", "-e", "trace=fsync,fdatasync",
                    "-o", out]
            for p in pids:
                args += ["-p", str(p)]
            st = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
            # strace prints one "attached" line per thread on stderr
            time.sleep(1.0)
        ceiling = isinstance(server, Ceiling)
        if not ceiling:
            sampler.start()
        cpu0 = 0 if ceiling else tree_cpu(server.root)
        t0 = time.monotonic()
        src_cpu = smtp_source(server.port, n, conc, size, timeout)
        t_in = time.monotonic() - t0
        end = t0 + timeout
        while sink.count < n and time.monotonic() < end:
            time.sleep(0.01)
        t_all = time.monotonic() - t0
        cpu = 0 if ceiling else tree_cpu(server.root) - cpu0
        if not ceiling:
            sampler.finish()
        r = {"accepted": n / t_in, "relayed": sink.count / t_all,
             "delivered": sink.count, "cpu_ms": cpu * 1000 / n,
             "rss": 0 if ceiling else sampler.rss,
             "pss": 0 if ceiling else sampler.pss,
             "nproc": 0 if ceiling else sampler.nproc,
             "hwm": server.hwm_kib(),
             "src_core": src_cpu / t_in, "src_ms": src_cpu * 1000 / n}
        if sink.count < n:
            raise RuntimeError("%s: only %d of %d relayed within %ds"
                               % (server.name, sink.count, n, timeout))
        if st:
            st.send_signal(signal.SIGINT)
            st.wait(30)
            calls = 0
            with open(out) as f:
                for line in f:
                    tok = line.split()
                    if tok and tok[-1] in ("fsync", "fdatasync"):
                        calls += int(tok[3])
            r["fsync"] = calls / n
            st = None
        return r
    finally:
        if st:
            st.send_signal(signal.SIGINT)
            st.wait(30)
        if sampler and sampler.is_alive():
            sampler.stop_ev.set()
            sampler.join()
        if started and not isinstance(server, Ceiling):
            server.stop(sampler.seen if sampler else {})
            server.root = None
        if sink:
            sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def raise_nofile(want):
    """Descriptors for smtp-source's sessions (inherited), within the hard
    limit; returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(max(want, soft), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build")
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--concurrency", default="1,20,100,1000")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--run-timeout", type=int, default=180)
    ap.add_argument("--total-timeout", type=int, default=3600)
    ap.add_argument("--no-strace", action="store_true")
    ap.add_argument("--servers", default="postern,Postfix,ceiling")
    ap.add_argument("--generator", choices=("source", "uv"),
                    default="source",
                    help="smtp-source, or bench/smtp_uv_load.c (built as "
                    "BUILD/bin/smtp_uv_load)")
    a = ap.parse_args()
    global UV_LOAD
    if a.generator == "uv":
        UV_LOAD = os.path.join(a.build, "bin", "smtp_uv_load")
    if os.geteuid() != 0:
        sys.exit("peer_bench.py: must run as root (Postfix's master)")
    for tool in ("smtp-source", "smtp-sink", "postfix", "strace"):
        if not shutil.which(tool):
            sys.exit("peer_bench.py: %s not found" % tool)
    concs = [int(c) for c in a.concurrency.split(",")]
    known = {"postern": lambda: Postern(a.build), "Postfix": Postfix,
             "ceiling": Ceiling}
    servers = [known[n]() for n in a.servers.split(",")]
    names = [x.name for x in servers]
    nofile = raise_nofile(4 * max(concs) + 1024)
    if nofile < 2 * max(concs) + 64:
        sys.exit("peer_bench.py: RLIMIT_NOFILE %d is too low for %d "
                 "sessions" % (nofile, max(concs)))
    deadline = time.monotonic() + a.total_timeout
    res = {}
    probes = {}
    msgs = {c: max(a.messages, 5 * c if c >= 1000 else 0) for c in concs}
    for c in concs:
        for i in range(a.runs):
            probe = fsync_probe()
            probes.setdefault(c, []).append(probe)
            for s in servers:           # ABCABC...
                if time.monotonic() > deadline:
                    sys.exit("peer_bench.py: total timeout reached")
                r = one_run(s, msgs[c], c, a.size, a.run_timeout)
                res.setdefault((c, s.name), []).append(r)
                print("c=%-4d run %d %-7s accepted %6.0f/s relayed %6.0f/s "
                      "cpu %.3f ms/msg rss %6.1f MiB pss %6.1f MiB procs %d "
                      "smtp-source %3.0f%% of a core, %.3f ms/msg "
                      "(fsync probe %.2f ms)"
                      % (c, i + 1, s.name, r["accepted"], r["relayed"],
                         r["cpu_ms"], r["rss"] / 1024, r["pss"] / 1024,
                         r["nproc"], 100 * r["src_core"], r["src_ms"],
                         probe), flush=True)
        # (not at 1,000 sessions: strace attached to Postfix's hundreds of
        # processes slows it past any timeout; its count is 1 at every
        # concurrency measured)
        if not a.no_strace and c < 1000:
            for s in servers:
                if isinstance(s, Ceiling):
                    continue
                r = one_run(s, msgs[c], c, a.size, a.run_timeout,
                            strace=True)
                res[(c, s.name, "fsync")] = r["fsync"]
                print("c=%-4d strace  %-7s fsync %.2f/msg"
                      % (c, s.name, r["fsync"]), flush=True)

    def med(c, name, key):
        return statistics.median(r[key] for r in res[(c, name)])

    def ratio(c, x, y, key):
        d = med(c, y, key)
        return "%.2f" % (med(c, x, key) / d) if d else "-"

    print()
    print("%s messages of %d octets per run, %d runs per server, medians "
          "[min-max]" % ("/".join("%d" % msgs[c] for c in concs), a.size,
                         a.runs))
    hdr = ("conc", "server", "accepted/s", "relayed/s", "CPU ms/msg",
           "peak RSS MiB", "peak PSS MiB", "procs", "fsync/msg",
           "smtp-source % core")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "|".join("---" for _ in hdr) + "|")
    for c in concs:
        for s in servers:
            rs = res[(c, s.name)]

            def rng(key, fmt):
                v = [r[key] for r in rs]
                return (fmt % statistics.median(v) + " [" + fmt % min(v)
                        + "-" + fmt % max(v) + "]")
            fs = res.get((c, s.name, "fsync"))
            print("| %d | %s | %s | %s | %s | %s | %s | %d | %s | %.0f |" % (
                c, s.name, rng("accepted", "%.0f"), rng("relayed", "%.0f"),
                rng("cpu_ms", "%.3f"),
                "%.1f" % (med(c, s.name, "rss") / 1024),
                "%.1f" % (med(c, s.name, "pss") / 1024),
                max(r["nproc"] for r in rs),
                "-" if fs is None else "%.2f" % fs,
                100 * med(c, s.name, "src_core")))
        pairs = [("postern", "Postfix"), ("postern", "ceiling"),
                 ("Postfix", "ceiling")]
        for x, y in pairs:
            if x not in names or y not in names:
                continue
            print("| %d | ratio %s/%s of the medians | %s | %s | %s | | | | "
                  "| |" % (c, x, y, ratio(c, x, y, "accepted"),
                           ratio(c, x, y, "relayed"),
                           ratio(c, x, y, "cpu_ms") if y != "ceiling"
                           else "-"))
        if "postern" in names and "Postfix" in names:
            pr = list(zip(res[(c, "postern")], res[(c, "Postfix")]))

            def paired(key):
                return statistics.median(x[key] / y[key] for x, y in pr
                                         if y[key])
            print("| %d | ratio postern/Postfix, median of the %d "
                  "interleaved pairs | %.2f | %.2f | %.2f | | | | | |" % (
                      c, len(pr), paired("accepted"), paired("relayed"),
                      paired("cpu_ms")))
    print("\nfsync of a new 1 KiB file before each round, median ms: %s"
          % ", ".join("c=%d %.2f [%.2f-%.2f]" % (
              c, statistics.median(probes[c]), min(probes[c]),
              max(probes[c])) for c in concs))
    if "postern" in names:
        hwm = [r["hwm"] for c in concs for r in res[(c, "postern")]]
        print("\npostern VmHWM over all runs: median %.1f MiB, max %.1f MiB"
              % (statistics.median(hwm) / 1024, max(hwm) / 1024))


if __name__ == "__main__":
    main()
