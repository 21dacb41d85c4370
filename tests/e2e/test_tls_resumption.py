"""test_tls_resumption.py - TLS session resumption on postern's listeners
(docs/CONFIG.md "tls"): a returning client resumes with the ticket it was
given, in TLS 1.3 and TLS 1.2, with openssl s_client (-sess_out, then
-sess_in: "Reused") and with Python's ssl (session=, session_reused);
tickets still resume after a SIGHUP reload (the keys are the process's,
not the generation's), never after a restart (random per process), and
not at all with tls.session_tickets = false. Each handshake's
`event=tls ... resumed=` and the metric postern_tls_resumed_total agree.

The ticket keys' rotation (a key seals tickets for tls.session_timeout,
then only opens them for as long again) is tested with a fake clock in
tests/unit/tls_test.c."""

import os
import re
import ssl
import subprocess
import unittest

import harness
import prom
from harness import PosternTestCase
from test_tls import client_ctx, make_certs, wrap

CERTS = None


def setUpModule():
    global CERTS
    CERTS = make_certs(readable=True)   # a reload reads them too


def tearDownModule():
    import shutil
    shutil.rmtree(CERTS, ignore_errors=True)


def conf(extra=None):
    return harness.merge({"tls": {"certificates": [
        {"cert": os.path.join(CERTS, "a.pem"),
         "key": os.path.join(CERTS, "a.key")},
        {"cert": os.path.join(CERTS, "b.pem"),
         "key": os.path.join(CERTS, "b.key")}]}}, extra)


class Resumption(PosternTestCase):

    def setUp(self):
        super().setUp()
        self.ctx = client_ctx()     # Python resumes within one context

    def s_client(self, p, version, sess_flag, sess_file, sni=None):
        """One STARTTLS session with s_client, QUIT, and the line saying
        whether it was "New" or "Reused". -ign_eof: s_client waits for
        postern to close after the 221, so a TLS 1.3 ticket (sent after
        the handshake) has arrived before -sess_out writes the session."""
        argv = ["openssl", "s_client", "-connect",
                "%s:%d" % (p.host, p.listen_port), "-starttls", "smtp",
                "-crlf", "-ign_eof", version, sess_flag, sess_file]
        if sni:
            argv += ["-servername", sni]
        r = subprocess.run(argv, input=b"QUIT\n", capture_output=True,
                           timeout=30)
        out = r.stdout.decode("utf-8", "replace")
        m = re.search(r"^(New|Reused), (TLSv1\.[23]),", out, re.M)
        self.assertIsNotNone(m, out[-2000:] + r.stderr.decode()[-2000:])
        self.assertEqual(m.group(2), version.replace("-tls1_", "TLSv1."))
        self.assertIn("221 2.0.0", out)
        return m.group(1)

    def python_session(self, p, session=None, ctx=None, sni=None):
        """STARTTLS with Python's ssl, offering session; (session to
        keep, resumed?). The session is taken after a reply came over TLS
        (a TLS 1.3 ticket follows the handshake)."""
        c = p.client()
        c.start()
        c.cmd("STARTTLS", 220, "2.0.0")
        assert c.buf == b""
        c.sock = (ctx or self.ctx).wrap_socket(
            c.sock, server_hostname=sni, session=session)
        c.ehlo()
        reused, sess = c.sock.session_reused, c.sock.session
        c.quit()
        return sess, reused

    def resumed_log(self, p):
        return re.findall(rb"event=tls version=\S+ cipher=\S+ bits=\d+ "
                          rb"sni=\S+ resumed=(yes|no)", p.log())

    def test_s_client_resumes_across_reload(self):
        mport = harness.free_port()
        p = self.postern(conf({"metrics": {"enabled": True,
                                           "port": mport}}))
        want = []
        for version in ("-tls1_3", "-tls1_2"):
            sess = os.path.join(self.tmp, "sess%s.pem" % version)
            self.assertEqual(self.s_client(p, version, "-sess_out", sess),
                             "New")
            self.assertEqual(self.s_client(p, version, "-sess_in", sess),
                             "Reused")
            p.reload()
            self.assertEqual(self.s_client(p, version, "-sess_in", sess),
                             "Reused", "after a reload")
            want += [b"no", b"yes", b"yes"]
        self.assertEqual(self.resumed_log(p), want)
        m = prom.scrape(mport)
        self.assertEqual(m.get("postern_tls_handshakes_total", result="ok"),
                         6)
        self.assertEqual(m.get("postern_tls_resumed_total"), 4)

    def test_python_resumes_across_reloads_not_restart(self):
        p = self.postern(conf())
        sess, reused = self.python_session(p)
        self.assertFalse(reused)
        self.assertTrue(sess.has_ticket)
        for _ in range(2):
            p.reload()
            sess2, reused = self.python_session(p, sess)
            self.assertTrue(reused, "after a reload")
        # the SNI-chosen certificate's sessions resume too
        ctx = client_ctx()
        bs, reused = self.python_session(p, None, ctx, "mx.b.test")
        self.assertFalse(reused)
        _, reused = self.python_session(p, bs, ctx, "mx.b.test")
        self.assertTrue(reused, "a session on the SNI certificate")
        # a new process has new keys: the old ticket is refused
        p.restart()
        _, reused = self.python_session(p, sess2)
        self.assertFalse(reused, "a ticket from the previous process")
        self.assertEqual(self.resumed_log(p)[-1], b"no")

    def test_tickets_off(self):
        p = self.postern(conf({"tls": {"session_tickets": False}}))
        sess, reused = self.python_session(p)
        self.assertFalse(reused)
        self.assertFalse(sess.has_ticket)
        _, reused = self.python_session(p, sess)
        self.assertFalse(reused)
        # TLS 1.2: no ticket and no session cache, so not even a session
        # id is given: s_client has no session to save
        sess_file = os.path.join(self.tmp, "s12.pem")
        self.assertEqual(self.s_client(p, "-tls1_2", "-sess_out", sess_file),
                         "New")
        self.assertFalse(os.path.exists(sess_file))
        self.assertNotIn(b"resumed=yes", p.log())
        # turned on by a reload: the next client gets a ticket, resumes
        p.config = harness.merge(p.config, {"tls": {"session_tickets":
                                                    True}})
        p.write_config()
        p.reload()
        sess, _ = self.python_session(p)
        self.assertTrue(sess.has_ticket)
        _, reused = self.python_session(p, sess)
        self.assertTrue(reused)


if __name__ == "__main__":
    unittest.main()
