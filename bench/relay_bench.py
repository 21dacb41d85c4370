#!/usr/bin/env python3
"""relay_bench.py - postern as a relay between Postfix's smtp-source and
smtp-sink on loopback: messages/s from the first connection to the last
downstream delivery, and postern's CPU time per message.

    bench/relay_bench.py [--generator source|uv] BUILD_DIR [MESSAGES]
                         [SESSIONS] [SIZE] [EXTRA_CONF]

--generator uv sends with bench/smtp_uv_load.c (one libuv loop, the same
job as smtp-source at about 30% less CPU per message) instead of
smtp-source; --ceiling sends straight into smtp-sink, no postern (the
no-gateway rate of the same generator, in the same run's conditions, and
smtp-sink's own CPU per message: what receiving alone costs).

EXTRA_CONF: a file appended to the generated config (a `filters`
section: bench/attach_policy.conf runs the attachments module). If it
names @DNS_PORT@, dnsmasq is started on a free loopback port with an SPF
record for bench.test that passes 127.0.0.1, and the port put there
(bench/filters_on.conf: headers, spf and attachments; filters_off.conf:
the same resolver, no filters). The CPU time counted is postern's and its
child processes' (the spf module's helpers).

Not run by ctest. Ports are free loopback ports; every process started is
ended by PID.
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, deadline=10):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("port %d not listening" % port)


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid):
    """CPU of pid and of its live children (the spf helpers)."""
    total = cpu_seconds(pid)
    for task in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/children" % (pid, task)) as f:
                kids = f.read().split()
        except OSError:
            continue
        for k in kids:
            try:
                total += cpu_seconds(int(k))
            except OSError:
                pass
    return total


def start_dnsmasq(tmp, procs):
    """dnsmasq on a free loopback port answering bench.test's SPF record;
    its port."""
    port = free_port()
    d = subprocess.Popen(
        ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
         "--port=%d" % port, "--listen-address=127.0.0.1",
         "--bind-interfaces", "--pid-file="] +
        (["--user=nobody"] if os.geteuid() == 0 else []) + [
         "--txt-record=bench.test,v=spf1 ip4:127.0.0.0/8 -all",
         "--local-ttl=3600"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(d)
    time.sleep(0.5)
    if d.poll() is not None:
        raise SystemExit("dnsmasq did not start")
    return port


def generator_cmd(kind, build, port, n, sessions, size):
    if kind == "uv":
        return [os.path.join(build, "bin", "smtp_uv_load"), "-s",
                str(sessions), "-m", str(n), "-l", str(size), "-d", "600",
                "-f", "from@bench.test", "-t", "to@sink.test",
                "127.0.0.1:%d" % port]
    return ["smtp-source", "-c", "-l", str(size), "-m", str(n),
            "-s", str(sessions), "-f", "from@bench.test",
            "-t", "to@sink.test", "127.0.0.1:%d" % port]


def start_sink(port):
    return subprocess.Popen(["smtp-sink", "-u", "nobody",
                             "127.0.0.1:%d" % port, "1000"],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def drive(kind, build, port, n, sessions, size, cpu_of):
    """The generator's run against port once it listens: when it started
    (monotonic), how long it took, and cpu_of() at its start."""
    wait_port(port)
    cpu0 = cpu_of()
    t0 = time.monotonic()
    subprocess.run(generator_cmd(kind, build, port, n, sessions, size),
                   check=True, stdout=subprocess.DEVNULL)
    return t0, time.monotonic() - t0, cpu0


def ceiling(kind, build, n, sessions, size):
    """The generator straight into smtp-sink."""
    port = free_port()
    sink = start_sink(port)
    try:
        _, t, cpu0 = drive(kind, build, port, n, sessions, size,
                           lambda: cpu_seconds(sink.pid))
        cpu = cpu_seconds(sink.pid) - cpu0
        # what a server that only receives and discards costs per message
        print("ceiling generator=%s messages=%d size=%d sessions=%d "
              "in=%.2fs (%.0f/s) sink_cpu=%.2fs (%.3f ms/msg)"
              % (kind, n, size, sessions, t, n / t, cpu, cpu * 1000 / n))
    finally:
        sink.terminate()
        sink.wait(10)


def start_postern(build, tmp, port, sink_port, extra):
    """postern from build on 127.0.0.1:port, relaying everything to
    smtp-sink on sink_port, with `extra` settings (filters); its spool and
    log (postern.log) in tmp. The Popen."""
    conf = os.path.join(tmp, "postern.conf")
    with open(conf, "w") as f:
        f.write("""hostname = "bench.test";
%s
listeners = ( { address = "127.0.0.1"; port = %d; } );
limits = { sessions = 2000; sessions_per_ip = 2000; };
relay = { trusted_networks = [ "127.0.0.0/8" ]; };
queue = { directory = "%s/spool"; };
delivery = { default_route = "smtp:[127.0.0.1]:%d"; concurrency = 100;
             destination_concurrency = 20; };
logging = { level = "info"; };
%s
""" % ('user = "postern";' if os.geteuid() == 0 else "", port, tmp,
       sink_port, extra))
    os.chmod(tmp, 0o755)
    log = open(os.path.join(tmp, "postern.log"), "wb")
    return subprocess.Popen([os.path.join(build, "bin", "postern"), "-c",
                             conf], stdout=log, stderr=log)


def wait_delivered(log_path, n, limit=300):
    """Messages postern's log says were delivered, once n are (or after
    limit seconds)."""
    rx = re.compile(rb"event=delivered")
    deadline = time.monotonic() + limit
    while True:
        with open(log_path, "rb") as f:
            done = len(rx.findall(f.read()))
        if done >= n or time.monotonic() > deadline:
            return done
        time.sleep(0.05)


def stop_all(procs, tmp):
    """End the processes a run started (last first), remove its files."""
    for p in reversed(procs):
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
    shutil.rmtree(tmp, ignore_errors=True)


def main():
    args = sys.argv[1:]
    kind = "source"
    if "--generator" in args:
        i = args.index("--generator")
        kind = args[i + 1]
        del args[i:i + 2]
        if kind not in ("source", "uv"):
            raise SystemExit("--generator: source or uv")
    no_gateway = "--ceiling" in args
    if no_gateway:
        args.remove("--ceiling")
    build = args[0]
    n = int(args[1]) if len(args) > 1 else 2000
    sessions = int(args[2]) if len(args) > 2 else 100
    size = int(args[3]) if len(args) > 3 else 1024
    if no_gateway:
        return ceiling(kind, build, n, sessions, size)
    extra = ""
    if len(args) > 4:
        with open(args[4]) as f:
            extra = f.read()
    tmp = tempfile.mkdtemp(prefix="relay-bench-")
    procs = []
    try:
        if "@DNS_PORT@" in extra:
            extra = extra.replace("@DNS_PORT@",
                                  str(start_dnsmasq(tmp, procs)))
        sink_port, port = free_port(), free_port()
        sink = start_sink(sink_port)
        procs.append(sink)
        wait_port(sink_port)
        pst = start_postern(build, tmp, port, sink_port, extra)
        procs.append(pst)
        t0, t_in, cpu0 = drive(kind, build, port, n, sessions, size,
                               lambda: tree_cpu_seconds(pst.pid))
        path = os.path.join(tmp, "postern.log")
        done = wait_delivered(path, n)
        t_all = time.monotonic() - t0
        cpu = tree_cpu_seconds(pst.pid) - cpu0
        with open(path, "rb") as f:
            logtext = f.read()
        spf = {}
        for r in re.findall(rb"event=spf identity=\S+ result=(\w+)",
                            logtext):
            spf[r.decode()] = spf.get(r.decode(), 0) + 1
        print("generator=%s " % kind +
              "messages=%d size=%d sessions=%d accepted_in=%.2fs "
              "(%.0f/s) relayed_in=%.2fs (%.0f/s) delivered=%d "
              "postern_cpu=%.2fs (%.3f ms/msg)"
              % (n, size, sessions, t_in, n / t_in, t_all, done / t_all,
                 done, cpu, cpu * 1000 / max(done, 1)) +
              ("".join(" spf_%s=%d" % kv for kv in sorted(spf.items()))))
    finally:
        stop_all(procs, tmp)


if __name__ == "__main__":
    main()
