"""test_recipes.py - the two deployment recipes of docs/OPERATIONS.md run
as written there (ports, paths and the next hop moved to the test's own):

- an attachment policy in front of a mail server: a clean message reaches
  the server behind byte for byte, an executable is stripped with a
  notice and the summary field (a forged one from outside removed), a
  double extension is refused in the dialogue (554 5.7.1);
- an application relay to a smarthost: every recipient domain goes to the
  smarthost (route "*") over STARTTLS with its certificate verified
  against a CA and name, and AUTH PLAIN with the route's credentials
  before MAIL; a smarthost whose name does not match gets nothing.
"""

import base64
import os
import ssl
import unittest

import harness
from harness import PosternTestCase, message
from test_attachments import attachment, multipart, part, pe_image
from test_delivery import FAST, make_ca, make_cert


class AttachmentRecipe(PosternTestCase):

    def test_policy_in_front_of_a_server(self):
        behind = self.downstream()          # stands in for Postfix :10025
        rcpts = os.path.join(self.tmp, "recipients")
        with open(rcpts, "w") as f:
            f.write("user@example.org\n")
        os.chmod(rcpts, 0o644)
        p = self.postern({
            "relay": {"domains": [{"domain": "example.org",
                                   "recipients": rcpts}]},
            "limits": {"message_size": 52428800, "drain_timeout": 60},
            "delivery": {"default_route": behind.route(), "tls": "none"},
            "filters": [
                {"module": "attachments", "deadline": 30,
                 "failure": "tempfail",
                 "archives": {"depth": 3, "max_members": 1000,
                              "max_bytes": 209715200,
                              "on_encrypted": "reject", "on_limit": "reject",
                              "on_error": "reject"},
                 "rules": [
                     {"name": "too-big", "larger_than": 26214400,
                      "where": "part", "action": "reject"},
                     {"name": "executable-name",
                      "extensions": ["exe", "scr", "com", "pif", "bat",
                                     "cmd", "vbs", "js", "ps1", "lnk"],
                      "action": "strip"},
                     {"name": "executable-content",
                      "detected": ["application/x-dosexec",
                                   "application/vnd.microsoft.portable-"
                                   "executable"],
                      "action": "strip"},
                     {"name": "double-extension",
                      "regex": "\\.(pdf|docx?|xlsx?|jpe?g|png|txt)"
                               "\\.[a-z0-9]{2,4}$",
                      "action": "reject"},
                     {"name": "macro-document",
                      "glob": ["*.docm", "*.xlsm", "*.pptm"],
                      "action": "quarantine"}]}],
        })
        text = part([b"Content-Type: text/plain"], b"Hello.\r\n")

        def send(msg):
            c = p.session()
            r = c.transaction("s@sender.test", ["user@example.org"], msg)
            c.quit()
            return r

        clean = message(rcpt="user@example.org")
        harness.queue_id(send(clean))
        exe = multipart([text, attachment(
            [b'Content-Disposition: attachment; filename="setup.exe"'],
            pe_image())], extra=[b"X-Postern-Attachments: forged"])
        harness.queue_id(send(exe))
        r = send(multipart([text, attachment(
            [b'Content-Disposition: attachment; '
             b'filename="invoice.pdf.zip"'], b"PK\x03\x04" + b"\0" * 60)]))
        self.assertEqual((r.code, r.enhanced), (554, "5.7.1"), r.raw)
        self.assertIn("double-extension", r.text)
        # unknown recipients are refused at RCPT, never bounced later
        c = p.session()
        c.cmd("MAIL FROM:<s@sender.test>", 250)
        c.cmd("RCPT TO:<nobody@example.org>", 550, "5.1.1")
        c.quit()

        got = behind.wait_for_transactions(2, timeout=15)
        # postern's Received field (folded) first, then the client's text
        def after_received(data):
            i = 0
            lines = data.split(b"\r\n")
            while i < len(lines) and (lines[i].startswith(b"Received:") or
                                      lines[i][:1] in (b" ", b"\t")):
                i += 1
            return b"\r\n".join(lines[i:])
        self.assertEqual(after_received(got[0].data), clean)
        stripped = after_received(got[1].data)
        self.assertTrue(stripped.startswith(
            b'X-Postern-Attachments: stripped "setup.exe" '
            b'(rule executable-name)\r\n'), stripped[:200])
        self.assertNotIn(b"X-Postern-Attachments: forged", stripped)
        self.assertNotIn(base64.b64encode(pe_image()[:48]), stripped)
        self.assertIn(b'attachment "setup.exe" removed', stripped)
        self.assertEqual(len(behind.transactions), 2)


class SmarthostRecipe(PosternTestCase):

    def setUp(self):
        super().setUp()
        self.ca = make_ca(self.tmp, "providerca")
        crt, key = make_cert(self.tmp, self.ca, "smtp.provider.test",
                             ["DNS:smtp.provider.test"])
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, key)
        self.smarthost = self.downstream(
            tls_context=ctx,
            extensions=harness.FakeDownstream.DEFAULT_EXTENSIONS +
            ["STARTTLS", "AUTH PLAIN LOGIN"],
            script={"UNKNOWN": "235 2.7.0 Authenticated"})

    def relay(self, tls_name):
        route = "smtp:127.0.0.1:%d" % self.smarthost.port
        return self.postern({
            "hostname": "app1.example.test",
            "relay": {"trusted_networks": ["127.0.0.0/8", "::1/128"]},
            "smtp": {"add_missing_headers": True},
            "delivery": dict(FAST, default_route=route, tls="verify",
                             tls_ca_file=self.ca[0], routes=[{
                                 "domain": "*", "route": route,
                                 "tls": "verify", "tls_name": tls_name,
                                 "auth_user": "app1@example.test",
                                 "auth_password": "secret",
                                 "concurrency": 5, "rate": 3000,
                                 "rate_period": 3600}]),
        })

    def test_every_domain_over_verified_tls_with_auth(self):
        p = self.relay("smtp.provider.test")
        with p.smtp() as s:
            s.sendmail("app@app1.example.test",
                       ["someone@anywhere.example", "x@other.test"],
                       b"Subject: from the app\r\n\r\nreport\r\n")
        [t] = self.smarthost.wait_for_transactions(1, timeout=20)
        self.assertTrue(t.session.tls)
        self.assertEqual(sorted(t.rcpts),
                         ["someone@anywhere.example", "x@other.test"])
        cmds = t.session.commands
        want = b"AUTH PLAIN " + base64.b64encode(
            b"\0app1@example.test\0secret")
        self.assertIn(want, cmds)
        self.assertLess(cmds.index(want), [i for i, c in enumerate(cmds)
                                           if c.startswith(b"MAIL")][0])
        self.assertNotIn(b"secret", p.log())
        # the app forgot Date and Message-ID: added for a trusted client
        self.assertIn(b"\r\nDate: ", b"\r\n" + t.data)
        self.assertIn(b"\r\nMessage-ID: ", b"\r\n" + t.data)

    def test_wrong_name_gets_nothing(self):
        p = self.relay("smtp.elsewhere.test")
        with p.smtp() as s:
            s.sendmail("app@app1.example.test", ["someone@anywhere.example"],
                       message())
        p.wait_for_log(r"event=deferred", timeout=20)
        self.assertEqual(self.smarthost.transactions, [])
        self.assertFalse(any(b"AUTH" in c for s in self.smarthost.sessions
                             for c in s.commands))


if __name__ == "__main__":
    unittest.main()
