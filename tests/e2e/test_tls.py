"""TLS end to end: STARTTLS with a certificate the test generates, the
Received comment with version and cipher, the EHLO state reset after the
handshake, plaintext pipelined behind STARTTLS discarded (CVE-2011-0411),
the certificate chosen by SNI among several pairs, TLS 1.0 and 1.1 refused
on both kinds of listener (openssl s_client -tls1 -cipher
DEFAULT@SECLEVEL=0, so the client really offers them), TLS 1.3 suites set apart from the TLS 1.2 list,
renegotiation refused, the handshake deadline, and the implicit-TLS
listener."""

import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import unittest

import harness
from harness import PosternTestCase, SMTPClient, dot_stuff, message

CERTS = None


def make_certs(readable=False):
    """Two self-signed pairs: a.pem for mail.a.test (the default) and
    b.pem for *.b.test. readable: by anyone, as a reload needs (it reads
    them as postern's user, after the privilege drop)."""
    d = tempfile.mkdtemp(prefix="pst-certs-")
    for name, cn, san in (("a", "mail.a.test", "DNS:mail.a.test"),
                          ("b", "mx.b.test", "DNS:*.b.test")):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
             "-keyout", os.path.join(d, name + ".key"),
             "-out", os.path.join(d, name + ".pem"),
             "-subj", "/CN=" + cn, "-addext", "subjectAltName=" + san],
            check=True, capture_output=True, timeout=60)
    if readable:
        os.chmod(d, 0o755)
        for name in os.listdir(d):
            os.chmod(os.path.join(d, name), 0o644)
    return d


def setUpModule():
    global CERTS
    CERTS = make_certs()


def tearDownModule():
    shutil.rmtree(CERTS, ignore_errors=True)


def tls_conf(extra=None):
    conf = {"tls": {"certificates": [
        {"cert": os.path.join(CERTS, "a.pem"),
         "key": os.path.join(CERTS, "a.key")},
        {"cert": os.path.join(CERTS, "b.pem"),
         "key": os.path.join(CERTS, "b.key")}]}}
    return harness.merge(conf, extra)


def client_ctx(verify_name=False):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify_name:
        ctx.load_verify_locations(os.path.join(CERTS, "a.pem"))
        ctx.load_verify_locations(os.path.join(CERTS, "b.pem"))
        ctx.check_hostname = True
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def wrap(c, ctx=None, sni=None):
    """Switch an SMTPClient to TLS (after a 220 to STARTTLS, or at once on
    an implicit-TLS port)."""
    assert c.buf == b"", "unread plaintext before the handshake: %r" % c.buf
    c.sock = (ctx or client_ctx()).wrap_socket(c.sock, server_hostname=sni)
    return c


def peer_cn(sock):
    der = sock.getpeercert(binary_form=True)
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout",
                          "-subject"], input=der, capture_output=True,
                         timeout=30).stdout.decode()
    m = re.search(r"CN\s*=\s*(\S+)", out)
    return m.group(1) if m else out


class StartTLSTest(PosternTestCase):
    def setUp(self):
        super().setUp()
        self.p = self.postern(tls_conf())

    def starttls(self, name="client.test", sni=None, ctx=None):
        c = self.p.client()
        ext = c.start(name)
        self.assertIn("STARTTLS", ext)
        c.cmd("STARTTLS", 220, "2.0.0")
        return wrap(c, ctx, sni)

    def test_delivery_and_received(self):
        c = self.starttls()
        ext = c.ehlo("client.test")
        self.assertNotIn("STARTTLS", ext)
        self.assertReply(c.cmd("STARTTLS"), 503, "5.5.1")
        c.cmd("MAIL FROM:<s@x.test>", 250)
        c.cmd("RCPT TO:<r@x.test>", 250)
        c.cmd("DATA", 354)
        c.send(dot_stuff(message(subject="over tls")))
        c.expect(250, "2.0.0")
        version, cipher = c.sock.version(), c.sock.cipher()[0]
        c.quit()
        d = self.p.wait_for_delivered(1)[0]
        text = d.raw.decode("utf-8", "replace")
        self.assertIn("\r\n\t(using %s with cipher %s (" % (version, cipher),
                      text)
        self.assertIn("with ESMTPS id", text)
        self.assertRegex(self.p.log().decode(),
                         r"event=tls version=%s cipher=%s" % (version, cipher))

    def test_ehlo_state_reset(self):
        c = self.p.client()
        c.start()
        c.cmd("STARTTLS", 220)
        wrap(c)
        # the plaintext EHLO is forgotten: RFC 3207 4.2
        self.assertReply(c.cmd("MAIL FROM:<s@x.test>"), 503, "5.5.1")
        c.ehlo()
        c.cmd("MAIL FROM:<s@x.test>", 250)
        c.quit()

    def test_transaction_forgotten(self):
        c = self.p.client()
        c.start()
        c.cmd("MAIL FROM:<s@x.test>", 250)
        c.cmd("RCPT TO:<r@x.test>", 250)
        c.cmd("STARTTLS", 220)
        wrap(c)
        c.ehlo()
        self.assertReply(c.cmd("DATA"), 503, "5.5.1")
        c.quit()

    def test_pipelined_plaintext_discarded(self):
        """CVE-2011-0411: commands sent in plaintext in the same packet as
        STARTTLS must not be executed after the handshake."""
        c = self.p.client()
        c.start()
        c.send(b"STARTTLS\r\nRSET\r\nNOOP\r\nMAIL FROM:<inject@x.test>\r\n")
        r = c.reply()
        self.assertReply(r, 220, "2.0.0")
        # nothing else was answered in plaintext
        self.assertEqual(c.pending(0.3), b"")
        wrap(c)
        # the first reply over TLS is to our own command
        self.assertReply(c.cmd("QUIT"), 221, "2.0.0")
        self.assertEqual(c.sock.recv(100), b"")
        self.assertRegex(self.p.log().decode(),
                         r"event=starttls_pipelining discarded=\d+")
        self.assertNotIn(b"inject@x.test", self.p.log())

    def test_sni(self):
        ctx = client_ctx(verify_name=True)
        for sni, want in (("mail.a.test", "mail.a.test"),
                          ("mx.b.test", "mx.b.test"),
                          ("other.b.test", "mx.b.test")):
            c = self.starttls(sni=sni, ctx=ctx)
            self.assertEqual(peer_cn(c.sock), want, sni)
            c.quit()
        # an unknown name gets the default (first) certificate
        c = self.starttls(sni="unknown.test")
        self.assertEqual(peer_cn(c.sock), "mail.a.test")
        c.quit()
        c = self.starttls(sni=None)
        self.assertEqual(peer_cn(c.sock), "mail.a.test")
        c.quit()

    def s_client(self, *args, stdin=b"QUIT\r\n"):
        argv = ["openssl", "s_client", "-connect",
                "%s:%d" % (self.p.host, self.p.listen_port),
                "-starttls", "smtp", "-crlf"] + list(args)
        return subprocess.run(argv, input=stdin, capture_output=True,
                              timeout=30)

    def test_old_versions_refused(self):
        ok = self.s_client("-tls1_2")
        self.assertIn(b"Protocol  : TLSv1.2", ok.stdout, ok.stdout[-2000:])
        for flag in ("-tls1", "-tls1_1"):
            r = self.s_client(flag, "-cipher", "DEFAULT@SECLEVEL=0")
            out = r.stdout + r.stderr
            self.assertNotEqual(r.returncode, 0, out[-2000:])
            # the client really offered the old version and postern said no
            self.assertIn(b"alert protocol version", out, out[-2000:])
        # postern sends its alert before it logs: s_client can be gone
        # before the line is written
        refused = rb"op=handshake error=\"[^\"]*unsupported protocol"
        self.p.wait_for_log(refused, count=2)
        self.assertEqual(len(re.findall(refused, self.p.log())), 2,
                         self.p.log_tail())

    def test_renegotiation_refused(self):
        """s_client asks to renegotiate for an 'R' line; postern answers
        with a no_renegotiation alert and never renegotiates. s_client
        takes a line as its command only when the line is all it reads at
        once, so each line is written once the answer to the one before
        it has been printed (a fixed pause was not enough on a loaded
        machine: EHLO and R were read together and R went to postern)."""
        argv = ["openssl", "s_client", "-connect",
                "%s:%d" % (self.p.host, self.p.listen_port),
                "-starttls", "smtp", "-crlf", "-tls1_2", "-msg"]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        out = bytearray()
        grew = threading.Condition()

        def read():
            while True:
                chunk = proc.stdout.read1(65536)
                with grew:
                    if not chunk:
                        out.extend(b"<EOF>")
                    out.extend(chunk)
                    grew.notify_all()
                if not chunk:
                    return

        def wait_for(pattern, start=0, timeout=30):
            """Wait until s_client has printed pattern (after offset
            start)."""
            with grew:
                grew.wait_for(lambda: re.search(pattern, out[start:]) or
                              out.endswith(b"<EOF>"), timeout)
                self.assertTrue(re.search(pattern, out[start:]),
                                "no %r from s_client: %r"
                                % (pattern, bytes(out[-3000:])))

        def send(line):
            with grew:
                mark = len(out)
            proc.stdin.write(line)
            proc.stdin.flush()
            return mark

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            wait_for(rb"Protocol  : TLSv1\.2")
            wait_for(rb"\n250 [^\n]*\n", send(b"EHLO x\n"))
            wait_for(rb"warning no_renegotiation", send(b"R\n"))
            proc.stdin.close()
            proc.wait(timeout=30)
            reader.join(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out = bytes(out)
        self.assertIn(b"RENEGOTIATING", out, out[-3000:])
        # one ServerHello only: the renegotiation never happened
        self.assertEqual(len(re.findall(rb", ServerHello\n", out)), 1,
                         out[-3000:])


class TLSPolicyTest(PosternTestCase):
    def test_tls13_suites_separate(self):
        p = self.postern(tls_conf({"tls": {
            "ciphersuites": "TLS_CHACHA20_POLY1305_SHA256",
            "ciphers": "ECDHE-ECDSA-AES128-GCM-SHA256"}}))
        c = p.client()
        c.start()
        c.cmd("STARTTLS", 220)
        wrap(c)
        self.assertEqual(c.sock.version(), "TLSv1.3")
        self.assertEqual(c.sock.cipher()[0], "TLS_CHACHA20_POLY1305_SHA256")
        c.quit()
        ctx = client_ctx()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        c = p.client()
        c.start()
        c.cmd("STARTTLS", 220)
        wrap(c, ctx)
        self.assertEqual(c.sock.version(), "TLSv1.2")
        self.assertEqual(c.sock.cipher()[0], "ECDHE-ECDSA-AES128-GCM-SHA256")
        c.quit()

    def test_min_version_13(self):
        p = self.postern(tls_conf({"tls": {"min_version": "TLSv1.3"}}))
        ctx = client_ctx()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        c = p.client()
        c.start()
        c.cmd("STARTTLS", 220)
        with self.assertRaises(ssl.SSLError):
            wrap(c, ctx)

    def test_handshake_deadline(self):
        p = self.postern(tls_conf({"limits": {"tls_handshake_timeout": 1}}))
        c = p.client()
        c.start()
        c.cmd("STARTTLS", 220)
        # the 1 s handshake deadline ends it (the log says which
        # deadline), not the 300 s command deadline: no wall-clock bound,
        # a loaded machine may be slow to run the timer
        self.assertTrue(c.closed(60))
        p.wait_for_log(rb"event=timeout state=tls_handshake")

    def test_no_starttls_without_certs(self):
        p = self.postern()
        c = p.session()
        self.assertNotIn("STARTTLS", c.ehlo())
        self.assertReply(c.cmd("STARTTLS"), 502, "5.5.1")
        c.quit()


class ImplicitTLSTest(PosternTestCase):
    def setUp(self):
        super().setUp()
        self.tls_port = harness.free_port()
        self.p = self.postern(tls_conf({
            "limits": {"tls_handshake_timeout": 1},
            "listeners": [{"address": "127.0.0.1",
                           "port": harness.free_port()},
                          {"address": "127.0.0.1", "port": self.tls_port,
                           "tls": "implicit"}]}))

    def test_implicit(self):
        c = wrap(SMTPClient("127.0.0.1", self.tls_port))
        ext = c.start()
        self.assertNotIn("STARTTLS", ext)
        c.cmd("MAIL FROM:<s@x.test>", 250)
        c.cmd("RCPT TO:<r@x.test>", 250)
        c.cmd("DATA", 354)
        c.send(dot_stuff(message(subject="implicit")))
        c.expect(250, "2.0.0")
        c.quit()
        d = self.p.wait_for_delivered(1)[0]
        self.assertIn(b"with ESMTPS id", d.raw)
        self.assertIn(b"(using TLSv1.3 with cipher ", d.raw)

    def test_implicit_old_versions_refused(self):
        for flag in ("-tls1", "-tls1_1"):
            r = subprocess.run(
                ["openssl", "s_client", "-connect",
                 "127.0.0.1:%d" % self.tls_port, flag, "-cipher",
                 "DEFAULT@SECLEVEL=0"], input=b"QUIT\r\n",
                capture_output=True, timeout=30)
            out = r.stdout + r.stderr
            self.assertNotEqual(r.returncode, 0, out[-2000:])
            self.assertIn(b"alert protocol version", out, out[-2000:])
            self.assertNotIn(b"220 ", out)

    def test_implicit_plaintext_client(self):
        """A plaintext client on the TLS port gets no SMTP greeting and
        is dropped."""
        c = SMTPClient("127.0.0.1", self.tls_port)
        self.assertEqual(c.pending(0.3), b"")
        c.send(b"EHLO x\r\n")
        self.assertTrue(c.closed(60))

    def test_implicit_handshake_deadline(self):
        c = SMTPClient("127.0.0.1", self.tls_port)
        self.assertTrue(c.closed(60))
        self.p.wait_for_log(rb"event=timeout state=tls_handshake")


if __name__ == "__main__":
    unittest.main()
