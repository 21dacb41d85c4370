"""loadgen.py - load for the reliability tests (test_rel_*.py), on top of
harness.py: the clients and the counting downstream, and the machine
figures every reported number comes with.

  size(name, ci, full)       a test's size: the CI value, the full value
                             (POSTERN_RELIABILITY=full, for the figures of
                             docs/RELIABILITY.md) or POSTERN_REL_<NAME>
  machine()                  load average, fsync time of the test's disk,
                             cores: printed with every figure
  figure(name, **values)     one "# figure NAME k=v ..." line on stdout
  SmtpSink                   Postfix's smtp-sink on a free port, dumping
                             every transaction to one file; counts what
                             arrived by Message-ID (duplicates included)
  Sender                     asyncio sessions sending numbered messages
                             (Message-ID <TAG.N@loadgen.test>) with
                             PIPELINING, reconnecting when the server goes
                             away; records what was sent and what got 250
  smtp_source()              Postfix's smtp-source: plain load, in C
  run_hostile() / main()     the hostile crowd (slowloris, non-readers,
                             AUTH guessers) in a process of its own, so
                             that the normal clients measured by the test
                             do not share an interpreter with it; it
                             reports its own event-loop lag, which shows
                             whether it kept up

Everything started here is ended by PID (harness.spawn registers it).
"""

import asyncio
import base64
import collections
import json
import os
import random
import re
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time

import harness

FULL = os.environ.get("POSTERN_RELIABILITY", "ci") == "full"
DOMAIN = "loadgen.test"


def size(name, ci, full):
    """The value of a test size: POSTERN_REL_<NAME> if set, else the full
    value under POSTERN_RELIABILITY=full, else the CI value."""
    v = os.environ.get("POSTERN_REL_" + name.upper())
    if v:
        return type(ci)(v)
    return full if FULL else ci


def raise_nofile(want):
    """Raise this process's RLIMIT_NOFILE (inherited by what it starts,
    postern included) to at least `want`, within the hard limit; returns
    the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return soft


# --------------------------------------------------------------------------
# machine figures

def fsync_ms(directory, n=20):
    """Median time, in ms, to create, write 1 KiB to and fsync a file in
    directory: how fast the disk is at this moment."""
    times = []
    path = os.path.join(directory, ".fsync-probe")
    for _ in range(n):
        t0 = time.monotonic()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"x" * 1024)
            os.fsync(fd)
        finally:
            os.close(fd)
        times.append(time.monotonic() - t0)
        os.unlink(path)
    return statistics.median(times) * 1e3


def machine(directory):
    """A dict for figure(): the 1-minute load average, the cores and the
    disk's fsync time."""
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    return {"load1": load, "cores": os.cpu_count(),
            "fsync_ms": "%.2f" % fsync_ms(directory)}


def figure(name, **values):
    """Print one figure line (ctest -V and the doc's commands show it)."""
    print("# figure %s %s" % (name, " ".join(
        "%s=%s" % (k, v) for k, v in values.items())), flush=True)


def proc_kib(pid, key):
    """A /proc/PID/status value in KiB (VmRSS, VmHWM), or 0."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def percentile(values, q):
    """The q-quantile (0..1) of values, nearest rank."""
    v = sorted(values)
    if not v:
        return float("nan")
    return v[min(len(v) - 1, max(0, int(round(q * len(v) + 0.5)) - 1))]


# --------------------------------------------------------------------------
# the counting downstream

MSGID_RE = re.compile(rb"^Message-I[Dd]:[ \t]*(<[^>\r\n]*>)", re.M)


class SmtpSink:
    """Postfix's smtp-sink on a free loopback port; every transaction is
    appended to one dump file (-D), read back by counts()."""

    def __init__(self, tmp, backlog=1024):
        self.port = harness.free_port()
        d = os.path.join(tmp, "sink")
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o777)                  # smtp-sink writes as nobody
        os.chmod(tmp, os.stat(tmp).st_mode | 0o711)
        self.dump = os.path.join(d, "dump")
        self.log_path = os.path.join(tmp, "sink.log")
        self.proc = harness.spawn(
            ["smtp-sink", "-u", "nobody", "-D", self.dump,
             "127.0.0.1:%d" % self.port, str(backlog)], self.log_path)
        deadline = time.monotonic() + 10
        while True:
            try:
                s = socket.create_connection(("127.0.0.1", self.port), 0.5)
                s.settimeout(5)
                s.recv(512)
                s.sendall(b"QUIT\r\n")
                s.close()
                break
            except OSError:
                if self.proc.poll() is not None or \
                        time.monotonic() > deadline:
                    raise AssertionError("smtp-sink did not start (%s)"
                                         % self.log_path)
                time.sleep(0.05)

    @property
    def route(self):
        return "smtp:[127.0.0.1]:%d" % self.port

    def counts(self):
        """Message-ID -> copies that arrived, and the number of
        transactions (a transaction without a Message-ID counts under
        None)."""
        try:
            with open(self.dump, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return collections.Counter(), 0
        ntx = len(re.findall(rb"^X-Client-Addr: ", data, re.M))
        got = collections.Counter(m.decode() for m in MSGID_RE.findall(data))
        missing = ntx - sum(got.values())
        if missing > 0:
            got[None] += missing
        return got, ntx

    def wait_for(self, ids, timeout):
        """Wait until every Message-ID in ids has arrived (bounded by
        timeout); returns counts()."""
        deadline = time.monotonic() + timeout
        while True:
            got, ntx = self.counts()
            if all(got.get(i) for i in ids) or time.monotonic() > deadline:
                return got, ntx
            time.sleep(0.2)

    def stop(self):
        harness._kill_proc(self.proc)


# --------------------------------------------------------------------------
# asyncio SMTP

class Closed(Exception):
    """The server closed the connection (or reset it)."""


async def read_reply(reader, timeout):
    """One whole reply: (code, text of the last line)."""
    while True:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout)
        except (ConnectionError, asyncio.IncompleteReadError) as e:
            raise Closed(str(e)) from None
        if not line:
            raise Closed("eof")
        if len(line) < 4 or not line[:3].isdigit():
            raise Closed("malformed reply %r" % line[:80])
        if line[3:4] != b"-":
            return int(line[:3]), line[4:].rstrip(b"\r\n")


def message_bytes(msgid, body_size, subject="loadgen"):
    """A CRLF message with its Message-ID, dot-stuffed, final dot
    included (the body is lines of letters: nothing to stuff)."""
    head = ("From: <s@%s>\r\nTo: <r@%s>\r\nSubject: %s\r\n"
            "Message-ID: %s\r\nDate: Thu, 03 Dec 2026 00:00:00 +0000\r\n\r\n"
            % (DOMAIN, DOMAIN, subject, msgid)).encode()
    line = b"abcdefghijklmnopqrstuvwxyz" * 3 + b"\r\n"
    body = line * max(1, body_size // len(line))
    return head + body + b".\r\n"


class Sender:
    """`conns` asyncio sessions that send `limit` numbered messages in all
    (Message-ID <TAG.N@loadgen.test>) to `rcpts`, MAIL/RCPT/DATA pipelined,
    until every one has been sent or stop() is called. A session the
    server closes or resets is reopened (every 20 ms while nothing
    listens).

    After a run: sent - Message-IDs whose text (and final dot) was written;
    acked - those answered 250; refused - replies other than 250 to the
    final dot. A message is never sent twice: only one whose MAIL, RCPT or
    DATA was refused goes back to the pool, so a copy at the downstream
    that repeats a Message-ID is always the gateway's duplicate."""

    def __init__(self, host, port, tag, conns=8, limit=1000, body_size=1024,
                 timeout=15.0, rcpts=("r@" + DOMAIN,)):
        self.host, self.port, self.tag = host, port, tag
        self.rcpts = list(rcpts)
        self.conns, self.limit, self.body_size = conns, limit, body_size
        self.timeout = timeout
        self.sent, self.acked = set(), set()
        self.refused = collections.Counter()
        self.reconnects = 0
        self.next_n = 0
        self.retry = []            # ids whose MAIL/RCPT/DATA was refused
        self.stopping = False
        self.loop = None
        self.thread = None

    def msgid(self, n):
        return "<%s.%d@%s>" % (self.tag, n, DOMAIN)

    def _take(self):
        if self.retry:
            return self.retry.pop()
        if self.next_n >= self.limit:
            return None
        self.next_n += 1
        return self.msgid(self.next_n)

    def done(self):
        return self.next_n >= self.limit and not self.retry

    async def _session(self):
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.timeout)
        try:
            code, _ = await read_reply(reader, self.timeout)
            if code != 220:
                raise Closed("greeting %d" % code)
            writer.write(b"EHLO loadgen.test\r\n")
            code, _ = await read_reply(reader, self.timeout)
            if code != 250:
                raise Closed("EHLO %d" % code)
            while not self.stopping:
                mid = self._take()
                if mid is None:
                    return
                writer.write(("MAIL FROM:<s@%s>\r\n" % DOMAIN + "".join(
                    "RCPT TO:<%s>\r\n" % r for r in self.rcpts) +
                    "DATA\r\n").encode())
                try:
                    codes = [(await read_reply(reader, self.timeout))[0]
                             for _ in range(len(self.rcpts) + 2)]
                except Closed:
                    self.retry.append(mid)
                    raise
                if codes != [250] * (len(self.rcpts) + 1) + [354]:
                    self.retry.append(mid)
                    self.refused[codes[-1]] += 1
                    raise Closed("refused %r" % codes)
                writer.write(message_bytes(mid, self.body_size))
                self.sent.add(mid)
                code, _ = await read_reply(reader, self.timeout)
                if code == 250:
                    self.acked.add(mid)
                else:
                    self.refused[code] += 1
            writer.write(b"QUIT\r\n")
        finally:
            writer.close()

    async def _worker(self):
        while not self.stopping and not self.done():
            try:
                await self._session()
            except (OSError, Closed, asyncio.TimeoutError):
                self.reconnects += 1
                await asyncio.sleep(0.02)

    async def _main(self):
        await asyncio.gather(*(self._worker() for _ in range(self.conns)))

    def start(self):
        """Run in a thread of its own (its own event loop)."""
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_until_complete, args=(self._main(),),
            name="loadgen-sender", daemon=True)
        self.thread.start()
        return self

    def stop(self, timeout=30):
        """Stop taking new messages; wait for the sessions to end."""
        self.stopping = True
        self.join(timeout)

    def join(self, timeout=None):
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError("loadgen sender did not finish")
        self.loop.close()


def smtp_source(host, port, messages, sessions, size=1024, timeout=600,
                extra=()):
    """Run Postfix's smtp-source (one connection per message) and return
    (exit code, wall seconds, output). It stops at the first reply other
    than the expected one, so exit 0 means every message got 250."""
    argv = ["smtp-source", "-s", str(sessions), "-m", str(messages),
            "-l", str(size), "-M", "source." + DOMAIN,
            "-f", "s@" + DOMAIN, "-t", "r@" + DOMAIN] + list(extra) + \
           ["%s:%d" % (host, port)]
    t0 = time.monotonic()
    try:
        r = subprocess.run(argv, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return None, time.monotonic() - t0, (e.stderr or b"").decode()
    return (r.returncode, time.monotonic() - t0,
            (r.stdout + r.stderr).decode("utf-8", "replace"))


# --------------------------------------------------------------------------
# the hostile crowd (run as `python3 loadgen.py hostile JSON`)

class Lag:
    """Measures how late this event loop runs a 10 ms timer: a loop that
    does not keep up with its clients shows it here."""

    def __init__(self):
        self.lags = []

    async def run(self, stop_at):
        loop = asyncio.get_running_loop()
        while loop.time() < stop_at:
            t0 = loop.time()
            await asyncio.sleep(0.01)
            self.lags.append(loop.time() - t0 - 0.01)


def _source(cfg, kind, i):
    """The client address of the i-th client of a kind: cfg[kind +
    "_sources"] is a list, used in turn (so that a per-address session
    limit does not turn the crowd away at the door)."""
    src = cfg[kind + "_sources"]
    return src[i % len(src)]


async def _slowloris(cfg, st, i, stop_at):
    """Connect, then drip one byte of a command (or, for every other one,
    of a message text after DATA) every `drip` seconds."""
    loop = asyncio.get_running_loop()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            cfg["host"], cfg["port"],
            local_addr=(_source(cfg, "loris", i), 0)), 10)
    except (OSError, asyncio.TimeoutError):
        st["loris_connect_failed"] += 1
        return
    st["loris_connected"] += 1
    t0 = loop.time()
    try:
        if i % 2:
            writer.write(b"EHLO x\r\nMAIL FROM:<a@b.test>\r\n"
                         b"RCPT TO:<r@loadgen.test>\r\nDATA\r\n")
        while loop.time() < stop_at:
            writer.write(b"X")
            st["loris_drips"] += 1
            t = loop.time()
            try:
                data = await asyncio.wait_for(reader.read(4096),
                                              cfg["drip"])
            except asyncio.TimeoutError:
                continue
            if not data:
                break                   # the gateway ended the session
            st["loris_replies"] += 1
            await asyncio.sleep(max(0.0, cfg["drip"] - (loop.time() - t)))
    except (OSError, ConnectionError):
        pass
    finally:
        st["loris_held"].append(loop.time() - t0)
        writer.close()


async def _nonreader(cfg, st, i, stop_at):
    """Pipeline commands and never read a reply: a small receive buffer,
    so the gateway's replies pile up on its side."""
    loop = asyncio.get_running_loop()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.bind((_source(cfg, "nonreader", i), 0))
    s.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(
            s, (cfg["host"], cfg["port"])), 10)
    except (OSError, asyncio.TimeoutError):
        st["nonreader_connect_failed"] += 1
        s.close()
        return
    st["nonreader_connected"] += 1
    batch = b"EHLO x\r\nNOOP\r\nRSET\r\n" * 2048
    try:
        while loop.time() < stop_at:
            await asyncio.wait_for(loop.sock_sendall(s, batch),
                                   max(0.1, stop_at - loop.time()))
            st["nonreader_bytes"] += len(batch)
    except asyncio.TimeoutError:
        st["nonreader_blocked"] += 1       # the gateway stopped reading
    except OSError:
        st["nonreader_closed"] += 1        # or closed the connection
    finally:
        s.close()


async def _guesser(cfg, st, i, stop_at):
    """AUTH PLAIN with wrong passwords over and over, reconnecting when the
    gateway ends the session."""
    loop = asyncio.get_running_loop()
    while loop.time() < stop_at:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                cfg["host"], cfg["auth_port"],
                local_addr=(_source(cfg, "guesser", i), 0)), 10)
        except (OSError, asyncio.TimeoutError):
            st["guess_connect_failed"] += 1
            await asyncio.sleep(0.1)
            continue
        try:
            await read_reply(reader, 10)
            writer.write(b"EHLO guesser\r\n")
            await read_reply(reader, 10)
            n = 0
            while loop.time() < stop_at:
                n += 1
                cred = base64.b64encode(b"\0%s\0guess%d" % (
                    cfg["auth_user"].encode(), n))
                writer.write(b"AUTH PLAIN " + cred + b"\r\n")
                code, _ = await read_reply(reader, 30)
                st["guess_replies"][str(code)] += 1
                if code == 421:
                    break
        except (OSError, Closed, asyncio.TimeoutError):
            st["guess_closed"] += 1
        finally:
            writer.close()


async def run_hostile(cfg):
    """Run the crowd described by cfg for cfg["seconds"]; returns stats."""
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + cfg["seconds"]
    st = collections.defaultdict(int)
    st["loris_held"] = []
    st["guess_replies"] = collections.Counter()
    lag = Lag()
    tasks = [asyncio.ensure_future(lag.run(stop_at))]
    for i in range(cfg["slowloris"]):
        tasks.append(asyncio.ensure_future(_slowloris(cfg, st, i, stop_at)))
    for i in range(cfg["nonreaders"]):
        tasks.append(asyncio.ensure_future(_nonreader(cfg, st, i, stop_at)))
    for i in range(cfg["guessers"]):
        tasks.append(asyncio.ensure_future(_guesser(cfg, st, i, stop_at)))
    await asyncio.wait(tasks, timeout=cfg["seconds"] + 30)
    for t in tasks:
        t.cancel()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    st["cpu_s"] = round(cpu.ru_utime + cpu.ru_stime, 2)
    st["lag_p50_ms"] = round(percentile(lag.lags, 0.5) * 1e3, 2)
    st["lag_p99_ms"] = round(percentile(lag.lags, 0.99) * 1e3, 2)
    st["lag_max_ms"] = round(max(lag.lags or [0]) * 1e3, 2)
    held = st.pop("loris_held")
    st["loris_held_max_s"] = round(max(held or [0]), 2)
    return dict(st)


def main(argv):
    if len(argv) == 3 and argv[1] == "hostile":
        cfg = json.loads(argv[2])
        raise_nofile(4 * (cfg["slowloris"] + cfg["nonreaders"]) + 256)
        st = asyncio.run(run_hostile(cfg))
        print(json.dumps(st), flush=True)
        return 0
    sys.stderr.write("usage: loadgen.py hostile JSON\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
