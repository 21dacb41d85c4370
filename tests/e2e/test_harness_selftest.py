"""Self-test of the e2e harness: the libconfig writer, the raw client, the
fake downstream (driven by smtplib and raw sockets), the failure-log keeping
of PosternTestCase, and the postern process lifecycle (start, ready, stop
with exit 0, restart, kill -9, fail fast on a bad config)."""

import os
import smtplib
import socket
import tempfile
import time
import unittest

import harness
from harness import (FakeDownstream, List, PosternTestCase, Raw, SMTPClient,
                     merge, render_libconfig)


def have_postern():
    return os.access(harness.POSTERN_BIN, os.X_OK)


class LibconfigTest(unittest.TestCase):
    def test_render(self):
        text = render_libconfig({
            "hostname": 'a"b\\c',
            "listeners": [{"address": "127.0.0.1", "port": 25},
                          {"address": "::1", "port": 26, "auth": True}],
            "relay": {"trusted_networks": ["127.0.0.1/32", "::1/128"]},
            "limits": {"message_size": 10 * 2**30, "recipients": 5},
            "empty": List([]),
            "raw": Raw("0x10"),
            "gone": None,
        })
        self.assertIn('hostname = "a\\"b\\\\c";\n', text)
        self.assertIn("listeners = (\n    {\n", text)
        self.assertIn('        address = "::1";\n        port = 26;\n'
                      '        auth = true;\n', text)
        self.assertIn('trusted_networks = [ "127.0.0.1/32", "::1/128" ];',
                      text)
        self.assertIn("message_size = 10737418240L;", text)
        self.assertIn("recipients = 5;", text)
        self.assertIn("empty = ( );", text)
        self.assertIn("raw = 0x10;", text)
        self.assertNotIn("gone", text)

    def test_merge(self):
        base = {"a": {"x": 1, "y": 2}, "b": [1, 2], "c": 3}
        out = merge(base, {"a": {"y": 5, "z": 6}, "b": [9], "c": None})
        self.assertEqual(out, {"a": {"x": 1, "y": 5, "z": 6}, "b": [9]})
        self.assertEqual(base["a"], {"x": 1, "y": 2})    # not modified

    def test_ports(self):
        a, b = harness.free_port(), harness.free_port()
        self.assertNotEqual(a, b)
        s = socket.socket()
        s.bind(("127.0.0.1", a))        # really free
        s.close()


class FakeDownstreamTest(PosternTestCase):
    def test_smtplib_transaction_recorded(self):
        fake = self.downstream()
        body = (b"Subject: t\r\n\r\n.leading dot\r\nline\r\n"
                b"8bit \xc3\xa9\r\n")
        with smtplib.SMTP(fake.host, fake.port, timeout=10) as c:
            c.ehlo("me.test")
            self.assertTrue(c.has_extn("pipelining"))
            self.assertTrue(c.has_extn("8bitmime"))
            c.sendmail("a@x.test", ["b@y.test", "c@y.test"], body,
                       mail_options=["BODY=8BITMIME"])
        t = fake.wait_for_transactions(1)[0]
        self.assertEqual(t.helo, "me.test")
        self.assertEqual(t.session.helo_verb, "EHLO")
        self.assertEqual(t.mail_from, "a@x.test")
        self.assertIn("BODY=8BITMIME", t.mail_params)
        self.assertIn("SIZE=%d" % len(body),
                      [p.upper() for p in t.mail_params])
        self.assertEqual(t.rcpts, ["b@y.test", "c@y.test"])
        self.assertEqual(t.data, body)
        self.assertEqual(t.data_raw,
                         body.replace(b"\r\n.lead", b"\r\n..lead") +
                         b".\r\n")
        self.assertTrue(t.accepted)

    def test_scripted_replies(self):
        fake = self.downstream(script={
            "RCPT": ["250 2.1.5 ok", "550 5.1.1 no such user"],
            "DATA_END": "451 4.3.0 try later"})
        with smtplib.SMTP(fake.host, fake.port, timeout=10) as c:
            c.ehlo()
            c.mail("a@x.test")
            self.assertEqual(c.rcpt("b@y.test")[0], 250)
            code, msg = c.rcpt("c@y.test")
            self.assertEqual((code, msg), (550, b"5.1.1 no such user"))
            self.assertEqual(c.rcpt("d@y.test")[0], 250)     # list used up
            self.assertEqual(c.data(b"x\r\n")[0], 451)
        t = fake.wait_for_transactions(1)[0]
        self.assertEqual(t.accepted_rcpts, ["b@y.test", "d@y.test"])
        self.assertFalse(t.accepted)
        self.assertEqual(t.data_replies, ["451 4.3.0 try later"])

    def test_extensions_configurable_and_multiline(self):
        fake = self.downstream(extensions=["SIZE 1000", "X-ONE", "X-TWO a b"],
                               script={"NOOP": "250 first\nsecond\nthird"})
        with SMTPClient(fake.host, fake.port) as c:
            ext = c.start("me")
            self.assertEqual(ext, {"SIZE": "1000", "X-ONE": "",
                                   "X-TWO": "a b"})
            r = c.cmd("NOOP", 250)
            self.assertEqual(r.lines, ["first", "second", "third"])
            self.assertEqual(r.raw, b"250-first\r\n250-second\r\n"
                                    b"250 third\r\n")
        with smtplib.SMTP(fake.host, fake.port, timeout=10) as c:
            c.ehlo()
            self.assertFalse(c.has_extn("pipelining"))
            self.assertFalse(c.has_extn("8bitmime"))

    def test_pipelined_transaction_in_one_write(self):
        fake = self.downstream()
        with SMTPClient(fake.host, fake.port) as c:
            c.start()
            c.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n"
                   b"RCPT TO:<c@y.test>\r\nDATA\r\n")
            codes = [r.code for r in c.replies(4)]
            self.assertEqual(codes, [250, 250, 250, 354])
            c.send(b"hi\r\n.\r\nQUIT\r\n")
            self.assertEqual([r.code for r in c.replies(2)], [250, 221])
            self.assertTrue(c.closed())
        self.assertEqual(fake.wait_for_transactions(1)[0].data, b"hi\r\n")

    def test_bdat(self):
        fake = self.downstream(extensions=["CHUNKING", "PIPELINING"])
        with SMTPClient(fake.host, fake.port) as c:
            c.start()
            c.cmd("MAIL FROM:<a@x.test>", 250)
            c.cmd("RCPT TO:<b@y.test>", 250)
            c.send(b"BDAT 5\r\nab\r\ncBDAT 3 LAST\r\nd\ne")
            r1, r2 = c.replies(2)
            self.assertEqual(r1.code, 250)
            self.assertIn("5 octets", r1.text)
            self.assertEqual(r2.code, 250)
        t = fake.wait_for_transactions(1)[0]
        self.assertTrue(t.bdat)
        self.assertEqual(t.data, b"ab\r\ncd\ne")

    def test_lmtp_per_recipient_replies(self):
        fake = self.downstream(lmtp=True, script={
            "DATA_END": ["250 2.0.0 <b> ok", "452 4.2.2 <c> over quota"]})
        self.assertTrue(fake.route().startswith("lmtp:127.0.0.1:"))
        with SMTPClient(fake.host, fake.port) as c:
            c.greeting()
            c.cmd("LHLO me", 250)
            c.cmd("MAIL FROM:<a@x.test>", 250)
            c.cmd("RCPT TO:<b@y.test>", 250)
            c.cmd("RCPT TO:<c@y.test>", 250)
            c.cmd("DATA", 354)
            c.send(b"x\r\n.\r\n")
            r1, r2 = c.replies(2)
            self.assertEqual((r1.code, r2.code), (250, 452))
            self.assertEqual(r2.enhanced, "4.2.2")
        with smtplib.LMTP(fake.host, fake.port, timeout=10) as c:
            self.assertEqual(c.ehlo()[0], 250)
        t = fake.wait_for_transactions(1)[0]
        self.assertEqual(t.session.helo_verb, "LHLO")
        self.assertEqual(len(t.data_replies), 2)

    def test_down_then_up(self):
        fake = self.downstream(start=False)
        with self.assertRaises(ConnectionRefusedError):
            smtplib.SMTP(fake.host, fake.port, timeout=5)
        fake.up()
        with smtplib.SMTP(fake.host, fake.port, timeout=5) as c:
            self.assertEqual(c.noop()[0], 250)
        fake.down()
        with self.assertRaises(ConnectionRefusedError):
            smtplib.SMTP(fake.host, fake.port, timeout=5)
        fake.up()
        with smtplib.SMTP(fake.host, fake.port, timeout=5) as c:
            self.assertEqual(c.noop()[0], 250)
        self.assertEqual(len(fake.sessions), 2)

    def test_close_delay_and_greeting(self):
        fake = self.downstream(script={
            "GREETING": ["421 4.3.2 not now", "220 ok"],
            "MAIL": ["@close"],
            "NOOP": "@delay:0.3 250 2.0.0 late"})
        with SMTPClient(fake.host, fake.port) as c:
            c.expect(421, "4.3.2")
        with SMTPClient(fake.host, fake.port) as c:
            c.start()
            t0 = time.monotonic()
            c.cmd("NOOP", 250, "2.0.0")
            self.assertGreaterEqual(time.monotonic() - t0, 0.25)
            c.send_line("MAIL FROM:<a@x.test>")
            self.assertTrue(c.closed())

    def test_hang_released_by_stop(self):
        fake = FakeDownstream(script={"GREETING": "@hang"})
        try:
            c = SMTPClient(fake.host, fake.port, timeout=0.5)
            self.assertEqual(c.pending(0.3), b"")
        finally:
            t0 = time.monotonic()
            fake.stop()
            # a hung server thread would hold stop() for good
            self.assertLess(time.monotonic() - t0, 30)
        self.assertTrue(c.closed())
        c.close()


class KeepLogsTest(unittest.TestCase):
    """PosternTestCase keeps the temp dir of a failed test in
    $POSTERN_TEST_LOGS/<id>/ and removes it for a passing one; servers are
    stopped even on failure."""

    def test_keep_on_failure(self):
        logs = tempfile.mkdtemp(prefix="pst-logs-")
        seen = {}

        class Inner(PosternTestCase):
            def test_fails(self):
                seen["tmp"] = self.tmp
                seen["fake"] = self.downstream()
                with open(os.path.join(self.tmp, "marker"), "w") as f:
                    f.write("kept")
                self.fail("on purpose")

            def test_passes(self):
                seen["tmp2"] = self.tmp

        old = harness.TEST_LOGS
        harness.TEST_LOGS = logs
        try:
            result = unittest.TestResult()
            unittest.defaultTestLoader.loadTestsFromTestCase(Inner).run(
                result)
        finally:
            harness.TEST_LOGS = old
        self.assertEqual(len(result.failures), 1)
        self.assertEqual(result.testsRun, 2)
        kept = [d for d in os.listdir(logs) if d.endswith("test_fails")]
        self.assertEqual(len(kept), 1)
        with open(os.path.join(logs, kept[0], "marker")) as f:
            self.assertEqual(f.read(), "kept")
        self.assertFalse(os.path.exists(seen["tmp"]))
        self.assertFalse(os.path.exists(seen["tmp2"]))
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", seen["fake"].port), 2)
        harness.shutil.rmtree(logs)


class PosternLifecycleTest(PosternTestCase):
    def setUp(self):
        super().setUp()
        self.assertTrue(have_postern(),
                        "%s was not built" % harness.POSTERN_BIN)

    def test_start_stop_restart_kill9(self):
        p = self.postern()
        self.assertIn(b"event=ready", p.log())
        with p.smtp() as c:
            self.assertEqual(c.noop()[0], 250)
        pid = p.pid
        self.assertEqual(p.stop(), 0)
        with self.assertRaises(OSError):
            os.kill(pid, 0)             # gone (and reaped)
        p.restart()
        self.assertNotEqual(p.pid, pid)
        with p.smtp() as c:
            self.assertEqual(c.noop()[0], 250)
        pid = p.pid
        p.kill9()
        with self.assertRaises(OSError):
            os.kill(pid, 0)
        p.start()
        with p.session() as c:
            c.cmd("NOOP", 250, "2.0.0")

    def test_bad_config_fails_fast(self):
        p = self.postern(start=False,
                         overrides={"no_such_setting_anywhere": 1})
        with self.assertRaises(AssertionError) as cm:
            p.start()
        # it exited (not "not ready after 30 s")
        self.assertIn("exited", str(cm.exception))
        self.assertIn("no_such_setting_anywhere", str(cm.exception))


if __name__ == "__main__":
    unittest.main()
