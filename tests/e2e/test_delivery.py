"""test_delivery.py - postern as a relay: the SMTP/LMTP client, routes,
retries, shaping, TLS policy and the 8BITMIME downgrade, end to end.

Every downstream is a real process or server on loopback: the harness's
scriptable FakeDownstream (250, 4xx, 5xx, 421, 452, down then up), and
Postfix's smtp-sink. Each case checks what reached the downstream (bytes,
commands, sessions) and what postern logged for each recipient.
"""

import email
import email.policy
import os
import re
import socket
import ssl
import subprocess
import time
import unittest

import harness
import prom
from harness import PosternTestCase, message

FAST = {"retry_min": 1, "retry_max": 2, "dead_host_backoff": 1,
        "idle_timeout": 1}


def send(p, rcpts, msg=None, sender="sender@example.org", **kw):
    with p.smtp() as s:
        s.ehlo("client.test")
        s.sendmail(sender, rcpts, msg or message(), **kw)


def originals(ds):
    """Transactions other than reports (a bounce has the null sender)."""
    return [t for t in ds.transactions if t.mail_from]


def wait_log(p, pattern, timeout=15.0, count=1):
    deadline = time.monotonic() + timeout
    rx = re.compile(pattern)
    while True:
        found = rx.findall(p.log().decode("utf-8", "replace"))
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError("log has %d of %d %r; tail:\n%s"
                                 % (len(found), count, pattern,
                                    p.log_tail()))
        time.sleep(0.05)


class RelayBasics(PosternTestCase):

    def test_pipelined_relay_bytes_and_params(self):
        ds = self.downstream()
        p = self.postern({"delivery": dict(FAST,
                                           default_route=ds.route())})
        body = "line\r\n.dot line\r\n" + "x" * 1500 + "\r\nend\r\n"
        send(p, ["a@dest.test", "b@dest.test"], message(body=body))
        [t] = ds.wait_for_transactions(1, timeout=15)
        self.assertEqual(t.mail_from, "sender@example.org")
        self.assertEqual(t.rcpts, ["a@dest.test", "b@dest.test"])
        size = [x for x in t.mail_params if x.startswith("SIZE=")]
        self.assertEqual(len(size), 1)
        # what was sent is the stored message: postern's Received first
        self.assertTrue(t.data.startswith(b"Received: from client.test"),
                        t.data[:80])
        self.assertIn(b"\r\n.dot line\r\n", t.data)
        self.assertIn(b"\r\n..dot line\r\n", t.data_raw)
        # SIZE is the stored size: the data without the one fold's CRLF
        self.assertEqual(int(size[0][5:]),
                         len(t.data.replace(b"x\r\nx", b"xx")))
        # no wire line over 998 octets; nothing lost in the fold
        for line in t.data_raw.split(b"\r\n"):
            self.assertLessEqual(len(line), 998)
        self.assertEqual(t.data.replace(b"\r\n", b"").count(b"x" * 1500), 1)
        wait_log(p, r'event=delivered to="a@dest.test"')
        wait_log(p, r'event=delivered to="b@dest.test"')
        # all the commands of one transaction in one go (PIPELINING)
        s = ds.sessions[0]
        self.assertEqual(s.helo_verb, "EHLO")

    def test_5xx_fails_4xx_retries_once_delivered(self):
        ds = self.downstream(script={"RCPT": [
            "550 5.1.1 no such user", "451 4.3.0 try again",
            "250 2.1.5 Ok", "250 2.1.5 Ok"]})
        p = self.postern({"delivery": dict(FAST,
                                           default_route=ds.route())})
        send(p, ["gone@dest.test", "later@dest.test", "ok@dest.test"])
        wait_log(p, r'event=failed to="gone@dest.test".*550 5\.1\.1')
        wait_log(p, r'event=delivered to="ok@dest.test"')
        wait_log(p, r'event=deferred to="later@dest.test".*451 4\.3\.0')
        wait_log(p, r'event=delivered to="later@dest.test"', timeout=20)
        ts = ds.wait_for_transactions(3, timeout=20, accepted_only=True)
        # the bounce for gone@ takes the default route too (null sender)
        got = sorted(r for t in ts if t.mail_from for r in t.accepted_rcpts)
        self.assertEqual(got, ["later@dest.test", "ok@dest.test"])
        bounces = [t for t in ts if t.mail_from == ""]
        self.assertEqual([t.rcpts for t in bounces],
                         [["sender@example.org"]])
        # the failed recipient is never tried again
        time.sleep(1.5)
        tried = [r for t in ds.transactions for r in t.rcpts]
        self.assertEqual(tried.count("gone@dest.test"), 1)
        self.assertEqual(len(ds.accepted), 3)

    def test_421_defers_then_delivered_once(self):
        ds = self.downstream(script={"MAIL": ["421 4.3.2 going down",
                                              "250 2.1.0 Ok"]})
        p = self.postern({"delivery": dict(FAST,
                                           default_route=ds.route())})
        send(p, ["a@dest.test", "b@dest.test"])
        wait_log(p, r'event=deferred to="a@dest.test".*421 4\.3\.2')
        ts = ds.wait_for_transactions(1, timeout=20, accepted_only=True)
        self.assertEqual(ts[0].accepted_rcpts, ["a@dest.test",
                                                "b@dest.test"])
        time.sleep(1.5)
        self.assertEqual(len(ds.accepted), 1)

    def test_452_continues_in_a_new_transaction(self):
        ds = self.downstream(script={"RCPT": [
            "250 2.1.5 Ok", "452 4.5.3 Too many recipients",
            "452 4.5.3 Too many recipients"]})
        p = self.postern({"delivery": dict(FAST,
                                           default_route=ds.route())})
        send(p, ["a@dest.test", "b@dest.test", "c@dest.test"])
        ts = ds.wait_for_transactions(2, timeout=15, accepted_only=True)
        self.assertEqual(ts[0].accepted_rcpts, ["a@dest.test"])
        self.assertEqual(ts[1].accepted_rcpts, ["b@dest.test",
                                                "c@dest.test"])
        # same connection
        self.assertIs(ts[0].session, ts[1].session)
        for r in "abc":
            wait_log(p, r'event=delivered to="%s@dest.test"' % r)

    def test_2xx_to_data_defers_and_keeps_the_message(self):
        # a 250 where 354 belongs: nothing was sent, so nothing is
        # delivered; the message stays queued and goes on the retry
        ds = self.downstream(script={"DATA": ["250 2.0.0 Ok",
                                              "354 go ahead"]})
        p = self.postern({"delivery": dict(FAST, default_route=ds.route(),
                                           retry_min=2, retry_max=2)})
        body = "the text that must arrive\r\n"
        send(p, ["a@dest.test", "b@dest.test"], message(body=body))
        wait_log(p, r'event=deferred to="a@dest.test".*protocol error.*'
                    r'250 2\.0\.0 Ok \(in reply to DATA\)')
        wait_log(p, r'event=deferred to="b@dest.test"')
        self.assertNotIn(b"event=delivered", p.log())
        self.assertEqual(len(p.spool_files("active")), 1)
        self.assertEqual(ds.transactions, [])
        [t] = ds.wait_for_transactions(1, timeout=20, accepted_only=True)
        self.assertEqual(t.accepted_rcpts, ["a@dest.test", "b@dest.test"])
        self.assertIn(body.encode(), t.data)
        wait_log(p, r'event=delivered to="a@dest.test"')
        wait_log(p, r'event=delivered to="b@dest.test"')
        # the first connection was not used again
        self.assertEqual(len(ds.sessions), 2)
        time.sleep(0.5)
        self.assertEqual(p.spool_files("active"), [])

    def test_down_then_up_dead_host_backoff(self):
        ds = self.downstream(start=False)
        p = self.postern({"delivery": dict(FAST, default_route=ds.route(),
                                           dead_host_backoff=3,
                                           retry_min=1, retry_max=1)})
        for i in range(5):
            send(p, ["r%d@dest.test" % i])
        wait_log(p, r"event=deferred", count=5)
        time.sleep(1.0)
        # the dead destination is skipped: one connection attempt per
        # back-off period, not one per message
        attempts = len(re.findall(rb"event=connect_failed", p.log()))
        self.assertLessEqual(attempts, 2, p.log_tail())
        ds.up()
        ds.wait_for_transactions(5, timeout=20, accepted_only=True)
        time.sleep(1.0)
        self.assertEqual(len(ds.accepted), 5)

    def test_corrupt_queue_file_found_while_relaying(self):
        ds = self.downstream(start=False)
        p = self.postern({"delivery": dict(FAST, default_route=ds.route())})
        send(p, ["a@dest.test"], message(body="B" * 5000 + "\r\n"))
        wait_log(p, r"event=deferred")
        [path] = p.spool_files("active")
        with open(path, "r+b") as f:
            data = f.read()
            i = data.index(b"BBBB")
            f.seek(i + 100)
            f.write(b"X")
        ds.up()
        wait_log(p, r"event=spool_corrupt", timeout=20)
        self.assertEqual(len(p.spool_files("corrupt")), 1)
        self.assertEqual(p.spool_files("active"), [])
        time.sleep(0.5)
        # nothing with the damaged text was accepted downstream
        self.assertEqual([t for t in ds.transactions if t.accepted], [])

    def test_step_timeouts_each_from_its_command(self):
        """Each reply has its own timeout from its command: the replies to
        MAIL, RCPT and the final dot each 3 s after their command, within
        the 5 s of their step but more than 5 s together, relay the
        message (the timer armed for the greeting fires before the end
        and is armed again for the moved deadline); a final reply later
        than final_timeout defers the message with a timeout."""
        slow = "@delay:3 "
        ds = self.downstream(script={
            "MAIL": slow + "250 2.1.0 Ok", "RCPT": slow + "250 2.1.5 Ok",
            "DATA_END": [slow + "250 2.0.0 Ok", "@delay:30 250 2.0.0 Ok"]})
        steps = {k: 5 for k in ("greeting_timeout", "helo_timeout",
                                "mail_timeout", "rcpt_timeout",
                                "data_timeout", "data_block_timeout",
                                "final_timeout")}
        p = self.postern({"delivery": dict(FAST, default_route=ds.route(),
                                           idle_timeout=0, **steps)})
        send(p, ["a@dest.test"])
        wait_log(p, r'event=delivered to="a@dest.test"', timeout=30)
        send(p, ["b@dest.test"])
        found = wait_log(p, r"event=deferred[^\n]*", timeout=30)
        self.assertIn("timeout", found[0])
        self.assertIn("end of data", found[0])

    def test_destination_concurrency_bounds_connections(self):
        ds = self.downstream(script={"DATA_END": "@delay:0.3 250 2.0.0 Ok"})
        p = self.postern({"delivery": dict(FAST, default_route=ds.route(),
                                           destination_concurrency=2,
                                           idle_timeout=5)})
        for i in range(8):
            send(p, ["r%d@dest.test" % i])
        ds.wait_for_transactions(8, timeout=20)
        wait_log(p, r"event=delivered", count=8)
        self.assertLessEqual(len(ds.sessions), 2)
        self.assertGreaterEqual(len(ds.sessions), 1)

    def test_restart_reuses_connections(self):
        ds = self.downstream(start=False)
        conf = {"delivery": dict(FAST, default_route=ds.route(),
                                 destination_concurrency=2,
                                 idle_timeout=5)}
        p = self.postern(conf)
        for i in range(12):
            send(p, ["r%d@dest.test" % i])
        wait_log(p, r"event=deferred", count=1)
        p.stop()
        ds.up()
        p.start()
        ds.wait_for_transactions(12, timeout=20, accepted_only=True)
        time.sleep(0.5)
        self.assertEqual(len(ds.accepted), 12)
        # not one connection per queued message: at most the
        # destination's concurrency, each carrying several messages
        self.assertLessEqual(len(ds.sessions), 2)

    def test_helo_fallback_and_no_pipelining(self):
        ds = self.downstream(script={"EHLO": "502 5.5.2 no EHLO here"})
        p = self.postern({"delivery": dict(FAST,
                                           default_route=ds.route())})
        send(p, ["a@dest.test"])
        [t] = ds.wait_for_transactions(1, timeout=15)
        self.assertEqual(t.session.helo_verb, "HELO")
        self.assertEqual(t.mail_params, [])     # no SIZE without EHLO

    def test_size_over_hop_limit_fails_before_data(self):
        ds = self.downstream(extensions=["PIPELINING", "SIZE 100"])
        p = self.postern({"delivery": dict(FAST,
                                           default_route=ds.route())})
        send(p, ["a@dest.test"])
        wait_log(p, r'event=failed to="a@dest.test".*5\.3\.4')
        self.assertEqual(originals(ds), [])

    def test_smtputf8_to_hop_without_it_fails(self):
        ds = self.downstream(extensions=["PIPELINING", "8BITMIME"])
        p = self.postern({"delivery": dict(FAST,
                                           default_route=ds.route())})
        c = p.session()
        c.cmd("MAIL FROM:<sender@example.org> SMTPUTF8", 250)
        c.cmd("RCPT TO:<a@dest.test>", 250)
        c.cmd("DATA", 354)
        c.send(message() + b".\r\n")
        c.expect(250)
        c.quit()
        wait_log(p, r'event=failed to="a@dest.test".*5\.6\.7')
        self.assertEqual(originals(ds), [])


class Auth(PosternTestCase):
    """AUTH to a smarthost with credentials from the route."""

    EXT = harness.FakeDownstream.DEFAULT_EXTENSIONS + ["AUTH PLAIN LOGIN"]

    def test_auth_plain_when_plaintext_allowed(self):
        import base64
        ds = self.downstream(extensions=self.EXT,
                             script={"UNKNOWN": "235 2.7.0 Authenticated"})
        p = self.postern({"delivery": dict(FAST, tls="none", routes=[
            {"domain": "dest.test", "route": ds.route(),
             "auth_user": "relayuser", "auth_password": "s3cret",
             "auth_plaintext": True}])})
        send(p, ["a@dest.test"])
        [t] = ds.wait_for_transactions(1, timeout=15)
        want = b"AUTH PLAIN " + base64.b64encode(b"\0relayuser\0s3cret")
        cmds = t.session.commands
        self.assertIn(want, cmds)
        self.assertLess(cmds.index(want),
                        [i for i, c in enumerate(cmds)
                         if c.startswith(b"MAIL")][0])
        self.assertNotIn(b"s3cret", p.log())

    def test_auth_login_when_only_login_offered(self):
        import base64
        ds = self.downstream(
            extensions=harness.FakeDownstream.DEFAULT_EXTENSIONS +
            ["AUTH LOGIN"],
            script={"UNKNOWN": ["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6",
                                "235 2.7.0 Authenticated"]})
        p = self.postern({"delivery": dict(FAST, tls="none", routes=[
            {"domain": "dest.test", "route": ds.route(),
             "auth_user": "relayuser", "auth_password": "s3cret",
             "auth_plaintext": True}])})
        send(p, ["a@dest.test"])
        [t] = ds.wait_for_transactions(1, timeout=15)
        cmds = t.session.commands
        i = cmds.index(b"AUTH LOGIN")
        self.assertEqual(cmds[i + 1], base64.b64encode(b"relayuser"))
        self.assertEqual(cmds[i + 2], base64.b64encode(b"s3cret"))

    def test_no_auth_in_plaintext(self):
        ds = self.downstream(extensions=self.EXT,
                             script={"UNKNOWN": "235 2.7.0 Authenticated"})
        p = self.postern({"delivery": dict(FAST, tls="none", routes=[
            {"domain": "dest.test", "route": ds.route(),
             "auth_user": "relayuser", "auth_password": "s3cret"}])})
        send(p, ["a@dest.test"])
        wait_log(p, r'event=deferred to="a@dest.test".*4\.7\.0.*not '
                    r'encrypted')
        self.assertEqual(originals(ds), [])
        self.assertFalse(any(c.startswith(b"AUTH")
                             for s in ds.sessions for c in s.commands))

    def test_auth_rejected_defers(self):
        ds = self.downstream(extensions=self.EXT, script={
            "UNKNOWN": "535 5.7.8 Authentication credentials invalid"})
        p = self.postern({"delivery": dict(FAST, tls="none", routes=[
            {"domain": "dest.test", "route": ds.route(),
             "auth_user": "u", "auth_password": "p",
             "auth_plaintext": True}])})
        send(p, ["a@dest.test"])
        wait_log(p, r'event=deferred to="a@dest.test".*535 5\.7\.8')


class EightBit(PosternTestCase):

    def test_downgrade_to_quoted_printable(self):
        ds = self.downstream(extensions=["PIPELINING", "SIZE 1000000"])
        p = self.postern({"delivery": dict(FAST,
                                           default_route=ds.route())})
        text = ("Caf\u00e9 cr\u00e8me = 3\u20ac \r\n" * 3 +
                "." + "\u00e9" * 60 + "\r\n")
        msg = message(body=text, extra_headers=[
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: 8bit"])
        send(p, ["a@dest.test"], msg, mail_options=["BODY=8BITMIME"])
        [t] = ds.wait_for_transactions(1, timeout=15)
        self.assertNotIn("BODY=8BITMIME", t.mail_params)
        # the converted size is not known before it is sent: no SIZE=
        self.assertEqual([x for x in t.mail_params if x.startswith("SIZE")],
                         [])
        self.assertTrue(all(b < 128 for b in t.data_raw),
                        "8-bit octets sent to a 7-bit hop")
        for line in t.data_raw.split(b"\r\n"):
            self.assertLessEqual(len(line), 78)
        m = email.message_from_bytes(t.data, policy=email.policy.default)
        self.assertEqual(m["Content-Transfer-Encoding"], "quoted-printable")
        self.assertEqual(m.get_content().replace("\r\n", "\n"),
                         text.replace("\r\n", "\n"))

    def test_downgrade_follows_the_model_of_the_edited_text(self):
        # the parts come from core/mime.c's tree of the text as sent (a
        # filter's edit applied): a boundary= in another field and an RFC
        # 2231 boundary no longer hide the 8-bit part; the text spans
        # several reads of the queue file (read once for the model, again
        # to send)
        ds = self.downstream(extensions=["PIPELINING", "SIZE 10000000"])
        p = self.postern({
            "delivery": dict(FAST, default_route=ds.route()),
            "filters": [{"module": "headers", "rules": [
                {"add": "X-Gateway", "value": "postern", "top": True}]}],
            "mime": {"depth": 8}})
        text = ("Caf\u00e9 cr\u00e8me = 3\u20ac \r\n" * 8000)
        msg = message(body=(
            "--RIGHT\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n" + text +
            "--RIGHT\r\n"
            "Content-Type: application/octet-stream\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n"
            "--RIGHT--\r\n"), extra_headers=[
            "X-Note: see boundary=\"WRONG\" below",
            "MIME-Version: 1.0",
            "Content-Type: multipart/mixed; boundary*0=\"RI\";",
            " boundary*1=\"GHT\""])
        send(p, ["a@dest.test"], msg, mail_options=["BODY=8BITMIME"])
        [t] = ds.wait_for_transactions(1, timeout=20)
        self.assertTrue(all(b < 128 for b in t.data_raw),
                        "8-bit octets sent to a 7-bit hop")
        self.assertTrue(t.data.startswith(b"X-Gateway: postern\r\n"))
        m = email.message_from_bytes(t.data, policy=email.policy.default)
        parts = list(m.iter_parts())
        self.assertEqual(len(parts), 2)
        self.assertEqual(parts[0]["Content-Transfer-Encoding"],
                         "quoted-printable")
        # the last line end before a delimiter is the delimiter's
        self.assertEqual(parts[0].get_content().replace("\r\n", "\n"),
                         text[:-2].replace("\r\n", "\n"))
        self.assertEqual(parts[1].get_content(), b"\x00\x01\x02")
        wait_log(p, r'event=delivered to="a@dest.test"')

    def test_8bit_kept_when_offered(self):
        ds = self.downstream()
        p = self.postern({"delivery": dict(FAST,
                                           default_route=ds.route())})
        msg = message(body="caf\u00e9\r\n", extra_headers=[
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: 8bit"])
        send(p, ["a@dest.test"], msg, mail_options=["BODY=8BITMIME"])
        [t] = ds.wait_for_transactions(1, timeout=15)
        self.assertIn("BODY=8BITMIME", t.mail_params)
        self.assertIn("caf\u00e9".encode(), t.data)

    def test_policy_bounce_5_6_3(self):
        ds = self.downstream(extensions=["PIPELINING"])
        p = self.postern({"delivery": dict(FAST, default_route=ds.route(),
                                           eight_bit="bounce")})
        msg = message(body="caf\u00e9\r\n")
        send(p, ["a@dest.test"], msg, mail_options=["BODY=8BITMIME"])
        wait_log(p, r'event=failed to="a@dest.test".*5\.6\.3')
        self.assertEqual(originals(ds), [])


class Routes(PosternTestCase):

    def test_routes_by_domain_and_default(self):
        a = self.downstream()
        b = self.downstream(lmtp=True)
        p = self.postern({"delivery": dict(FAST, routes=[
            {"domain": "a.test", "route": a.route()},
            {"domain": ".b.test", "route": b.route()}])})
        send(p, ["x@a.test", "y@sub.b.test", "z@other.test",
                 "w@deep.sub.b.test"])
        [ta] = a.wait_for_transactions(1, timeout=15)
        self.assertEqual(ta.rcpts, ["x@a.test"])
        [tb] = b.wait_for_transactions(1, timeout=15)
        self.assertEqual(tb.rcpts, ["y@sub.b.test", "w@deep.sub.b.test"])
        self.assertEqual(tb.session.helo_verb, "LHLO")
        [d] = p.wait_for_delivered(1)
        self.assertIn("z@other.test", d.delivered_to)

    def test_rate_shaping_queues(self):
        ds = self.downstream()
        p = self.postern({"delivery": dict(FAST, routes=[
            {"domain": "dest.test", "route": ds.route(), "rate": 2,
             "rate_period": 2}])})
        t0 = time.monotonic()
        for i in range(3):
            send(p, ["r%d@dest.test" % i])
        ds.wait_for_transactions(3, timeout=20, accepted_only=True)
        # 2 per 2 s: the third no earlier than ~2 s after the first
        self.assertGreaterEqual(time.monotonic() - t0, 1.8)
        self.assertNotIn(b"event=failed", p.log())


class RealServers(PosternTestCase):

    def test_smtp_sink(self):
        port = harness.free_port()
        dump = os.path.join(self.tmp, "sink")
        os.mkdir(dump)
        os.chmod(dump, 0o777)
        os.chmod(self.tmp, 0o711)   # smtp-sink writes as nobody
        sink = subprocess.Popen(
            ["smtp-sink", "-u", "nobody", "-d", dump + "/%M.",
             "127.0.0.1:%d" % port, "10"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: (sink.terminate(), sink.wait(5)))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        p = self.postern({"delivery": dict(
            FAST, default_route="smtp:[127.0.0.1]:%d" % port)})
        for i in range(5):
            send(p, ["r%d@sink.test" % i],
                 message(subject="sink %d" % i))
        wait_log(p, r"event=delivered", count=5, timeout=20)
        files = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(files) < 5:
            files = [f for f in os.listdir(dump)]
            time.sleep(0.05)
        self.assertEqual(len(files), 5)
        subjects = set()
        for f in files:
            with open(os.path.join(dump, f), "rb") as fh:
                m = email.message_from_bytes(fh.read())
                subjects.add(m["Subject"])
        self.assertEqual(subjects, {"sink %d" % i for i in range(5)})


def make_ca(d, name):
    """A test CA under d: (ca_cert, ca_key) paths."""
    key, crt = os.path.join(d, name + ".key"), os.path.join(d, name + ".crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                    "-nodes", "-keyout", key, "-out", crt, "-days", "2",
                    "-subj", "/CN=%s" % name], check=True,
                   capture_output=True)
    return crt, key


def make_cert(d, ca, name, sans):
    """A server certificate signed by ca for sans ("DNS:x", "IP:y")."""
    key = os.path.join(d, name + ".key")
    csr = os.path.join(d, name + ".csr")
    crt = os.path.join(d, name + ".crt")
    ext = os.path.join(d, name + ".ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=%s\n" % ",".join(sans))
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", key, "-out", csr, "-subj", "/CN=%s" % name],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca[0],
                    "-CAkey", ca[1], "-CAcreateserial", "-out", crt,
                    "-days", "2", "-extfile", ext], check=True,
                   capture_output=True)
    return crt, key


class Tls(PosternTestCase):

    def setUp(self):
        super().setUp()
        self.ca = make_ca(self.tmp, "testca")
        self.other_ca = make_ca(self.tmp, "otherca")
        crt, key = make_cert(self.tmp, self.ca, "mx.dest.test",
                             ["DNS:mx.dest.test", "IP:127.0.0.1"])
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(crt, key)

    def tls_downstream(self):
        return self.downstream(
            tls_context=self.ctx,
            extensions=harness.FakeDownstream.DEFAULT_EXTENSIONS +
            ["STARTTLS"])

    def relay(self, ds, ca=None, **route):
        r = dict({"domain": "dest.test", "route": ds.route()}, **route)
        return self.postern({"delivery": dict(
            FAST, routes=[r], tls_ca_file=ca or self.ca[0])})

    def test_verify_ip_route_checks_the_ip(self):
        ds = self.tls_downstream()
        p = self.relay(ds, tls="verify",
                       route="smtp:[127.0.0.1]:%d" % ds.port)
        send(p, ["a@dest.test"])
        [t] = ds.wait_for_transactions(1, timeout=15)
        self.assertTrue(t.session.tls)
        self.assertEqual(t.session.helo_verb, "EHLO")   # EHLO again

    def test_verify_by_name_with_sni(self):
        ds = self.tls_downstream()
        names = []
        self.ctx.sni_callback = lambda sock, name, ctx: names.append(name)
        p = self.relay(ds, tls="verify", tls_name="mx.dest.test")
        send(p, ["a@dest.test"])
        [t] = ds.wait_for_transactions(1, timeout=15)
        self.assertTrue(t.session.tls)
        self.assertEqual(names, ["mx.dest.test"])

    def test_client_certificate(self):
        # the hop requires a certificate from our CA: postern shows its own
        crt, key = make_cert(self.tmp, self.ca, "postern.test",
                             ["DNS:postern.test"])
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx.load_verify_locations(self.ca[0])
        ds = self.tls_downstream()
        p = self.postern({"delivery": dict(
            FAST, tls_ca_file=self.ca[0], tls_cert=crt, tls_key=key,
            routes=[{"domain": "dest.test", "route": ds.route(),
                     "tls": "verify"}])})
        send(p, ["a@dest.test"])
        [t] = ds.wait_for_transactions(1, timeout=15)
        self.assertTrue(t.session.tls)

    def resumption_run(self, ds, name, **delivery):
        """Three messages, one at a time, each on its own connection to
        ds under tls = verify; the downstream's view of each TLS session
        (resumed or not) and postern's delivery TLS metrics."""
        mport = harness.free_port()
        p = self.postern({
            "queue": {"directory": os.path.join(self.tmp, name)},
            "metrics": {"enabled": True, "port": mport},
            "delivery": dict(FAST, messages_per_connection=1,
                             tls_ca_file=self.ca[0], routes=[
                                 {"domain": "dest.test",
                                  "route": ds.route(), "tls": "verify",
                                  "tls_name": "mx.dest.test"}],
                             **delivery)})
        for i in range(3):
            send(p, ["r%d@dest.test" % i])
            ds.wait_for_transactions(i + 1, timeout=15)
        tls = [s for s in ds.sessions if s.tls and s.transactions]
        self.assertEqual(len(tls), 3)
        m = prom.scrape(mport)
        p.stop()
        return ([s.tls_resumed for s in tls],
                m.get("postern_delivery_tls_handshakes_total"),
                m.get("postern_delivery_tls_resumed_total"))

    def test_next_connection_resumes_the_session(self):
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            self.ctx.minimum_version = self.ctx.maximum_version = version
            ds = self.tls_downstream()
            self.assertEqual(self.resumption_run(ds, version.name),
                             ([False, True, True], 3, 2), version)

    def test_session_cache_off(self):
        ds = self.tls_downstream()
        self.assertEqual(self.resumption_run(ds, "spool",
                                             tls_session_cache=0),
                         ([False, False, False], 3, 0))

    def test_verify_wrong_name_defers(self):
        ds = self.tls_downstream()
        p = self.relay(ds, tls="verify", tls_name="other.test")
        send(p, ["a@dest.test"])
        wait_log(p, r'event=deferred to="a@dest.test".*4\.7\.5')
        self.assertEqual(originals(ds), [])

    def test_verify_unknown_ca_defers(self):
        ds = self.tls_downstream()
        p = self.relay(ds, ca=self.other_ca[0], tls="verify")
        send(p, ["a@dest.test"])
        wait_log(p, r'event=deferred to="a@dest.test".*4\.7\.5.*'
                    r'(certificate|issuer)')
        self.assertEqual(originals(ds), [])

    def test_encrypt_to_plaintext_only_defers(self):
        ds = self.downstream()          # no STARTTLS offered
        p = self.relay(ds, tls="encrypt")
        send(p, ["a@dest.test"])
        wait_log(p, r'event=deferred to="a@dest.test".*4\.7\.4')
        self.assertEqual(originals(ds), [])
        self.assertNotIn(b"MAIL FROM", b"".join(
            c for s in ds.sessions for c in s.commands))

    def test_may_falls_back_to_plaintext_after_failed_handshake(self):
        self.ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ds = self.tls_downstream()
        p = self.postern({"delivery": dict(FAST, tls="may", routes=[
            {"domain": "dest.test", "route": ds.route()}])})
        send(p, ["a@dest.test"])
        [t] = ds.wait_for_transactions(1, timeout=15)
        self.assertFalse(t.session.tls)
        wait_log(p, r"event=tls_fallback")
        # encrypt never falls back
        p2 = self.postern({
            "queue": {"directory": os.path.join(self.tmp, "spool2")},
            "delivery": dict(FAST, tls="encrypt", routes=[
                {"domain": "dest.test", "route": ds.route()}])})
        send(p2, ["b@dest.test"])
        wait_log(p2, r'event=deferred to="b@dest.test".*4\.7\.5')
        self.assertEqual(len(originals(ds)), 1)

    def test_may_uses_tls_when_offered_and_plain_otherwise(self):
        a = self.tls_downstream()
        b = self.downstream()
        p = self.postern({"delivery": dict(FAST, tls="may", routes=[
            {"domain": "a.test", "route": a.route()},
            {"domain": "b.test", "route": b.route()}])})
        send(p, ["x@a.test", "y@b.test"])
        [ta] = a.wait_for_transactions(1, timeout=15)
        [tb] = b.wait_for_transactions(1, timeout=15)
        self.assertTrue(ta.session.tls)     # unverified is fine for may
        self.assertFalse(tb.session.tls)


class Mx(PosternTestCase):
    """MX resolution against dnsmasq on a free loopback port."""

    def dns_port(self, records):
        """The port of a dnsmasq serving records."""
        return self.dnsmasq(records).port

    def relay(self, dns_port, mx_port, **delivery):
        return self.postern({
            "delivery": dict(FAST, default_route="mx", mx_port=mx_port,
                             **delivery),
            # postern's default timeout and tries: the answers are under
            # test, and a loaded machine may be slow to give them
            "resolver": {"nameservers": ["127.0.0.1:%d" % dns_port]}})

    def test_mx_preference_fallback_and_ipv4(self):
        good = self.downstream()
        # mx1 (pref 10) has an address nothing listens on: mx2 takes it
        dns = self.dns_port([
            "--mx-host=dest.test,mx1.dest.test,10",
            "--mx-host=dest.test,mx2.dest.test,20",
            "--host-record=mx1.dest.test,127.0.0.9",
            "--host-record=mx2.dest.test,127.0.0.1"])
        p = self.relay(dns, good.port)
        send(p, ["a@dest.test"])
        [t] = good.wait_for_transactions(1, timeout=15)
        self.assertEqual(t.rcpts, ["a@dest.test"])
        wait_log(p, r'event=delivered to="a@dest.test"')

    def test_mx_ipv6_address_first(self):
        harness.require_ipv6(self)
        port = harness.free_port("::1")
        v6 = self.downstream(host="::1", port=port)
        dns = self.dns_port([
            "--mx-host=six.test,mx.six.test,10",
            "--host-record=mx.six.test,127.0.0.9,::1"])
        p = self.relay(dns, port)
        send(p, ["a@six.test"])
        [t] = v6.wait_for_transactions(1, timeout=15)
        self.assertEqual(t.rcpts, ["a@six.test"])
        # IPv6 tried first: the IPv4 address (nothing there) never was
        self.assertNotIn(b"127.0.0.9", p.log())

    def test_no_mx_uses_the_domain_address(self):
        good = self.downstream()
        dns = self.dns_port(["--host-record=plain.test,127.0.0.1"])
        p = self.relay(dns, good.port)
        send(p, ["a@plain.test"])
        good.wait_for_transactions(1, timeout=15)

    def test_null_mx_nxdomain_and_loop(self):
        dns = self.dns_port([
            "--dns-rr=null.test,15,000000",
            "--mx-host=loop.test,self.loop.test,10",
            "--host-record=self.loop.test,127.0.0.1"])
        p = self.postern(start=False)
        p.config = harness.merge(p.config, {
            "delivery": dict(FAST, default_route="mx",
                             mx_port=p.listen_port),
            "resolver": {"nameservers": ["127.0.0.1:%d" % dns]}})
        p.start()
        send(p, ["a@null.test", "b@nosuch.test", "c@loop.test"])
        wait_log(p, r'event=failed to="a@null.test".*5\.1\.10')
        wait_log(p, r'event=failed to="b@nosuch.test".*5\.1\.2')
        wait_log(p, r'event=failed to="c@loop.test".*5\.4\.6')

    def test_dns_failure_defers(self):
        dead = harness.free_port()      # no DNS server there
        ds = self.downstream()
        p = self.relay(dead, ds.port)
        send(p, ["a@dest.test"])
        wait_log(p, r'event=deferred to="a@dest.test".*4\.4\.3')


def parse(raw):
    return email.message_from_bytes(raw, policy=email.policy.default)


def status_blocks(report):
    """The per-message and per-recipient field blocks of a
    message/delivery-status part, as dicts."""
    dsn = [p for p in report.walk()
           if p.get_content_type() == "message/delivery-status"]
    assert len(dsn) == 1, [p.get_content_type() for p in report.walk()]
    raw = dsn[0].get_payload()
    blocks = []
    if isinstance(raw, list):           # the email package parses it
        for m in raw:
            blocks.append({k.lower(): str(v) for k, v in m.items()})
    else:
        for chunk in raw.strip().split("\n\n"):
            d = {}
            for line in chunk.splitlines():
                k, _, v = line.partition(":")
                d[k.strip().lower()] = v.strip()
            blocks.append(d)
    return blocks


class Bounces(PosternTestCase):
    """RFC 3464 reports: they land in the maildir of the default route
    (the original sender's domain has no route of its own)."""

    def relay(self, ds, **delivery):
        return self.postern({"delivery": dict(FAST, routes=[
            {"domain": "dest.test", "route": ds.route()}], **delivery)})

    def test_dsn_advertised(self):
        p = self.postern()
        with p.smtp() as s:
            code, _ = s.ehlo("client.test")
            self.assertEqual(code, 250)
            self.assertTrue(s.has_extn("DSN"))

    def test_bounce_structure_full_message(self):
        ds = self.downstream(script={"RCPT": ["550 5.1.1 no such user",
                                              "250 2.1.5 Ok"]})
        p = self.relay(ds)
        send(p, ["gone@dest.test", "ok@dest.test"],
             message(subject="the original"),
             mail_options=["ENVID=env+2Did"],
             rcpt_options=["ORCPT=rfc822;Gone@Dest.test"])
        [d] = p.wait_for_delivered(1, timeout=15)
        self.assertEqual(d.return_path, "<>")
        self.assertIn("sender@example.org", d.delivered_to)
        m = parse(d.body)
        self.assertEqual(m["Auto-Submitted"], "auto-replied")
        self.assertEqual(m.get_content_type(), "multipart/report")
        self.assertEqual(m.get_param("report-type"), "delivery-status")
        self.assertIn("MAILER-DAEMON@", m["From"])
        blocks = status_blocks(m)
        self.assertEqual(blocks[0]["reporting-mta"], "dns; postern.test")
        self.assertEqual(blocks[0]["original-envelope-id"], "env+2Did")
        self.assertEqual(len(blocks), 2)        # the failed one only
        r = blocks[1]
        self.assertEqual(r["final-recipient"], "rfc822; gone@dest.test")
        self.assertEqual(r["original-recipient"], "rfc822; Gone@Dest.test")
        self.assertEqual(r["action"], "failed")
        self.assertEqual(r["status"], "5.1.1")
        self.assertIn("550 5.1.1 no such user", r["diagnostic-code"])
        orig = [x for x in m.walk()
                if x.get_content_type() == "message/rfc822"]
        self.assertEqual(len(orig), 1)
        inner = orig[0].get_payload()[0]
        self.assertEqual(inner["Subject"], "the original")
        # a report is never reported on: null sender, NOTIFY=NEVER
        time.sleep(0.5)
        self.assertEqual(p.maildir_count(), 1)

    def test_ret_hdrs_and_size_cap(self):
        ds = self.downstream(script={"RCPT": "550 5.1.1 no"})
        p = self.relay(ds, bounce_size_max=2000)
        send(p, ["a@dest.test"], message(subject="hdrs"),
             mail_options=["RET=HDRS"])
        send(p, ["b@dest.test"], message(subject="big",
                                        body="z" * 5000 + "\r\n"),
             mail_options=["RET=FULL"])
        ds_ = p.wait_for_delivered(2, timeout=15)
        for d in ds_:
            m = parse(d.body)
            types = [x.get_content_type() for x in m.walk()]
            self.assertIn("text/rfc822-headers", types)
            self.assertNotIn("message/rfc822", types)
            self.assertNotIn(b"zzzz", d.body)

    def test_notify_never_suppresses(self):
        ds = self.downstream(script={"RCPT": "550 5.1.1 no"})
        p = self.relay(ds)
        send(p, ["a@dest.test"], rcpt_options=["NOTIFY=NEVER"])
        wait_log(p, r'event=failed to="a@dest.test"')
        time.sleep(1.0)
        self.assertEqual(p.maildir_count(), 0)
        self.assertNotIn(b"event=dsn ", p.log())

    def test_notify_success_relayed_and_passed_on(self):
        plain = self.downstream()
        dsn = self.downstream(extensions=harness.FakeDownstream.
                              DEFAULT_EXTENSIONS + ["DSN"])
        p = self.postern({"delivery": dict(FAST, routes=[
            {"domain": "plain.test", "route": plain.route()},
            {"domain": "dsn.test", "route": dsn.route()}])})
        send(p, ["a@plain.test", "b@dsn.test"],
             mail_options=["ENVID=abc+2Bdef"],
             rcpt_options=["NOTIFY=SUCCESS,FAILURE"])
        [d] = p.wait_for_delivered(1, timeout=15)
        blocks = status_blocks(parse(d.body))
        self.assertEqual(len(blocks), 2)
        self.assertEqual(blocks[1]["final-recipient"],
                         "rfc822; a@plain.test")
        self.assertEqual(blocks[1]["action"], "relayed")
        self.assertEqual(blocks[1]["status"][:2], "2.")
        # the DSN-capable hop got NOTIFY and reports itself
        [t] = dsn.wait_for_transactions(1)
        self.assertIn("NOTIFY=SUCCESS,FAILURE", t.rcpt_params[0])
        # ENVID as the client sent it (xtext), not encoded a second time
        self.assertIn("ENVID=abc+2Bdef", t.mail_params)
        [t] = plain.wait_for_transactions(1)
        self.assertEqual(t.rcpt_params[0], [])
        time.sleep(0.5)
        self.assertEqual(p.maildir_count(), 1)

    def test_notify_success_delivered_to_maildir(self):
        p = self.postern({"delivery": FAST})
        send(p, ["x@local.test"], rcpt_options=["NOTIFY=SUCCESS"])
        got = p.wait_for_delivered(2, timeout=15)
        reports = [d for d in got if d.return_path == "<>"]
        self.assertEqual(len(reports), 1)
        blocks = status_blocks(parse(reports[0].body))
        self.assertEqual(blocks[1]["action"], "delivered")

    def test_failed_bounce_goes_to_postmaster_once(self):
        ds = self.downstream(script={"RCPT": "550 5.1.1 no"})
        p = self.relay(ds)
        send(p, ["a@dest.test"], sender="")
        [d] = p.wait_for_delivered(1, timeout=15)
        self.assertEqual(d.return_path, "<>")
        self.assertIn("postmaster", d.delivered_to)
        m = parse(d.body)
        self.assertEqual(status_blocks(m)[1]["action"], "failed")
        time.sleep(1.0)
        self.assertEqual(p.maildir_count(), 1)

    def test_lifetime_expiry_bounces(self):
        ds = self.downstream(script={"RCPT": "451 4.3.0 later"})
        p = self.relay(ds, lifetime=5, retry_min=1, retry_max=1)
        send(p, ["slow@dest.test"])
        [d] = p.wait_for_delivered(1, timeout=30)
        r = status_blocks(parse(d.body))[1]
        self.assertEqual(r["action"], "failed")
        self.assertIn("expired", r["diagnostic-code"])
        wait_log(p, r"event=expired")

    def test_delay_warning_once(self):
        ds = self.downstream(script={"RCPT": "451 4.3.0 later"})
        p = self.relay(ds, delay_warning=1, retry_min=1, retry_max=1)
        send(p, ["slow@dest.test"], rcpt_options=["NOTIFY=DELAY,FAILURE"])
        [d] = p.wait_for_delivered(1, timeout=20)
        r = status_blocks(parse(d.body))[1]
        self.assertEqual(r["action"], "delayed")
        self.assertEqual(r["status"], "4.3.0")
        time.sleep(3)
        self.assertEqual(p.maildir_count(), 1)


DOVECOT_CONF = """
base_dir = {tmp}/dovecot-run
state_dir = {tmp}/dovecot-state
log_path = {tmp}/dovecot.log
info_log_path = {tmp}/dovecot.log
protocols = lmtp pop3 imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:{tmp}/dovecot-mail/%u
first_valid_uid = 1
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = static
  args = password=secret
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={tmp}/dovecot-home/%u
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp}
  }}
  unix_listener lmtp {{
    mode = 0666
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


class Dovecot(PosternTestCase):
    """Through postern into Dovecot's LMTP, read back over POP3 and IMAP:
    the whole path from the client to the mailbox."""

    def start_dovecot(self):
        os.chmod(self.tmp, 0o755)
        for d in ("dovecot-mail", "dovecot-home"):
            os.mkdir(os.path.join(self.tmp, d))
            os.chmod(os.path.join(self.tmp, d), 0o777)
        self.ports = {"lmtp": harness.free_port(),
                      "pop3": harness.free_port(),
                      "imap": harness.free_port()}
        conf = os.path.join(self.tmp, "dovecot.conf")
        with open(conf, "w") as f:
            f.write(DOVECOT_CONF.format(tmp=self.tmp, **self.ports))
        proc = subprocess.Popen(["dovecot", "-F", "-c", conf],
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

        def stop():
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.addCleanup(stop)
        deadline = time.monotonic() + 10
        for port in self.ports.values():
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise AssertionError("dovecot did not start")
                    time.sleep(0.05)
        return os.path.join(self.tmp, "dovecot-run", "lmtp")

    def read_pop3(self, user, n, timeout=15):
        import poplib
        deadline = time.monotonic() + timeout
        while True:
            pop = poplib.POP3("127.0.0.1", self.ports["pop3"], timeout=5)
            try:
                pop.user(user)
                pop.pass_("secret")
                count, _ = pop.stat()
                if count >= n:
                    return [b"\r\n".join(pop.retr(i + 1)[1])
                            for i in range(count)]
            finally:
                pop.quit()
            if time.monotonic() > deadline:
                raise AssertionError("POP3 mailbox of %s has %d of %d"
                                     % (user, count, n))
            time.sleep(0.1)

    def test_lmtp_to_dovecot_read_back_pop3_and_imap(self):
        unix_path = self.start_dovecot()
        p = self.postern({"delivery": dict(FAST, routes=[
            {"domain": "inet.test",
             "route": "lmtp:127.0.0.1:%d" % self.ports["lmtp"]},
            {"domain": "unix.test", "route": "lmtp:unix:" + unix_path}])})
        body = "Hello Dovecot.\r\n.a dotted line\r\n" + "y" * 200 + "\r\n"
        send(p, ["alice@inet.test", "bob@inet.test"],
             message(subject="via lmtp", body=body))
        send(p, ["carol@unix.test"], message(subject="via unix socket"))
        for user, subject in (("alice@inet.test", "via lmtp"),
                              ("bob@inet.test", "via lmtp"),
                              ("carol@unix.test", "via unix socket")):
            [raw] = self.read_pop3(user, 1)
            m = email.message_from_bytes(raw)
            self.assertEqual(m["Subject"], subject)
            # Dovecot's own Received on top, postern's below it
            self.assertTrue(any(r.startswith("from client.test")
                                for r in m.get_all("Received")))
        wait_log(p, r'event=delivered to="alice@inet.test"')
        # the same message over IMAP, body byte for byte
        import imaplib
        im = imaplib.IMAP4("127.0.0.1", self.ports["imap"])
        try:
            im.login("alice@inet.test", "secret")
            typ, data = im.select("INBOX")
            self.assertEqual(typ, "OK")
            self.assertEqual(int(data[0]), 1)
            typ, data = im.fetch("1", "(BODY[TEXT])")
            self.assertEqual(typ, "OK")
            self.assertEqual(data[0][1], body.encode())
        finally:
            im.logout()


if __name__ == "__main__":
    unittest.main()
