#!/usr/bin/env python3
"""cost_bench.py - what one relayed message costs postern, in measures that
do not depend on what else the machine runs: system calls per message (by
call), fsyncs per message, CPU per message, and where the CPU goes.

The job is peer_bench.py's: 1 KiB messages from smtp-source (one connection
per message) relayed by postern to smtp-sink on loopback. One run per
concurrency and per mode; each run on a fresh postern and smtp-sink.

  --mode strace     `strace -f -c` attached to every thread of postern for
                    the run: calls per message, by name (and the fsyncs)
  --mode perf       `perf record -g` (software cpu-clock sampling: no PMU
                    is needed) on postern for the run; prints the top
                    symbols and the share of kernel and user time
  --mode callgrind  postern under valgrind's callgrind (all threads, user
                    space only), a run of N messages minus a run of N/10:
                    instructions per message (repeatable), top functions
  --mode cpu        utime+stime from /proc only (also printed by the
                    others, which perturb it)

    bench/cost_bench.py BUILD_DIR [--mode strace] [--messages 2000]
                        [--concurrency 20,100] [--size 1024]
                        [--out DIR]         (keep the raw outputs there)
                        [--log-level info]  (postern's logging.level)
                        [--conf FILE]       (settings appended to the
                                             config, e.g. a filter chain;
                                             @DNS_PORT@: dnsmasq started)

Run as root (postern then runs as the postern account, as in
peer_bench.py). Not run by ctest.
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_bench as pb     # noqa: E402  (free ports, smtp-sink, postern)
import relay_bench as rb    # noqa: E402  (dnsmasq for the spf module)


def tids(pid):
    try:
        return sorted(int(t) for t in os.listdir("/proc/%d/task" % pid))
    except OSError:
        return []


class Callgrind(pb.Postern):
    """postern under callgrind: same config, another command line."""

    def start(self, tmp, sink_port):
        real = self.bin
        wrapper = os.path.join(tmp, "vg.sh")
        cg = os.path.join(tmp, "cg")       # postern drops to its account
        os.makedirs(cg)
        os.chmod(cg, 0o1777)
        self.cg_out = os.path.join(cg, "callgrind.out")
        # valgrind creates the file at start (as root) and writes it at
        # exit (as the account postern drops to): made writable for both
        with open(self.cg_out, "w"):
            pass
        os.chmod(self.cg_out, 0o666)
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nexec valgrind --tool=callgrind "
                    "--callgrind-out-file=%s --dump-instr=no "
                    "--separate-threads=no %s \"$@\"\n" % (self.cg_out, real))
        os.chmod(wrapper, 0o755)
        self.bin = wrapper
        try:
            super().start(tmp, sink_port)
        finally:
            self.bin = real


def parse_strace(path):
    calls = {}
    with open(path) as f:
        for line in f:
            tok = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(tok) >= 5 and tok[0][0].isdigit() and tok[-1] != "total":
                try:
                    calls[tok[-1]] = int(tok[3])
                except ValueError:
                    pass
    return calls


def parse_callgrind(text):
    """{function: instructions} from callgrind_annotate's listing."""
    fn = {}
    for line in text.splitlines():
        m = re.match(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S.*?)(?: \[.*\])?$",
                     line)
        if m and "PROGRAM TOTALS" not in line:
            name = m.group(2).split(":", 1)[-1]
            fn[name] = fn.get(name, 0) + int(m.group(1).replace(",", ""))
    return fn


def tweak(srv, log_level, conf_file, dns_port=None):
    """postern's bench config with another log level, and the settings of
    conf_file (e.g. a filter chain) appended, @DNS_PORT@ in it replaced by
    dns_port."""
    base = srv.config

    def config(tmp, sink_port):
        text = base(tmp, sink_port).replace('level = "info"',
                                            'level = "%s"' % log_level)
        if conf_file:
            with open(conf_file) as f:
                extra = f.read()
            if dns_port is not None:
                extra = extra.replace("@DNS_PORT@", str(dns_port))
            text += extra
        return text
    srv.config = config


def needs_dns(conf_file):
    if not conf_file:
        return False
    with open(conf_file) as f:
        return "@DNS_PORT@" in f.read()


def run(build, mode, n, conc, size, keep, log_level="info", conf_file=None):
    tmp = tempfile.mkdtemp(prefix="cost-bench-")
    srv = Callgrind(build) if mode == "callgrind" else pb.Postern(build)
    sink, helper, out, procs = None, None, {}, []
    try:
        # relay_bench.py's dnsmasq (bench.test's SPF record) for a config
        # that names @DNS_PORT@ (bench/filters_on.conf, filters_off.conf)
        dns = rb.start_dnsmasq(tmp, procs) if needs_dns(conf_file) else None
        tweak(srv, log_level, conf_file, dns)
        sink = pb.Sink(tmp)
        srv.start(tmp, sink.port)
        pid = srv.root
        base = 0
        if mode == "strace":
            args = ["strace", "-f", "-c", "-o", os.path.join(tmp, "st")]
            for t in tids(pid):
                args += ["-p", str(t)]
            helper = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        elif mode == "perf":
            helper = subprocess.Popen(
                ["perf", "record", "-e", "cpu-clock", "-F", "2000", "-g",
                 "-p", str(pid), "-o", os.path.join(tmp, "perf.data")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        cpu0 = pb.tree_cpu(pid)
        t0 = time.monotonic()
        pb.smtp_source(srv.port, n, conc, size, 1800)
        deadline = time.monotonic() + 600
        while sink.count < base + n and time.monotonic() < deadline:
            time.sleep(0.01)
        wall = time.monotonic() - t0
        cpu = pb.tree_cpu(pid) - cpu0
        if sink.count < base + n:
            raise RuntimeError("only %d of %d relayed" % (sink.count - base,
                                                         n))
        out["cpu_ms"] = cpu * 1000 / n
        out["wall"] = wall
        if mode in ("strace", "perf"):
            helper.send_signal(signal.SIGINT)
            helper.wait(120)
            helper = None
        if mode == "strace":
            out["calls"] = parse_strace(os.path.join(tmp, "st"))
        elif mode == "perf":
            rep = subprocess.run(
                ["perf", "report", "-i", os.path.join(tmp, "perf.data"),
                 "--stdio", "--no-children", "--sort", "dso,symbol",
                 "--percent-limit", "0.7", "-g", "none"],
                capture_output=True, text=True, timeout=600)
            out["perf"] = rep.stdout
            mode_rep = subprocess.run(
                ["perf", "report", "-i", os.path.join(tmp, "perf.data"),
                 "--stdio", "--no-children", "--sort", "dso", "-g", "none"],
                capture_output=True, text=True, timeout=600)
            out["perf_dso"] = mode_rep.stdout
        elif mode == "callgrind":
            # the whole run, start-up and shutdown included: main() runs
            # it twice and takes the difference
            srv.stop()
            cg = os.path.join(tmp, "cg")
            dumps = [os.path.join(cg, p) for p in os.listdir(cg)
                     if p.startswith("callgrind.out") and
                     os.path.getsize(os.path.join(cg, p)) > 0]
            if not dumps:
                raise RuntimeError("no callgrind dump")
            ann = subprocess.run(
                ["callgrind_annotate", "--inclusive=no", "--threshold=100",
                 "--auto=no",
                 max(dumps, key=os.path.getmtime)],
                capture_output=True, text=True, timeout=600)
            out["callgrind"] = ann.stdout
            m = re.search(r"^\s*([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS",
                          ann.stdout, re.M)
            out["ir"] = int(m.group(1).replace(",", "")) if m else 0
            out["fn"] = parse_callgrind(ann.stdout)
        return out
    finally:
        if helper:
            helper.send_signal(signal.SIGINT)
            try:
                helper.wait(60)
            except subprocess.TimeoutExpired:
                helper.kill()
        srv.stop()
        if sink:
            sink.stop()
        for d in procs:
            d.terminate()
            d.wait(10)
        if keep:
            dst = os.path.join(keep, "%s-c%d" % (mode, conc))
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(tmp, dst, ignore=shutil.ignore_patterns(
                "spool", "postfix"))
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build")
    ap.add_argument("--mode", default="strace",
                    choices=("strace", "perf", "callgrind", "cpu"))
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--concurrency", default="20,100")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--out")
    ap.add_argument("--log-level", default="info",
                    help="postern's logging.level (default info)")
    ap.add_argument("--conf", help="a file of settings appended to "
                    "postern's config (e.g. a filters list); if it names "
                    "@DNS_PORT@, relay_bench.py's dnsmasq is started and its "
                    "port put there (bench/filters_on.conf)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("cost_bench.py: run as root (see peer_bench.py)")
    tools = {"strace": "strace", "perf": "perf", "callgrind": "valgrind"}
    for t in ("smtp-source", "smtp-sink", tools.get(a.mode, "true")):
        if not shutil.which(t):
            sys.exit("cost_bench.py: %s not found" % t)
    for c in [int(x) for x in a.concurrency.split(",")]:
        if a.mode == "callgrind":
            # instructions of the messages alone: a run of N minus a run
            # of N/10 (start-up, shutdown and warm-up cancel out)
            small = run(a.build, a.mode, a.messages // 10, c, a.size, None,
                        a.log_level, a.conf)
        r = run(a.build, a.mode, a.messages, c, a.size, a.out, a.log_level,
                a.conf)
        if a.mode == "callgrind":
            per = a.messages - a.messages // 10
            r["ir_per_msg"] = (r["ir"] - small["ir"]) / per
            r["fn_per_msg"] = sorted(
                ((k, (v - small["fn"].get(k, 0)) / per)
                 for k, v in r["fn"].items()), key=lambda x: -x[1])
        print("== %d messages, %d in flight, mode %s: postern CPU %.3f ms/msg"
              " (%.1f s)" % (a.messages, c, a.mode, r["cpu_ms"], r["wall"]))
        if "calls" in r:
            calls = r["calls"]
            tot = sum(calls.values())
            print("syscalls per message: %.1f" % (tot / a.messages))
            for name, k in sorted(calls.items(), key=lambda x: -x[1]):
                if k / a.messages >= 0.05:
                    print("  %-16s %6.2f" % (name, k / a.messages))
            fs = calls.get("fsync", 0) + calls.get("fdatasync", 0)
            print("fsync+fdatasync per message: %.2f" % (fs / a.messages))
        if "perf_dso" in r:
            print(r["perf_dso"])
            print(r["perf"])
        if "ir_per_msg" in r:
            print("instructions per message (callgrind Ir): %.0f"
                  % r["ir_per_msg"])
            print("top functions, instructions per message (the same "
                  "difference):")
            for k, v in r["fn_per_msg"][:40]:
                print("  %8.0f %5.1f%%  %s" % (v, 100 * v / r["ir_per_msg"],
                                             k))


if __name__ == "__main__":
    main()
