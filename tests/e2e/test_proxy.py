"""test_proxy.py - listeners behind the PROXY protocol (docs/SMTP.md
"PROXY protocol", docs/OPERATIONS.md "Behind HAProxy").

Two postern instances behind Debian's haproxy (mode tcp, started here on
free loopback ports): `send-proxy-v2` to both, `send-proxy` (version 1)
to one. The addresses are 127/8 aliases, which Linux routes to loopback
without any set-up: haproxy connects from 127.0.0.10 (version 2) and
127.0.0.11 (version 1), the proxies postern trusts (127.0.0.10/31); the
clients connect to haproxy from 127.0.0.2 (in relay.trusted_networks) and
127.0.0.3 (not). Checked on the wire, in the maildirs, the logs and
/metrics: both instances take traffic; each sees the real client (Received,
logs); the relay decision, the per-IP session limit and the AUTH failure
limit go by the real client; haproxy's health checks (PROXY v2 LOCAL and
v1 UNKNOWN, then EHLO) are answered; a direct connection from outside the
proxies is closed.

Without haproxy, a proxy's connection made here: the header and the
client's pipelined commands (or its TLS ClientHello, on an implicit-TLS
listener) in one write; an IPv4-mapped header address; IPv6 header
clients counted per limits.ipv6_prefix; a LOCAL header
served as the proxy's own connection; a header that never comes, or a bad
one, closed; a reload that turns a listener into a PROXY listener and
back; a drain that closes a connection still waiting for its header;
the reverse lookup and SPF of the header's client (dnsmasq)."""

import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time
import unittest

import harness
import prom
from harness import PosternTestCase, SMTPClient, message, wait_for
from test_auth import crypt_hash, plain
from test_tls import client_ctx, make_certs

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
PROXY_V2 = "127.0.0.10"         # haproxy's source for send-proxy-v2
PROXY_V1 = "127.0.0.11"         # and for send-proxy
PROXIES = "127.0.0.10/31"       # both
CLIENT_OK = "127.0.0.2"         # in relay.trusted_networks
CLIENT_OUT = "127.0.0.3"        # not
REMOTE = "rcpt@remote.test"     # not a relay domain: needs trust

CERTS = None


def setUpModule():
    global CERTS
    CERTS = make_certs(readable=True)       # ProxyDirect reloads


def tearDownModule():
    shutil.rmtree(CERTS, ignore_errors=True)


def v2_header(src, sport, dst="127.0.0.1", dport=25, local=False,
              tlvs=b""):
    """A PROXY protocol version 2 header: TCP over IPv4 or IPv6 (an
    IPv4-mapped src makes both IPv6), or LOCAL."""
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    if local:
        return sig + b"\x20\x00" + struct.pack("!H", 0)
    if ":" in src:
        fam = b"\x21"
        addrs = (socket.inet_pton(socket.AF_INET6, src) +
                 socket.inet_pton(socket.AF_INET6, dst))
    else:
        fam = b"\x11"
        addrs = socket.inet_aton(src) + socket.inet_aton(dst)
    block = addrs + struct.pack("!HH", sport, dport) + tlvs
    return sig + b"\x21" + fam + struct.pack("!H", len(block)) + block


def received(raw):
    """The Received field postern added (the first one), unfolded."""
    m = re.search(rb"^Received: (.*?)\r\n(?![ \t])", raw, re.M | re.S)
    assert m, raw[:400]
    return m.group(1).decode()


class HAProxy:
    """One haproxy process in the foreground (-db) on cfg text, with a
    stats socket; ended by PID at cleanup."""

    def __init__(self, tmp, cfg):
        self.tmp = tmp
        self.sock = os.path.join(tmp, "haproxy.sock")
        self.cfg = os.path.join(tmp, "haproxy.cfg")
        with open(self.cfg, "w") as f:
            f.write("global\n    stats socket %s mode 600 level admin\n"
                    % self.sock + cfg)
        self.assert_ok(HAPROXY, self.cfg)
        self.log = os.path.join(tmp, "haproxy.log")
        self.proc = harness.spawn([HAPROXY, "-db", "-f", self.cfg], self.log)
        wait_for(lambda: os.path.exists(self.sock) or self.died(), 15,
                 "haproxy's stats socket")
        if self.died():
            raise AssertionError("haproxy exited: %s" % open(self.log).read())

    @staticmethod
    def assert_ok(binary, cfg):
        assert os.path.exists(binary), "haproxy: run tools/setup"
        r = subprocess.run([binary, "-c", "-f", cfg], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr

    def died(self):
        return self.proc.poll() is not None

    def stop(self):
        harness._kill_proc(self.proc)

    def servers(self):
        """{(backend, server): row} from `show stat`."""
        data = harness.unix_request(self.sock, b"show stat\n")
        lines = data.decode().splitlines()
        head = lines[0].lstrip("# ").split(",")
        out = {}
        for line in lines[1:]:
            if not line:
                continue
            row = dict(zip(head, line.split(",")))
            out[(row["pxname"], row["svname"])] = row
        return out


class ProxyBehindHAProxy(PosternTestCase):

    def setUp(self):
        super().setUp()
        pw = os.path.join(self.tmp, "passwd")
        with open(pw, "w") as f:
            f.write("app:%s\n" % crypt_hash("right", "$6$"))
        os.chmod(pw, 0o640)
        self.mport = harness.free_port()
        common = {
            "relay": {"trusted_networks": [CLIENT_OK + "/32"],
                      "domains": ["local.test"]},
            "limits": {"proxy_timeout": 2, "sessions_per_ip": 2},
            "auth": {"password_file": pw, "max_failures_per_ip": 2},
        }
        self.a = self.proxied(harness.merge(common, {
            "metrics": {"enabled": True, "port": self.mport},
            "delivery": {"default_route":
                         "maildir:" + os.path.join(self.tmp, "mail-a")}}),
            "a")
        self.b = self.proxied(harness.merge(common, {
            "queue": {"directory": os.path.join(self.tmp, "spool-b")},
            "delivery": {"default_route":
                         "maildir:" + os.path.join(self.tmp, "mail-b")}}),
            "b")
        self.fe2 = harness.free_port()
        self.fe1 = harness.free_port()
        # checks every second, each given 5 s (a loaded machine, a
        # sanitizer build), down only after 3 failures in a row
        chk = "check inter 1s rise 1 fall 3"
        self.ha = HAProxy(self.tmp, """
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout check 5s

frontend v2
    bind 127.0.0.1:%(fe2)d
    default_backend v2

frontend v1
    bind 127.0.0.1:%(fe1)d
    default_backend v1

backend v2
    balance roundrobin
    option smtpchk EHLO haproxy.test
    server a 127.0.0.1:%(a)d send-proxy-v2 source %(src2)s %(chk)s
    server b 127.0.0.1:%(b)d send-proxy-v2 source %(src2)s %(chk)s

backend v1
    option smtpchk EHLO haproxy.test
    server a 127.0.0.1:%(a)d send-proxy source %(src1)s %(chk)s
""" % {"fe2": self.fe2, "fe1": self.fe1, "a": self.a.listen_port,
       "b": self.b.listen_port, "src2": PROXY_V2, "src1": PROXY_V1,
       "chk": chk})
        self.addCleanup(self.ha.stop)
        # the health checks (LOCAL, then EHLO) bring every server up
        wait_for(lambda: all(r["status"] == "UP" and
                             r["check_status"] == "L7OK"
                             for r in self.ha.servers().values()
                             if r["svname"] in ("a", "b")),
                 20, "haproxy's servers up (health checks answered)")

    def proxied(self, overrides, name):
        p = self.postern(overrides, start=False, name=name)
        p.config["listeners"][0].update(
            {"proxy": True, "proxy_trusted": [PROXIES],
             "auth_plaintext": True})
        p.start()
        return p

    def client(self, fe, source):
        c = SMTPClient("127.0.0.1", fe, source=source)
        self.addCleanup(c.close)
        return c

    def test_both_instances_see_the_real_client(self):
        for i in range(4):
            c = self.client(self.fe2, CLIENT_OK)
            c.start()
            r = c.transaction("s@example.org", REMOTE,
                              message("v2 %d" % i, rcpt=REMOTE))
            harness.check_reply(r, 250, "2.0.0")
            c.quit()
        # version 1 (send-proxy) to a
        c = self.client(self.fe1, CLIENT_OK)
        c.start()
        harness.check_reply(c.transaction(
            "s@example.org", REMOTE, message("v1", rcpt=REMOTE)), 250)
        c.quit()
        wait_for(lambda: self.a.maildir_count() + self.b.maildir_count()
                 == 5, 20, "5 messages delivered")
        got = {}
        for p in (self.a, self.b):
            msgs = p.wait_for_maildir(1)
            got[p.name] = len(msgs)
            for raw in msgs:
                rcv = received(raw)
                self.assertIn("[%s]" % CLIENT_OK, rcv)
                self.assertNotIn(PROXY_V2, rcv)
                self.assertNotIn(PROXY_V1, rcv)
            log = p.log().decode()
            self.assertRegex(log, r"event=connect ip=%s port=\d+ listener="
                             r"127\.0\.0\.1:%d proxy=%s:\d+ proxy_version=2"
                             % (re.escape(CLIENT_OK), p.listen_port,
                                re.escape(PROXY_V2)))
        # round robin: both took traffic (a: 2 + the v1 one, b: 2, unless
        # a health check failed meanwhile)
        self.assertGreaterEqual(got["a"], 2)
        self.assertGreaterEqual(got["b"], 1)
        self.assertRegex(self.a.log().decode(),
                         r"event=connect ip=%s port=\d+ listener=\S+ "
                         r"proxy=%s:\d+ proxy_version=1"
                         % (re.escape(CLIENT_OK), re.escape(PROXY_V1)))

    def test_relay_goes_by_the_real_client(self):
        for fe in (self.fe2, self.fe1):
            c = self.client(fe, CLIENT_OUT)
            c.start()
            c.cmd("MAIL FROM:<s@example.org>", 250)
            c.cmd("RCPT TO:<%s>" % REMOTE, 554, "5.7.1")
            # a relay domain is open to anyone
            c.cmd("RCPT TO:<u@local.test>", 250)
            c.quit()
            c = self.client(fe, CLIENT_OK)
            c.start()
            c.cmd("MAIL FROM:<s@example.org>", 250)
            c.cmd("RCPT TO:<%s>" % REMOTE, 250)
            c.quit()
        self.assertRegex(self.a.log().decode() + self.b.log().decode(),
                         r"event=reject phase=rcpt to=\"%s\" code=554"
                         % re.escape(REMOTE))

    def test_per_ip_limits_go_by_the_real_client(self):
        # limits.sessions_per_ip = 2: two sessions from CLIENT_OK through
        # the v1 proxy (to a) are open, a third from it is refused, one
        # from CLIENT_OUT is not - all four come from the proxy's address
        held = []
        for _ in range(2):
            c = self.client(self.fe1, CLIENT_OK)
            c.greeting()
            held.append(c)
        c = self.client(self.fe1, CLIENT_OK)
        c.expect(421, "4.7.0")
        self.assertTrue(c.closed())
        c = self.client(self.fe1, CLIENT_OUT)
        c.start()
        # auth.max_failures_per_ip = 2: CLIENT_OUT's failures limit it,
        # not CLIENT_OK (the same proxy address, another client)
        for _ in range(2):
            c.cmd("AUTH PLAIN " + plain("app", "wrong"), 535, "5.7.8")
        c.cmd("AUTH PLAIN " + plain("app", "right"), 454, "4.7.0")
        c.quit()
        for h in held:
            h.quit()
        c = wait_for(lambda: self.try_session(self.fe1, CLIENT_OK), 10,
                     "a session slot for %s" % CLIENT_OK)
        c.cmd("AUTH PLAIN " + plain("app", "right"), 235, "2.7.0")
        c.quit()
        self.assertRegex(self.a.log().decode(),
                         r"event=auth result=limited login=\"app\" ip=%s"
                         % re.escape(CLIENT_OUT))

    def try_session(self, fe, source):
        """A session past EHLO, or None if it got the per-IP 421 (the
        sessions just closed may not have been counted out yet)."""
        c = self.client(fe, source)
        r = c.reply()
        if r.code == 421:
            c.close()
            return None
        harness.check_reply(r, 220)
        c.ehlo()
        return c

    def test_health_checks_are_answered(self):
        # the checks are the proxy's own sessions and are answered as
        # such (setUp saw them bring the servers up): version 2 sends
        # LOCAL; version 1 names the check's own connection
        for p in (self.a, self.b):
            log = p.log().decode()
            self.assertRegex(
                log, r"event=connect ip=%s port=\d+ listener=\S+ "
                r"proxy=%s:\d+ proxy_version=2 proxy_command=local\n"
                % (re.escape(PROXY_V2), re.escape(PROXY_V2)))
            self.assertIn('event=helo verb=EHLO name="haproxy.test"', log)
        self.assertRegex(
            self.a.log().decode(),
            r"event=connect ip=%s port=\d+ listener=\S+ "
            r"proxy=%s:\d+ proxy_version=1\n"
            % (re.escape(PROXY_V1), re.escape(PROXY_V1)))
        m = prom.scrape(self.mport)
        self.assertGreaterEqual(
            m.get("postern_proxy_connections_total", result="local"), 1)

    def test_direct_connection_from_elsewhere_is_closed(self):
        for p in (self.a, self.b):
            c = p.client(source="127.0.0.1")
            self.addCleanup(c.close)
            self.assertEqual(c.pending(1.0), b"")
            self.assertTrue(c.closed(5))
            p.wait_for_log(r"event=proxy_refused ip=127\.0\.0\.1 port=\d+ "
                           r"listener=\S+ result=untrusted")
        # a client that knows the header still is not a proxy
        c = self.a.client(source=CLIENT_OK)
        self.addCleanup(c.close)
        c.send(v2_header("192.0.2.1", 1000) + b"EHLO x\r\n")
        self.assertEqual(c.pending(1.0), b"")
        self.assertTrue(c.closed(5))
        m = prom.scrape(self.mport)
        self.assertEqual(
            m.get("postern_proxy_connections_total", result="untrusted"), 2)


class ProxyDirect(PosternTestCase):
    """A proxy's connections made by the test (from 127.0.0.10)."""

    def setUp(self):
        super().setUp()
        self.mport = harness.free_port()
        self.tport = harness.free_port()
        self.p = self.postern({
            "relay": {"trusted_networks": [CLIENT_OK + "/32"]},
            "limits": {"proxy_timeout": 1, "sessions_per_ip": 2},
            "metrics": {"enabled": True, "port": self.mport},
            "tls": {"certificates": [
                {"cert": os.path.join(CERTS, "a.pem"),
                 "key": os.path.join(CERTS, "a.key")}]},
        }, start=False)
        self.p.config["listeners"][0].update(
            {"proxy": True, "proxy_trusted": [PROXY_V2 + "/32"],
             "tls": "none"})
        self.p.config["listeners"].append(
            {"address": "127.0.0.1", "port": self.tport, "tls": "implicit",
             "proxy": True, "proxy_trusted": [PROXY_V2 + "/32"]})
        self.p.start()

    def proxy(self, port=None):
        return self.direct(PROXY_V2, port)

    def direct(self, source, port=None):
        c = self.p.client(port=port, source=source)
        self.addCleanup(c.close)
        return c

    def test_pipelined_behind_the_header(self):
        # header, then the client's whole transaction in one write: not an
        # octet of it is taken for the header, nor lost
        c = self.proxy()
        body = message("pipelined", rcpt=REMOTE)
        c.send(v2_header(CLIENT_OK, 4242, tlvs=b"\x04\x00\x02xx") +
               b"EHLO client.test\r\nMAIL FROM:<s@example.org>\r\n"
               b"RCPT TO:<%s>\r\nDATA\r\n" % REMOTE.encode() +
               harness.dot_stuff(body) + b"QUIT\r\n")
        codes = [c.reply().code for _ in range(7)]
        self.assertEqual(codes, [220, 250, 250, 250, 354, 250, 221])
        raw = self.p.wait_for_maildir(1)[0]
        self.assertTrue(raw.endswith(body), raw[-200:])
        self.assertIn("[%s]" % CLIENT_OK, received(raw))
        self.p.wait_for_log(r"event=connect ip=%s port=4242 "
                            % re.escape(CLIENT_OK))

    def test_version1_octet_by_octet(self):
        c = self.proxy()
        for b in b"PROXY TCP4 %s 127.0.0.1 5555 25\r\n" % CLIENT_OK.encode():
            c.send(bytes([b]))
        c.start()
        c.cmd("MAIL FROM:<s@example.org>", 250)
        c.cmd("RCPT TO:<%s>" % REMOTE, 250)
        c.quit()

    def test_ipv4_mapped_client_is_ipv4(self):
        c = self.proxy()
        c.send(v2_header("::ffff:" + CLIENT_OK, 6000, dst="::1"))
        c.start()
        r = c.transaction("s@example.org", REMOTE,
                          message("mapped", rcpt=REMOTE))
        harness.check_reply(r, 250)     # trusted: 127.0.0.2/32 matched
        c.quit()
        rcv = received(self.p.wait_for_maildir(1)[0])
        self.assertIn("[%s]" % CLIENT_OK, rcv)
        self.assertNotIn("IPv6", rcv)

    def test_ipv6_clients_counted_per_prefix(self):
        # limits.sessions_per_ip = 2, limits.ipv6_prefix = 64: the header's
        # IPv6 clients are counted per /64, as on a listener without a proxy
        def hello(src):
            c = self.proxy()
            c.send(v2_header(src, 1234, dst="2001:db8::25"))
            return c, c.reply()
        held = []
        for src in ("2001:db8::1", "2001:db8::2"):
            c, r = hello(src)
            harness.check_reply(r, 220)
            held.append(c)
        c, r = hello("2001:db8::3")
        harness.check_reply(r, 421, "4.7.0")
        c, r = hello("2001:db8:0:1::1")
        harness.check_reply(r, 220)
        c.ehlo()
        c.cmd("MAIL FROM:<s@example.org>", 250)
        c.cmd("RCPT TO:<%s>" % REMOTE, 554, "5.7.1")    # not trusted
        c.quit()
        self.p.wait_for_log(r"event=reject phase=connect code=421 "
                            r"reason=sessions_per_ip sessions=3")
        self.p.wait_for_log(r"event=connect ip=2001:db8:0:1::1 port=1234 ")

    def test_local_is_the_proxys_own_connection(self):
        c = self.proxy()
        c.send(v2_header(None, 0, local=True))
        c.start()
        # the proxy (127.0.0.10) is not trusted to relay
        c.cmd("MAIL FROM:<s@example.org>", 250)
        c.cmd("RCPT TO:<%s>" % REMOTE, 554, "5.7.1")
        c.quit()
        self.p.wait_for_log(r"event=connect ip=%s port=\d+ listener=\S+ "
                            r"proxy=\S+ proxy_version=2 proxy_command=local"
                            % re.escape(PROXY_V2))

    def test_implicit_tls_client_hello_behind_the_header(self):
        # the header and the ClientHello in one write: the handshake
        # must start from the octet after the header
        sock = socket.socket()
        sock.settimeout(10)
        sock.bind((PROXY_V2, 0))
        sock.connect(("127.0.0.1", self.tport))
        self.addCleanup(sock.close)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = client_ctx().wrap_bio(inc, out)
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        sock.sendall(v2_header(CLIENT_OK, 7000) + out.read())

        def pump():
            if out.pending:
                sock.sendall(out.read())
            data = sock.recv(65536)
            self.assertTrue(data, "closed during the handshake")
            inc.write(data)

        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pump()
        if out.pending:
            sock.sendall(out.read())

        def line():
            buf = b""
            while not buf.endswith(b"\r\n"):
                try:
                    buf += tls.read(1)
                except ssl.SSLWantReadError:
                    pump()
            return buf

        self.assertTrue(line().startswith(b"220 "))
        tls.write(b"QUIT\r\n")
        sock.sendall(out.read())
        self.assertTrue(line().startswith(b"221 "))
        self.p.wait_for_log(r"event=connect ip=%s port=7000 listener="
                            r"127\.0\.0\.1:%d" % (re.escape(CLIENT_OK),
                                                  self.tport))
        self.p.wait_for_log(r"event=tls version=")

    def test_no_header_or_a_bad_one_closes(self):
        t0 = time.monotonic()
        silent = self.proxy()
        bad = self.proxy()
        bad.send(b"EHLO x\r\n")
        self.assertTrue(bad.closed(5))
        self.assertEqual(bad.buf, b"")
        # limits.proxy_timeout = 1: no greeting, closed
        self.assertTrue(silent.closed(10))
        self.assertGreaterEqual(time.monotonic() - t0, 0.5)
        self.assertEqual(silent.buf, b"")
        self.p.wait_for_log(r"event=proxy_refused ip=%s port=\d+ "
                            r"listener=\S+ result=timeout"
                            % re.escape(PROXY_V2))
        self.p.wait_for_log(r"result=invalid reason=\"no PROXY header\"")
        m = prom.scrape(self.mport)
        self.assertEqual(
            m.get("postern_proxy_connections_total", result="timeout"), 1)
        self.assertEqual(
            m.get("postern_proxy_connections_total", result="invalid"), 1)

    def test_drain_closes_a_connection_waiting_for_its_header(self):
        c = self.proxy()
        # accepted (nothing is logged before the header)
        wait_for(lambda: prom.scrape(self.mport).get(
            "postern_sessions_open",
            listener="127.0.0.1:%d" % self.p.listen_port) == 1, 10,
            "the connection accepted")
        os.kill(self.p.pid, signal.SIGTERM)
        self.assertTrue(c.closed(5))
        self.assertEqual(c.buf, b"")
        self.p.wait_for_log(r"event=disconnect reason=\"drain\"")
        self.assertEqual(self.p.stop(), 0)

    def test_reload_applies_to_new_connections(self):
        old = self.proxy()
        old.send(v2_header(CLIENT_OK, 8000))
        old.start()
        lc = self.p.config["listeners"][0]
        lc["proxy"] = False
        trusted = lc.pop("proxy_trusted")
        self.p.write_config()
        os.kill(self.p.pid, signal.SIGHUP)
        self.p.wait_for_log(r"event=reloaded generation=2")
        # new connections are plain SMTP now: a header is a bad command
        c = self.direct(CLIENT_OUT)
        c.start()
        c.quit()
        c = self.proxy()
        c.greeting()
        c.send(v2_header(CLIENT_OK, 8001))
        self.assertEqual(c.reply().code, 500)
        c.close()
        # and back: a direct connection is closed again
        lc.update({"proxy": True, "proxy_trusted": trusted})
        self.p.write_config()
        os.kill(self.p.pid, signal.SIGHUP)
        self.p.wait_for_log(r"event=reloaded generation=3")
        c = self.direct(CLIENT_OUT)
        self.assertTrue(c.closed(5))
        self.assertEqual(c.buf, b"")
        # the session from before the reloads goes on, as the proxied
        # client it was (trusted to relay)
        old.cmd("MAIL FROM:<s@example.org>", 250)
        old.cmd("RCPT TO:<%s>" % REMOTE, 250)
        old.quit()


class ProxyLookups(PosternTestCase):
    """The header's client in what postern looks up: the reverse lookup
    (Received) and SPF (a record that passes the proxy fails the client)."""

    def test_reverse_lookup_and_spf_see_the_client(self):
        dns = self.dnsmasq([
            "--ptr-record=2.0.0.127.in-addr.arpa,client.proxied.test",
            "--host-record=client.proxied.test,127.0.0.2",
            "--ptr-record=10.0.0.127.in-addr.arpa,proxy.proxied.test",
            "--host-record=proxy.proxied.test,127.0.0.10",
            "--txt-record=client.test,v=spf1 ip4:%s -all" % CLIENT_OK,
            "--txt-record=proxy.test,v=spf1 ip4:%s -all" % PROXY_V2,
        ])
        p = self.postern({
            "relay": {"trusted_networks": [], "domains": ["dest.test"]},
            "resolver": dns.resolver(),
            "filters": [{"module": "spf"}],
        }, start=False)
        p.config["listeners"][0].update(
            {"proxy": True, "proxy_trusted": [PROXY_V2 + "/32"]})
        p.start()
        c = p.client(source=PROXY_V2)
        self.addCleanup(c.close)
        c.send(v2_header(CLIENT_OK, 9000))
        c.start()
        # the proxy's domain passes the proxy, not the client
        c.cmd("MAIL FROM:<a@proxy.test>", 250)
        c.cmd("RCPT TO:<u@dest.test>", 550, "5.7.23")
        c.cmd("RSET", 250)
        r = c.transaction("a@client.test", "u@dest.test",
                          message("spf", sender="a@client.test",
                                  rcpt="u@dest.test"))
        harness.check_reply(r, 250)
        c.quit()
        raw = p.wait_for_maildir(1)[0]
        self.assertIn("(client.proxied.test [%s])" % CLIENT_OK, received(raw))
        self.assertRegex(raw.decode(), r"(?s)Received-SPF: pass .*"
                         r"client-ip=%s;" % re.escape(CLIENT_OK))


if __name__ == "__main__":
    unittest.main()
