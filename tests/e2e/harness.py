"""harness.py - the end-to-end test harness every postern e2e test reuses.

Python standard library only. What it offers:

  free_port(), free_port_pair()   free TCP ports on 127.0.0.1 / ::1
  render_libconfig(), merge()     a libconfig file from a Python dict
  wait_for()                      poll a condition until it holds
  Postern                         one postern process on a generated config:
                                  start/stop/kill9/restart, smtp(), client(),
                                  wait_for_maildir(), log helpers
  SMTPClient                      raw socket client that reads whole
                                  (multi-line) replies
  FakeDownstream                  scriptable SMTP/LMTP server that records
                                  every transaction
  PosternTestCase                 unittest base class: a temp dir per test,
                                  every process cleaned up by PID, temp dir
                                  and logs kept in $POSTERN_TEST_LOGS/<test id>/
                                  when the test fails; tmpfs(), a small file
                                  system of the test's own

Every process and server the harness starts is registered and ended by PID
in tearDown, and again at interpreter exit if a test forgot. postern is also
started under `setpriv --pdeathsig KILL` (when available) so that it dies
with the test runner even if the runner is killed outright.
"""

import atexit
import copy
import errno
import json
import os
import random
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

POSTERN_BIN = os.environ.get("POSTERN_BIN", "")
if not POSTERN_BIN:
    _here = os.path.dirname(os.path.abspath(__file__))
    POSTERN_BIN = os.path.join(_here, "..", "..", "build", "bin", "postern")
POSTERN_BIN = os.path.abspath(POSTERN_BIN)
TEST_LOGS = os.environ.get("POSTERN_TEST_LOGS", "")

# Bounds on waits for what must happen, not measures: generous, so that a
# loaded CI machine (2 cores, ctest -j2, sanitizer builds, a busy disk's
# fsync) is not mistaken for a hang; they only make a real hang slower to
# report.
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
CLIENT_TIMEOUT = 30.0
HOSTNAME = "postern.test"

# Lines in a postern log that mean a sanitizer found something.
SANITIZER_RE = re.compile(
    rb"ERROR: (AddressSanitizer|LeakSanitizer|ThreadSanitizer)"
    rb"|runtime error: |SUMMARY: UndefinedBehaviorSanitizer")


# --------------------------------------------------------------------------
# process registry: everything started here is ended by PID

_live_procs = {}        # pid -> Popen
_live_servers = []      # FakeDownstream
_registry_lock = threading.Lock()


def _register_proc(p):
    with _registry_lock:
        _live_procs[p.pid] = p


def _forget_proc(p):
    with _registry_lock:
        _live_procs.pop(p.pid, None)


def unix_request(path, request, timeout=10):
    """Send request on a new connection to the unix stream socket at path
    and return everything read until the server closes (postern's control
    socket, haproxy's stats socket)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk
    finally:
        s.close()


def _thread_stacks(pid, path):
    """Every thread's stack of a process that hangs, written to path (gdb
    attached in batch mode; tools/setup installs it): what the process
    waited on when a test gave up on it. Returns the text, or why not."""
    try:
        r = subprocess.run(["gdb", "-batch", "-nx", "-p", str(pid),
                            "-ex", "thread apply all bt"],
                           capture_output=True, text=True, timeout=120)
        text = r.stdout + r.stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        text = "no stacks: %s" % e
    with open(path, "w") as f:
        f.write(text)
    return text


def _kill_proc(p):
    """SIGKILL one process we started, by PID, and reap it."""
    if p.poll() is None:
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    _forget_proc(p)


def cleanup_all():
    """End every process and server the harness started and still runs."""
    with _registry_lock:
        procs = list(_live_procs.values())
        servers = list(_live_servers)
    for p in procs:
        _kill_proc(p)
    for s in servers:
        try:
            s.stop()
        except Exception:
            pass


atexit.register(cleanup_all)


def _setpriv():
    path = shutil.which("setpriv")
    if not path:
        return None
    try:
        out = subprocess.run([path, "--help"], capture_output=True,
                             timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return path if b"--pdeathsig" in out else None


_SETPRIV = _setpriv()


def spawn(argv, log_path, cwd=None, env=None):
    """Start argv with stdout+stderr appended to log_path; registered for
    cleanup. Under setpriv --pdeathsig the PID is that of argv[0] itself
    (setpriv execs it)."""
    if _SETPRIV:
        argv = [_SETPRIV, "--pdeathsig", "KILL", "--"] + list(argv)
    logf = open(log_path, "ab")
    try:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                             stderr=subprocess.STDOUT, cwd=cwd, env=env,
                             start_new_session=True)
    finally:
        logf.close()
    _register_proc(p)
    return p


# --------------------------------------------------------------------------
# ports

_handed_out = set()


def _port_free(family, host, port):
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def ipv6_available():
    """True if a socket can bind ::1."""
    if not socket.has_ipv6:
        return False
    return _port_free(socket.AF_INET6, "::1", 0)


def require_ipv6(test):
    """Fail (never skip) without an IPv6 loopback: tools/setup checks it,
    so its absence is a broken machine, not a reason to test less."""
    test.assertTrue(ipv6_available(),
                    "no IPv6 loopback (::1) here; tools/setup checks for it")


def _quiet_ports():
    """The ports below the kernel's ephemeral range (ip_local_port_range):
    no connect() on the machine takes one of those as its local port, so
    a port found free there stays free for the listener that binds it
    next, whatever the other tests connect meanwhile; (0, -1) if the
    range leaves too few below it."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return (10000, low - 1) if low - 1 - 10000 >= 4096 else (0, -1)


_port_rng = random.Random(os.getpid() ^ int(time.time() * 1000))


def child_pids(ppid, name):
    """pids of the live children of ppid whose argv[0] is name (bytes):
    the helpers postern starts."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        fields_ = stat.rsplit(")", 1)[1].split()
        if int(fields_[1]) == ppid and cmd.startswith(name + b"\0") \
                and fields_[0] != "Z":
            out.append(int(d))
    return sorted(out)


def free_port(host="127.0.0.1"):
    """A TCP port currently free on host (never the same one twice in this
    process, so that parallel starts in one test do not collide), taken at
    random below the ephemeral range when there is room (_quiet_ports):
    a port the kernel hands out for bind(0) may be any client's local port
    a moment later, and a listener then fails with EADDRINUSE."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    lo, hi = _quiet_ports()
    for _ in range(200):
        if lo > 0:
            port = _port_rng.randint(lo, hi)
            if port in _handed_out or not _port_free(family, host, port):
                continue
        else:
            s = socket.socket(family, socket.SOCK_STREAM)
            try:
                s.bind((host, 0))
                port = s.getsockname()[1]
            finally:
                s.close()
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port found on %s" % host)


def free_port_pair():
    """A port free on both 127.0.0.1 and ::1."""
    for _ in range(200):
        port = free_port("127.0.0.1")
        if _port_free(socket.AF_INET6, "::1", port):
            return port
    raise RuntimeError("no port free on both 127.0.0.1 and ::1")


# --------------------------------------------------------------------------
# libconfig generation

class Raw:
    """A value written into the config verbatim."""

    def __init__(self, text):
        self.text = text


class List(list):
    """Force a libconfig list `( ... )` (an ordinary Python list of scalars
    becomes an array `[ ... ]`; a list holding groups becomes a list)."""


def _quote(s):
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif o < 0x20 or o == 0x7F:
            out.append("\\x%02x" % o)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _scalar(v):
    if isinstance(v, Raw):
        return v.text
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        if -2**31 <= v < 2**31:
            return str(v)
        return "%dL" % v
    if isinstance(v, float):
        text = repr(v)
        return text if ("." in text or "e" in text) else text + ".0"
    if isinstance(v, str):
        return _quote(v)
    raise TypeError("no libconfig form for %r" % (v,))


def _value(v, indent):
    pad = "    " * indent
    if isinstance(v, dict):
        if not v:
            return "{ }"
        inner = "".join(_setting(k, x, indent + 1) for k, x in v.items()
                        if x is not None)
        return "{\n" + inner + pad + "}"
    if isinstance(v, (list, tuple)):
        items = [x for x in v if x is not None]
        as_list = isinstance(v, List) or any(
            isinstance(x, (dict, list, tuple)) for x in items)
        if not items:
            return "( )" if as_list else "[ ]"
        if as_list:
            inner = ",\n".join("    " * (indent + 1) + _value(x, indent + 1)
                               for x in items)
            return "(\n" + inner + "\n" + pad + ")"
        return "[ " + ", ".join(_scalar(x) for x in items) + " ]"
    return _scalar(v)


def _setting(name, v, indent):
    if not re.match(r"^[A-Za-z*][-A-Za-z0-9_*]*$", name):
        raise ValueError("bad libconfig setting name %r" % name)
    return "    " * indent + name + " = " + _value(v, indent) + ";\n"


def render_libconfig(conf):
    """libconfig text for a dict: dicts are groups, lists of scalars arrays,
    lists holding groups (or List) lists, None values are left out."""
    return "".join(_setting(k, v, 0) for k, v in conf.items() if v is not None)


def merge(base, overrides):
    """Deep copy of base with overrides merged in: dicts merge recursively,
    anything else replaces; a None override removes the key."""
    out = copy.deepcopy(base)
    for k, v in (overrides or {}).items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# --------------------------------------------------------------------------
# SMTP replies and the raw client

_ENH_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")


class Reply:
    """One SMTP reply: code (int), lines (texts after the code and separator),
    enhanced ("5.5.2" or None), raw (the bytes as received)."""

    def __init__(self, code, lines, raw):
        self.code = code
        self.lines = lines
        self.raw = raw
        m = _ENH_RE.match(lines[0]) if lines else None
        self.enhanced = "%s.%s.%s" % m.groups() if m else None

    @property
    def text(self):
        return "\n".join(self.lines)

    def __repr__(self):
        return "Reply(%d, %r)" % (self.code, self.raw)

    def __str__(self):
        return self.raw.decode("utf-8", "replace").rstrip("\r\n")


class ConnectionClosed(Exception):
    """The peer closed the connection before a whole reply arrived."""


class SMTPClient:
    """A raw SMTP client over a socket. send() writes bytes exactly as given;
    reply() reads one whole reply, continuation lines included; cmd() sends
    a line and checks the reply."""

    MAX_LINE = 65536

    def __init__(self, host, port, timeout=CLIENT_TIMEOUT, source=None):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if source is not None:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.timeout = timeout
        self.eof = False

    # -- bytes on the wire
    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def send_line(self, line):
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + b"\r\n")

    def _fill(self, timeout=None):
        if self.eof:
            return False
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _line(self, timeout=None):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[:i + 1], self.buf[i + 1:]
                return line
            if len(self.buf) > self.MAX_LINE:
                raise AssertionError("reply line too long: %r..."
                                     % self.buf[:200])
            try:
                more = self._fill(timeout)
            except socket.timeout:
                raise AssertionError(
                    "no whole reply within %.1f s; partial %r"
                    % (self.timeout if timeout is None else timeout,
                       self.buf)) from None
            if not more:
                raise ConnectionClosed(
                    "connection closed; partial reply %r" % self.buf)

    def reply(self, timeout=None):
        """Read one whole reply (every continuation line)."""
        raw = b""
        lines = []
        code = None
        while True:
            line = self._line(timeout)
            raw += line
            m = re.match(rb"^(\d{3})([ -]|\r?\n)", line)
            if not m:
                raise AssertionError("malformed reply line %r (reply so far %r)"
                                     % (line, raw))
            c = int(m.group(1))
            if code is None:
                code = c
            elif c != code:
                raise AssertionError("reply code changed mid-reply: %r" % raw)
            text = line[4:].rstrip(b"\r\n") if m.group(2) in (b" ", b"-") \
                else b""
            lines.append(text.decode("utf-8", "replace"))
            if m.group(2) != b"-":
                return Reply(code, lines, raw)

    def replies(self, n, timeout=None):
        return [self.reply(timeout) for _ in range(n)]

    def pending(self, wait=0.2):
        """Bytes that arrive within `wait` seconds (nothing is consumed from
        the reply stream other than what is returned)."""
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            try:
                if left <= 0 or not self._fill(left):
                    break
            except socket.timeout:
                break
        out, self.buf = self.buf, b""
        return out

    def closed(self, wait=10.0):
        """True if the server closes the connection within `wait` seconds
        (any bytes it sends first are discarded)."""
        deadline = time.monotonic() + wait
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                self._fill(left)
            except socket.timeout:
                return False
            except OSError:
                self.eof = True
        return True

    # -- checked exchanges
    def expect(self, code, enhanced=None, reply=None):
        """Read a reply (or check the one given) and assert its code and,
        if given, its enhanced code (a prefix such as "5.1" matches)."""
        r = reply if reply is not None else self.reply()
        check_reply(r, code, enhanced)
        return r

    def cmd(self, line, code=None, enhanced=None):
        self.send_line(line)
        r = self.reply()
        if code is not None:
            check_reply(r, code, enhanced)
        return r

    def greeting(self):
        return self.expect(220)

    def ehlo(self, name="client.test"):
        """EHLO; returns the dict of advertised keywords (upper case) to
        their parameter strings."""
        r = self.cmd("EHLO " + name, 250)
        ext = {}
        for line in r.lines[1:]:
            kw, _, param = line.partition(" ")
            ext[kw.upper()] = param
        self.ehlo_reply = r
        return ext

    def start(self, name="client.test"):
        """Greeting and EHLO; returns the extensions."""
        self.greeting()
        return self.ehlo(name)

    def transaction(self, sender, rcpts, data, mail_params="",
                    stuffed=False):
        """MAIL, RCPT per recipient, DATA and the message (dot-stuffed here
        unless `stuffed`, in which case data is sent as is and must carry
        its own end of data). Every reply before the final one is checked
        (250/250/354); returns the reply to the end of data."""
        if isinstance(rcpts, str):
            rcpts = [rcpts]
        self.cmd(("MAIL FROM:<%s> %s" % (sender, mail_params)).rstrip(),
                 250, "2.1.0")
        for r in rcpts:
            self.cmd("RCPT TO:<%s>" % r, 250, "2.1.5")
        self.cmd("DATA", 354)
        self.send(data if stuffed else dot_stuff(data))
        return self.reply()

    def bdat(self, chunk, last=False):
        """Send one BDAT chunk; returns the reply."""
        self.send(b"BDAT %d%s\r\n" % (len(chunk), b" LAST" if last else b"")
                  + chunk)
        return self.reply()

    def quit(self):
        try:
            self.cmd("QUIT", 221, "2.0.0")
        finally:
            self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


QUEUED_RE = re.compile(r"queued as ([0-9A-Fa-f]{16})\b")


def wait_for(fn, timeout=15.0, what="condition"):
    """Poll fn() until it returns a true value; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.1)


def queue_id(r):
    """The QID of a '250 2.0.0 Ok: queued as <QID>' reply (asserted)."""
    check_reply(r, 250, "2.0.0")
    m = QUEUED_RE.search(r.text)
    if not m:
        raise AssertionError("no queue id (16 hex) in %r" % r.raw)
    return m.group(1)


def check_reply(r, code, enhanced=None):
    """Assert r's code and, if given, its enhanced code; an enhanced code
    with fewer than three parts ("5.1") matches as a prefix."""
    want = "%d%s" % (code, " " + enhanced if enhanced else "")
    if r.code != code:
        raise AssertionError("expected %s, got %r" % (want, r.raw))
    if enhanced is not None:
        got = r.enhanced or ""
        ok = (got == enhanced if enhanced.count(".") == 2
              else got.startswith(enhanced + "."))
        if not ok:
            raise AssertionError("expected %s, got %r" % (want, r.raw))
    return r


def dot_stuff(data):
    """DATA wire form of canonical CRLF text (adds the final CRLF.CRLF)."""
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    out = re.sub(rb"(^|\r\n)\.", rb"\1..", data)
    return out + b".\r\n"


# --------------------------------------------------------------------------
# maildir files

class Delivered:
    """A maildir file split into its parts: return_path, delivered_to,
    received (the unfolded first header, postern's), body (the client's
    message bytes), raw (all bytes)."""

    def __init__(self, raw, path=None):
        self.raw = raw
        self.path = path
        self._rest = raw
        self.return_path = self._take(b"Return-Path: ")
        self.delivered_to = self._take(b"Delivered-To: ")
        # postern's Received header: first line + continuation lines
        self.received = None
        self.received_raw = None
        if self._rest.startswith(b"Received: "):
            end = 0
            while True:
                i = self._rest.find(b"\r\n", end)
                if i < 0:
                    end = len(self._rest)
                    break
                end = i + 2
                if self._rest[end:end + 1] not in (b" ", b"\t"):
                    break
            self.received_raw = self._rest[:end]
            self.received = re.sub(rb"\r\n[ \t]+", b" ",
                                   self.received_raw[len(b"Received: "):]
                                   ).rstrip(b"\r\n").decode("utf-8", "replace")
            self._rest = self._rest[end:]
        self.body = self._rest

    def _take(self, prefix):
        if self._rest.startswith(prefix):
            i = self._rest.find(b"\r\n")
            if i >= 0:
                value = self._rest[len(prefix):i].decode("utf-8", "replace")
                self._rest = self._rest[i + 2:]
                return value
        return None


# --------------------------------------------------------------------------
# postern process

# Started as root (CI), postern must drop to an account: tools/setup
# creates this one.
RUN_AS = "postern"


def default_config(tmp, port):
    conf = {
        "hostname": HOSTNAME,
        "listeners": [{"address": "127.0.0.1", "port": port}],
        "relay": {"trusted_networks": ["127.0.0.1/32"]},
        # small log segments: tests fill, reuse and rotate them
        "queue": {"directory": os.path.join(tmp, "spool"),
                  "segment_size": "1M"},
        "delivery": {"default_route": "maildir:" + os.path.join(tmp, "mail")},
        "logging": {"level": "debug"},
        # Lookups never leave loopback: /etc/hosts answers for 127.0.0.1,
        # anything else meets a closed port and fails at once. Tests that
        # need DNS start a Dnsmasq and point the resolver at it.
        "resolver": {"nameservers": ["127.0.0.1:%d" % free_port()],
                     "timeout": 500, "tries": 1},
        # tests compare delivered text byte for byte; the Date and
        # Message-ID postern adds for trusted clients are tested on their own
        "smtp": {"add_missing_headers": False},
        # a SIGTERM drain waits at most this long for open transactions
        # and deliveries (test_drain.py sets its own)
        "limits": {"drain_timeout": 5},
    }
    if os.geteuid() == 0:
        conf["user"] = RUN_AS
        conf["group"] = RUN_AS
    return conf


class Postern:
    """One postern process on a generated config inside `tmp`.

    overrides are merged over default_config(); the first listener's
    address and port are self.host / self.port."""

    def __init__(self, tmp, overrides=None, binary=None, env=None,
                 name="postern"):
        self.tmp = tmp
        self.name = name
        self.binary = binary or POSTERN_BIN
        self.env = dict(os.environ) if env is None else env
        self.port = free_port()
        self.config = merge(default_config(tmp, self.port), overrides)
        self.conf_path = os.path.join(tmp, name + ".conf")
        self.log_path = os.path.join(tmp, name + ".log")
        self.proc = None
        self.log_offset = 0     # start of the current run in the log
        self.exit_codes = []

    # -- derived paths
    @property
    def host(self):
        return self.config["listeners"][0]["address"]

    @property
    def listen_port(self):
        return self.config["listeners"][0]["port"]

    def _route_dir(self):
        route = self.config.get("delivery", {}).get("default_route", "")
        if route.startswith("maildir:"):
            return route[len("maildir:"):]
        return None

    @property
    def maildir(self):
        return self._route_dir()

    @property
    def spool(self):
        return self.config.get("queue", {}).get("directory")

    def write_config(self):
        with open(self.conf_path, "w") as f:
            f.write(render_libconfig(self.config))

    # -- lifecycle
    def start(self, wait=True):
        """Write the config, start postern, wait for event=ready. If the
        listener port the harness picked was taken meanwhile (another test
        bound it first), pick a new one and try again (3 times)."""
        for attempt in range(3):
            try:
                return self._start(wait)
            except AssertionError:
                if not (wait and attempt < 2 and self._port_race()):
                    raise
                self.port = free_port()
                self.config["listeners"][0]["port"] = self.port

    def _port_race(self):
        auto = (self.listen_port == self.port)
        return auto and re.search(rb"(?i)address already in use|EADDRINUSE",
                                  self.log()) is not None

    def _start(self, wait):
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("postern already running")
        if os.geteuid() == 0:
            # after its privilege drop postern must still reach its spool
            # and maildir inside tmp (mkdtemp makes it 0700)
            os.chmod(self.tmp, os.stat(self.tmp).st_mode | 0o711)
        self.write_config()
        self.log_offset = (os.path.getsize(self.log_path)
                           if os.path.exists(self.log_path) else 0)
        with open(self.log_path, "ab") as f:
            f.write(("=== harness: starting %s -c %s at %s\n"
                     % (self.binary, self.conf_path, time.strftime(
                         "%H:%M:%S"))).encode())
        self.log_offset = os.path.getsize(self.log_path)
        self.proc = spawn([self.binary, "-c", self.conf_path], self.log_path,
                          cwd=self.tmp, env=self.env)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            if re.search(rb"event=ready\b", self.log()):
                return
            code = self.proc.poll()
            if code is not None:
                _forget_proc(self.proc)
                raise AssertionError(
                    "postern exited with %d before event=ready; log tail:\n%s"
                    % (code, self.log_tail()))
            if time.monotonic() > deadline:
                _kill_proc(self.proc)
                raise AssertionError(
                    "postern not ready after %.0f s; log tail:\n%s"
                    % (timeout, self.log_tail()))
            time.sleep(0.02)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=STOP_TIMEOUT, check=True):
        """SIGTERM, wait; SIGKILL by PID if it does not exit in time.
        With check, assert exit code 0 and no sanitizer report in the log."""
        if self.proc is None:
            return None
        p = self.proc
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                stacks = _thread_stacks(p.pid, self.log_path + ".stacks")
                _kill_proc(p)
                self.proc = None
                self.exit_codes.append(None)
                if check:
                    raise AssertionError(
                        "postern did not exit %.0f s after SIGTERM (killed); "
                        "log tail:\n%s\nthreads (%s.stacks):\n%s"
                        % (timeout, self.log_tail(), self.log_path,
                           stacks[-6000:]))
                return None
        _forget_proc(p)
        self.proc = None
        code = p.returncode
        self.exit_codes.append(code)
        if check:
            self.check_log_clean()
            if code != 0:
                raise AssertionError("postern exited with %d after SIGTERM; "
                                     "log tail:\n%s" % (code, self.log_tail()))
        return code

    def kill9(self):
        """SIGKILL by PID, no checks (crash simulation)."""
        if self.proc is None:
            return
        _kill_proc(self.proc)
        self.exit_codes.append(self.proc.returncode)
        self.proc = None

    def restart(self, overrides=None, check=True):
        """stop() (checked) if running, merge overrides, start again."""
        if self.running():
            self.stop(check=check)
        if overrides:
            self.config = merge(self.config, overrides)
        return self.start()

    # -- logs
    def log(self, whole=False):
        """Bytes of the log of the current run (or the whole file)."""
        try:
            with open(self.log_path, "rb") as f:
                if not whole:
                    f.seek(self.log_offset)
                return f.read()
        except FileNotFoundError:
            return b""

    def reload(self, ok=True):
        """SIGHUP, then wait for its outcome in the log (the next one) and
        assert it: reloaded, or with ok=False reload_failed."""
        rx = rb"event=(reloaded|reload_failed)"
        before = len(re.findall(rx, self.log()))
        os.kill(self.pid, signal.SIGHUP)
        deadline = time.monotonic() + 15
        while True:
            found = re.findall(rx, self.log())
            if len(found) > before:
                break
            if time.monotonic() > deadline:
                raise AssertionError("no reload outcome in the log:\n%s"
                                     % self.log_tail())
            time.sleep(0.05)
        want = b"reloaded" if ok else b"reload_failed"
        if found[-1] != want:
            raise AssertionError("reload: %s, not %s; log tail:\n%s"
                                 % (found[-1].decode(), want.decode(),
                                    self.log_tail()))

    def log_tail(self, n=60):
        lines = self.log(whole=True).decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])

    def wait_for_log(self, pattern, timeout=30.0, count=1):
        """Wait until pattern (bytes or str regex) matches the current run's
        log (count times at least); returns the count-th match. A client that
        has its reply may be ahead of the log line: postern may write the
        reply before it logs."""
        if isinstance(pattern, str):
            pattern = pattern.encode()
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            ms = list(rx.finditer(self.log()))
            if len(ms) >= count:
                return ms[count - 1]
            if time.monotonic() > deadline:
                raise AssertionError("log never matched %r; tail:\n%s"
                                     % (pattern, self.log_tail()))
            time.sleep(0.02)

    def check_log_clean(self):
        m = SANITIZER_RE.search(self.log(whole=True))
        if m:
            raise AssertionError("sanitizer report in the postern log:\n%s"
                                 % self.log_tail(120))

    # -- clients
    def smtp(self, host=None, port=None, timeout=CLIENT_TIMEOUT, **kw):
        """smtplib.SMTP connected to the listener (greeting read)."""
        return smtplib.SMTP(host or self.host, port or self.listen_port,
                            timeout=timeout, **kw)

    def client(self, host=None, port=None, timeout=CLIENT_TIMEOUT,
               source=None):
        """SMTPClient connected to the listener (greeting not read)."""
        return SMTPClient(host or self.host, port or self.listen_port,
                          timeout=timeout, source=source)

    def session(self, name="client.test", **kw):
        """SMTPClient after greeting and EHLO."""
        c = self.client(**kw)
        c.start(name)
        return c

    # -- maildir
    def maildir_paths(self, sub="new", maildir=None):
        d = os.path.join(maildir or self.maildir, sub)
        try:
            names = [n for n in os.listdir(d) if not n.startswith(".")]
        except FileNotFoundError:
            return []
        paths = [os.path.join(d, n) for n in names]
        keyed = []
        for p in paths:
            try:
                keyed.append((os.stat(p).st_mtime_ns, p))
            except FileNotFoundError:
                pass
        return [p for _, p in sorted(keyed)]

    def maildir_count(self, maildir=None):
        return len(self.maildir_paths(maildir=maildir))

    def wait_for_maildir(self, n, timeout=30.0, settle=0.0, maildir=None):
        """Wait until DIR/new/ holds at least n files; then, if settle > 0,
        wait that long more and re-read (so extras show up). Returns the
        files' bytes, oldest first."""
        deadline = time.monotonic() + timeout
        while True:
            paths = self.maildir_paths(maildir=maildir)
            if len(paths) >= n:
                break
            if time.monotonic() > deadline:
                raise AssertionError(
                    "maildir %s/new has %d of %d messages after %.0f s; "
                    "log tail:\n%s" % (maildir or self.maildir, len(paths), n,
                                       timeout, self.log_tail()))
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError("postern exited (%s) while waiting for "
                                     "the maildir; log tail:\n%s"
                                     % (self.proc.returncode,
                                        self.log_tail()))
            time.sleep(0.02)
        if settle:
            time.sleep(settle)
            paths = self.maildir_paths(maildir=maildir)
        out = []
        for p in paths:
            with open(p, "rb") as f:
                out.append(f.read())
        return out

    def wait_for_delivered(self, n, **kw):
        return [Delivered(b) for b in self.wait_for_maildir(n, **kw)]

    def queue_list(self, timeout=30.0):
        """The queue as the running gateway lists it (the control socket's
        LIST JSON): a list of message dicts. Small messages live in the
        log's segments, not in files of their own, so this - not a
        directory listing - says what is queued."""
        data = unix_request(os.path.join(self.spool, "control.sock"),
                            b"LIST JSON\n", timeout)
        head, _, body = data.partition(b"\n")
        if not head.startswith(b"OK"):
            raise AssertionError("queue LIST: %r" % head)
        return json.loads(body)["messages"]

    def wait_queue_empty(self, timeout=30.0):
        """Wait until the gateway lists no message (delivered, or failed
        and removed); asserts."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.queue_list()
            if not left:
                return
            if time.monotonic() > deadline:
                raise AssertionError("%d messages still queued after %.0f s;"
                                     " log tail:\n%s" % (len(left), timeout,
                                                         self.log_tail()))
            time.sleep(0.05)

    def spool_files(self, sub="incoming"):
        """Files under <spool>/<sub>/ (recursively), [] if absent."""
        root = os.path.join(self.spool, sub) if sub else self.spool
        out = []
        for dirpath, _, files in os.walk(root):
            out.extend(os.path.join(dirpath, f) for f in files)
        return sorted(out)


# --------------------------------------------------------------------------
# fake downstream SMTP / LMTP server

class Transaction:
    """One mail transaction seen by FakeDownstream."""

    def __init__(self, session):
        self.session = session
        self.helo = session.helo
        self.mail_from = None
        self.mail_params = []       # ["SIZE=123", "BODY=8BITMIME"]
        self.rcpts = []             # accepted and refused, in order
        self.rcpt_params = []       # parameters per entry of rcpts
        self.rcpt_replies = []      # the reply line given to each RCPT
        self.accepted_rcpts = []
        self.data_raw = b""         # DATA as on the wire, dot-stuffed,
                                    # final CRLF.CRLF included; BDAT: chunks
        self.data = b""             # unstuffed (DATA) / concatenated (BDAT)
        self.bdat = False
        self.data_replies = []      # reply line(s) after the end of data
        self.complete = False       # end of data reached

    @property
    def accepted(self):
        """True if the end-of-data reply was 2xx (LMTP: any recipient)."""
        return any(r[:1] == "2" for r in self.data_replies)

    def __repr__(self):
        return ("Transaction(from=%r, rcpts=%r, %d bytes, replies=%r)"
                % (self.mail_from, self.rcpts, len(self.data),
                   self.data_replies))


class Session:
    def __init__(self, peer):
        self.peer = peer
        self.helo = None
        self.helo_verb = None
        self.commands = []          # every command line (bytes, no CRLF)
        self.transactions = []
        self.tls = False
        self.tls_resumed = False    # the client resumed a TLS session
        self.closed = False


class FakeDownstream:
    """A threaded, scriptable SMTP (or LMTP) server on a free loopback port.

    script maps a command key to replies: GREETING, EHLO, HELO, LHLO, MAIL,
    RCPT, DATA (the 354), DATA_END (after the final dot; in LMTP mode one
    reply is used per accepted recipient), BDAT, BDAT_LAST, RSET, NOOP,
    QUIT, VRFY, STARTTLS, UNKNOWN. A value is
      - a string: used every time ("\\n" separates lines of a multi-line
        reply, the harness adds the continuation marks),
      - a list: one entry per occurrence, the default once used up,
      - a callable f(server, session, arg) returning a string.
    A reply string "@close" closes the connection without a reply; "@hang"
    sends nothing and waits until the connection or the server closes;
    "@delay:SECONDS <reply>" waits then answers.

    extensions: the EHLO keywords (default PIPELINING, 8BITMIME, SIZE,
    ENHANCEDSTATUSCODES, SMTPUTF8). CHUNKING is honoured if listed; STARTTLS
    if listed and tls_context is given.
    """

    DEFAULT_EXTENSIONS = ["PIPELINING", "8BITMIME", "SIZE 104857600",
                          "ENHANCEDSTATUSCODES", "SMTPUTF8"]
    DEFAULTS = {
        "GREETING": "220 fake.test ESMTP fake",
        "MAIL": "250 2.1.0 Ok",
        "RCPT": "250 2.1.5 Ok",
        "DATA": "354 End data with <CR><LF>.<CR><LF>",
        "DATA_END": "250 2.0.0 Ok: queued",
        "BDAT": None,                # "250 2.0.0 <n> octets received"
        "BDAT_LAST": "250 2.0.0 Ok: queued",
        "RSET": "250 2.0.0 Ok",
        "NOOP": "250 2.0.0 Ok",
        "QUIT": "221 2.0.0 Bye",
        "VRFY": "252 2.5.0 Cannot VRFY",
        "STARTTLS": "220 2.0.0 Ready to start TLS",
        "UNKNOWN": "500 5.5.2 Error: command not recognized",
    }
    MAX_LINE = 1 << 20
    MAX_DATA = 256 << 20

    def __init__(self, script=None, extensions=None, lmtp=False,
                 host="127.0.0.1", port=None, hostname="fake.test",
                 tls_context=None, start=True):
        self.script = dict(script or {})
        self.extensions = list(self.DEFAULT_EXTENSIONS if extensions is None
                                else extensions)
        self.lmtp = lmtp
        self.host = host
        self.port = port or free_port(host)
        self.hostname = hostname
        self.tls_context = tls_context
        self.sessions = []
        self.counts = {}            # command key -> occurrences so far
        self.cond = threading.Condition()
        self.lsock = None
        self.accept_thread = None
        self.conns = {}             # socket -> thread
        self.stopping = False
        self.errors = []            # exceptions in handler threads
        with _registry_lock:
            _live_servers.append(self)
        if start:
            self.up()

    # -- lifecycle
    def up(self):
        """Listen (again) on self.port."""
        if self.lsock is not None:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 5
        while True:
            try:
                s.bind((self.host, self.port))
                break
            except OSError as e:
                if e.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    s.close()
                    raise
                time.sleep(0.05)
        s.listen(128)
        self.lsock = s
        self.stopping = False
        t = threading.Thread(target=self._accept_loop, args=(s,),
                             name="fake-accept", daemon=True)
        self.accept_thread = t
        t.start()

    def down(self, drop_connections=True):
        """Stop listening (connections are refused) and, by default, close
        every open connection."""
        s, self.lsock = self.lsock, None
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        if self.accept_thread is not None:
            self.accept_thread.join(5)
            self.accept_thread = None
        if drop_connections:
            with self.cond:
                conns = list(self.conns.items())
            for c, _ in conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            for _, t in conns:
                t.join(5)

    def stop(self):
        self.stopping = True
        with self.cond:
            self.cond.notify_all()
        self.down()
        with _registry_lock:
            if self in _live_servers:
                _live_servers.remove(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def route(self):
        """A postern route string for this server."""
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s:%s:%d" % ("lmtp" if self.lmtp else "smtp", host, self.port)

    # -- records
    @property
    def transactions(self):
        """Every transaction that reached the end of its data, in order."""
        with self.cond:
            return [t for s in self.sessions for t in s.transactions
                    if t.complete]

    @property
    def accepted(self):
        return [t for t in self.transactions if t.accepted]

    def wait_for_transactions(self, n, timeout=30.0, accepted_only=False):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                got = [t for s in self.sessions for t in s.transactions
                       if t.complete and (t.accepted or not accepted_only)]
                if len(got) >= n:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        "fake downstream saw %d of %d transactions in %.0f s"
                        % (len(got), n, timeout))
                self.cond.wait(min(left, 0.1))

    def wait_for_sessions(self, n, timeout=30.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.sessions) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("fake downstream saw %d of %d "
                                         "sessions" % (len(self.sessions), n))
                self.cond.wait(min(left, 0.1))
            return list(self.sessions)

    def check_errors(self):
        if self.errors:
            raise AssertionError("fake downstream handler failed: %r"
                                 % self.errors)

    # -- serving
    def _accept_loop(self, lsock):
        while True:
            try:
                conn, peer = lsock.accept()
            except OSError:
                return
            if self.stopping or self.lsock is not lsock:
                conn.close()
                return
            t = threading.Thread(target=self._serve, args=(conn, peer),
                                 name="fake-conn", daemon=True)
            with self.cond:
                self.conns[conn] = t
            t.start()

    def _next_reply(self, key, session, arg):
        with self.cond:
            n = self.counts.get(key, 0)
            self.counts[key] = n + 1
        v = self.script.get(key, self.DEFAULTS.get(key))
        if isinstance(v, (list, tuple)):
            v = v[n] if n < len(v) else self.DEFAULTS.get(key)
        if callable(v):
            v = v(self, session, arg)
        return v

    def _serve(self, conn, peer):
        session = Session(peer)
        with self.cond:
            self.sessions.append(session)
            self.cond.notify_all()
        io = _LineIO(conn, self.MAX_LINE)
        try:
            self._dialogue(io, session)
        except (OSError, ConnectionClosed, _Hangup):
            pass
        except Exception as e:      # recorded for check_errors()
            self.errors.append(e)
        finally:
            session.closed = True
            try:
                io.sock.close()
            except OSError:
                pass
            with self.cond:
                self.conns.pop(conn, None)
                self.cond.notify_all()

    def _send(self, io, reply):
        """Send a scripted reply (None: nothing); "@close"/"@hang" end the
        connection by raising _Hangup."""
        if reply is None:
            return True
        if reply == "@close":
            raise _Hangup()
        if reply == "@hang":
            while not self.stopping:
                try:
                    if io.peek_closed():
                        break
                except OSError:
                    break
            raise _Hangup()
        if reply.startswith("@delay:"):
            spec, _, reply = reply[len("@delay:"):].partition(" ")
            time.sleep(float(spec))
        io.send(format_reply(reply))

    def _ehlo_reply(self, name):
        lines = [self.hostname]
        lines += [e for e in self.extensions
                  if e.upper() != "STARTTLS" or self.tls_context is not None]
        code = "250"
        return "\n".join(code + " " + l if i == 0 else l
                         for i, l in enumerate(lines))

    def _dialogue(self, io, s):
        self._send(io, self._next_reply("GREETING", s, None))
        t = None
        while not self.stopping:
            line = io.readline()
            s.commands.append(line)
            text = line.decode("utf-8", "surrogateescape")
            verb, _, arg = text.partition(" ")
            verb = verb.upper()
            if verb in ("EHLO", "HELO", "LHLO"):
                s.helo, s.helo_verb = arg, verb
                t = None
                default = (self._ehlo_reply(arg) if verb != "HELO"
                           else "250 " + self.hostname)
                v = self._next_reply(verb, s, arg)
                self._send(io, default if v is None else v)
            elif verb == "MAIL":
                addr, params = _parse_path(arg, "FROM:")
                reply = self._next_reply("MAIL", s, arg)
                if reply and reply[:1] == "2":
                    t = Transaction(s)
                    t.mail_from, t.mail_params = addr, params
                    with self.cond:
                        s.transactions.append(t)
                self._send(io, reply)
            elif verb == "RCPT":
                addr, params = _parse_path(arg, "TO:")
                reply = self._next_reply("RCPT", s, arg)
                if t is not None:
                    t.rcpts.append(addr)
                    t.rcpt_params.append(params)
                    t.rcpt_replies.append(reply)
                    if reply and reply[:1] == "2":
                        t.accepted_rcpts.append(addr)
                self._send(io, reply)
            elif verb == "DATA":
                reply = self._next_reply("DATA", s, arg)
                self._send(io, reply)
                if reply and reply[:1] == "3":
                    raw, data = io.read_dot_data(self.MAX_DATA)
                    if t is None:
                        t = Transaction(s)
                        with self.cond:
                            s.transactions.append(t)
                    t.data_raw, t.data = raw, data
                    self._end_data(io, s, t)
                    t = None
            elif verb == "BDAT":
                parts = arg.split()
                size = int(parts[0]) if parts and parts[0].isdigit() else -1
                last = len(parts) > 1 and parts[1].upper() == "LAST"
                if size < 0 or size > self.MAX_DATA:
                    self._send(io, "501 5.5.4 Syntax: BDAT size [LAST]")
                    continue
                chunk = io.read_exact(size)
                if t is None:
                    t = Transaction(s)
                    with self.cond:
                        s.transactions.append(t)
                t.bdat = True
                t.data_raw += chunk
                t.data += chunk
                if last:
                    self._end_data(io, s, t, key="BDAT_LAST")
                    t = None
                else:
                    v = self._next_reply("BDAT", s, arg)
                    self._send(io, v if v is not None else
                               "250 2.0.0 %d octets received" % size)
            elif verb == "RSET":
                t = None
                self._send(io, self._next_reply("RSET", s, arg))
            elif verb == "NOOP":
                self._send(io, self._next_reply("NOOP", s, arg))
            elif verb == "VRFY":
                self._send(io, self._next_reply("VRFY", s, arg))
            elif verb == "QUIT":
                self._send(io, self._next_reply("QUIT", s, arg))
                return
            elif verb == "STARTTLS" and self.tls_context is not None:
                reply = self._next_reply("STARTTLS", s, arg)
                self._send(io, reply)
                if reply and reply[:1] == "2":
                    io.start_tls(self.tls_context)
                    s.tls = True
                    s.tls_resumed = io.sock.session_reused
                    s.helo = None
                    t = None
            else:
                self._send(io, self._next_reply("UNKNOWN", s, arg))

    def _end_data(self, io, s, t, key="DATA_END"):
        if self.lmtp:
            replies = [self._next_reply(key, s, r) for r in t.accepted_rcpts]
        else:
            replies = [self._next_reply(key, s, None)]
        t.data_replies = [r for r in replies if r is not None]
        with self.cond:
            t.complete = True
            self.cond.notify_all()
        for r in replies:
            self._send(io, r)


class _Hangup(Exception):
    pass


def format_reply(reply):
    """Wire form of a reply string; lines separated by "\\n" become a
    multi-line reply with the code of the first line."""
    lines = reply.split("\n")
    code = lines[0][:3]
    out = []
    for i, l in enumerate(lines):
        if i > 0 and not re.match(r"^\d{3}[ -]", l):
            l = code + " " + l
        sep = " " if i == len(lines) - 1 else "-"
        out.append(l[:3] + sep + l[4:])
    return ("\r\n".join(out) + "\r\n").encode("utf-8")


def _parse_path(arg, prefix):
    """("addr", [params]) from 'FROM:<addr> P=V ...'."""
    if arg[:len(prefix)].upper() != prefix:
        return None, []
    rest = arg[len(prefix):].lstrip()
    if rest.startswith("<"):
        end = rest.find(">")
        if end < 0:
            return rest, []
        return rest[1:end], rest[end + 1:].split()
    parts = rest.split()
    return (parts[0] if parts else ""), parts[1:]


class _LineIO:
    """Buffered reading over a socket that can switch to TLS."""

    def __init__(self, sock, max_line):
        self.sock = sock
        self.buf = b""
        self.max_line = max_line
        sock.settimeout(None)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionClosed()
        self.buf += chunk

    def readline(self):
        """One line without its CRLF (or bare LF)."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 1:]
                return line[:-1] if line.endswith(b"\r") else line
            if len(self.buf) > self.max_line:
                raise ConnectionClosed()
            self._fill()

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_dot_data(self, limit):
        """Read DATA up to CRLF.CRLF; (raw incl. terminator, unstuffed
        text ending in CRLF)."""
        start = 0
        while True:
            if self.buf.startswith(b".\r\n"):
                end = 0
                break
            i = self.buf.find(b"\r\n.\r\n", start)
            if i >= 0:
                end = i + 2
                break
            if len(self.buf) > limit:
                raise ConnectionClosed()
            start = max(0, len(self.buf) - 4)
            self._fill()
        raw = self.buf[:end + 3]
        self.buf = self.buf[end + 3:]
        text = raw[:end]
        data = re.sub(rb"(^|\r\n)\.", rb"\1", text)
        return raw, data

    def send(self, data):
        self.sock.sendall(data)

    def peek_closed(self):
        """Wait up to 0.1 s; True if the peer closed."""
        self.sock.settimeout(0.1)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return False
        finally:
            try:
                self.sock.settimeout(None)
            except OSError:
                pass
        if not chunk:
            return True
        self.buf += chunk
        return False

    def start_tls(self, ctx):
        if self.buf:
            raise ConnectionClosed()   # data pipelined after STARTTLS
        self.sock = ctx.wrap_socket(self.sock, server_side=True)


# --------------------------------------------------------------------------
# unittest base class

def _safe_id(test_id):
    return re.sub(r"[^A-Za-z0-9_.-]", "_", test_id)


class PosternTestCase(unittest.TestCase):
    """Base class: self.tmp is a fresh directory per test; postern(),
    downstream() start processes/servers that are ended in tearDown (by
    PID); on failure the temp dir (config, logs, spool, maildir) is copied
    to $POSTERN_TEST_LOGS/<test id>/ (or kept in place) and its location
    printed."""

    # subclasses may set default overrides for every postern they start
    postern_overrides = None
    # start one postern in setUp (self.p) when True
    start_postern = False

    def setUp(self):
        super().setUp()
        name = _safe_id(self.id().split(".")[-1])[:40]
        self.tmp = tempfile.mkdtemp(prefix="pst-%s-" % name)
        self._posterns = []
        self._servers = []
        self.addCleanup(self._cleanup_processes)
        if self.start_postern:
            self.p = self.postern()

    def postern(self, overrides=None, start=True, name=None, **kw):
        """A started Postern with class overrides then `overrides`."""
        base = merge(self.postern_overrides or {}, overrides)
        p = Postern(self.tmp, base,
                    name=name or ("postern" if not self._posterns
                                  else "postern%d" % len(self._posterns)),
                    **kw)
        self._posterns.append(p)
        if start:
            p.start()
        return p

    def downstream(self, *args, **kw):
        s = FakeDownstream(*args, **kw)
        self._servers.append(s)
        return s

    def dnsmasq(self, records, domains=("test",)):
        """A Dnsmasq serving records, stopped at cleanup."""
        d = Dnsmasq(self.tmp, records, domains)
        self.addCleanup(d.stop)
        return d

    def tmpfs(self, size, name="fs"):
        """A tmpfs of size bytes mounted at self.tmp/name, this test's own
        (free space nothing else changes); fails if it cannot mount (the
        e2e tests run as root). The cleanup ends this test's processes
        first (they hold files on it), then unmounts."""
        path = os.path.join(self.tmp, name)
        os.mkdir(path)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o",
                            "size=%d,mode=0755" % size, "tmpfs", path],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, "cannot mount a tmpfs on %s (the "
                         "test needs root): %s" % (path, r.stderr))

        def unmount():
            try:
                self._cleanup_processes()
            finally:
                self._posterns, self._servers = [], []
                if subprocess.run(["umount", path],
                                  capture_output=True).returncode != 0:
                    subprocess.run(["umount", "-l", path], check=True)
        self.addCleanup(unmount)
        return path

    def _cleanup_processes(self):
        """Stop every postern (checked: exit 0, no sanitizer report) and
        server; a failed check fails the test, and every process is ended
        whatever happens."""
        problems = []
        for p in self._posterns:
            if p.running():
                try:
                    p.stop()
                except AssertionError as e:
                    problems.append(str(e))
                finally:
                    if p.proc is not None:
                        _kill_proc(p.proc)
                        p.proc = None
            else:
                try:
                    p.check_log_clean()
                except AssertionError as e:
                    problems.append(str(e))
        for s in self._servers:
            s.stop()
        for s in self._servers:
            if s.errors:
                problems.append("fake downstream errors: %r" % s.errors)
        if problems:
            raise AssertionError("\n".join(problems))

    def run(self, result=None):
        if result is None:
            result = self.defaultTestResult()
        before = len(result.failures) + len(result.errors)
        out = super().run(result)
        failed = len(result.failures) + len(result.errors) > before
        tmp = getattr(self, "tmp", None)
        if tmp and os.path.isdir(tmp):
            if failed:
                self._keep(tmp)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
        return out

    def _keep(self, tmp):
        where = tmp
        if TEST_LOGS:
            dest = os.path.join(TEST_LOGS, _safe_id(self.id()))
            try:
                if os.path.exists(dest):
                    shutil.rmtree(dest, ignore_errors=True)
                shutil.copytree(tmp, dest, symlinks=True,
                                ignore_dangling_symlinks=True,
                                ignore=shutil.ignore_patterns("*.sock"))
                shutil.rmtree(tmp, ignore_errors=True)
                where = dest
            except OSError as e:
                sys.stderr.write("harness: could not copy %s: %s\n"
                                 % (tmp, e))
        sys.stderr.write("harness: %s failed; config, logs, spool and "
                         "maildir kept in %s\n" % (self.id(), where))

    # -- assertions
    def assertReply(self, r, code, enhanced=None):
        try:
            check_reply(r, code, enhanced)
        except AssertionError as e:
            self.fail(str(e))
        return r


def message(subject="test", body="Hello.\r\n", sender="sender@example.org",
            rcpt="rcpt@example.net", extra_headers=()):
    """A small canonical CRLF message as bytes."""
    hdrs = ["From: <%s>" % sender, "To: <%s>" % rcpt,
            "Subject: %s" % subject,
            "Message-ID: <%s.%f@client.test>" % (subject.replace(" ", "-"),
                                                 time.time()),
            "Date: Sun, 22 Nov 2026 00:00:00 +0000"]
    hdrs += list(extra_headers)
    text = "\r\n".join(hdrs) + "\r\n\r\n"
    b = text.encode("utf-8")
    return b + (body.encode("utf-8") if isinstance(body, str) else body)


# --------------------------------------------------------------------------
# DNS

class Dnsmasq:
    """dnsmasq on a free loopback port serving only the records given
    (dnsmasq options such as "--host-record=a.test,127.0.0.5",
    "--ptr-record=5.0.0.127.in-addr.arpa,a.test", "--mx-host=...").
    No upstream, no /etc/hosts. Stopped by PID at cleanup."""

    def __init__(self, tmp, records, domains=("test",)):
        # the port was free when picked; another process may bind it
        # before dnsmasq does, which then exits: start it again elsewhere
        for attempt in range(5):
            self.port = free_port()
            args = ["dnsmasq", "--keep-in-foreground",
                    "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                    "--bind-interfaces", "--listen-address=127.0.0.1",
                    "--pid-file=", "--user=", "--port=%d" % self.port]
            args += ["--local=/%s/" % d for d in domains] + list(records)
            self.log_path = os.path.join(tmp, "dnsmasq-%d.log" % self.port)
            self.proc = spawn(args, self.log_path)
            if self._wait_ready():
                return
            _forget_proc(self.proc)
        raise RuntimeError("dnsmasq could not bind a free port in 5 "
                           "attempts: see %s" % self.log_path)

    def _wait_ready(self, timeout=30.0):
        """True once dnsmasq answers; False if it exited (its port was
        taken: the log says so)."""
        # a query for "test" A: any answer (even NXDOMAIN) means it serves
        q = (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
             b"\x04test\x00\x00\x01\x00\x01")
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                with open(self.log_path, "rb") as f:
                    if b"Address already in use" in f.read():
                        return False
                raise RuntimeError("dnsmasq exited: see %s" % self.log_path)
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.settimeout(0.2)
            try:
                u.sendto(q, ("127.0.0.1", self.port))
                u.recvfrom(512)
                return True
            except OSError:
                if time.monotonic() > deadline:
                    raise
            finally:
                u.close()

    def resolver(self, timeout=5000, tries=2):
        """The `resolver` config section that uses this server (postern's
        default timeout and tries: a loaded machine may be slow to
        answer, and a short single try would turn that into a tempfail)."""
        return {"nameservers": ["127.0.0.1:%d" % self.port],
                "timeout": timeout, "tries": tries}

    def stop(self):
        if self.proc.poll() is None:
            _kill_proc(self.proc)
