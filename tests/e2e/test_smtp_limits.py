"""Issue 2, SMTP front: limits. SIZE at MAIL and while data streams, RFC 5321
4.5.3.1 path and command line limits (with the SIZE allowance), SMTPUTF8,
message text line cap, recipients per message, hop count."""

import time
import unittest

from harness import PosternTestCase, message, queue_id

LOCAL64 = "l" * 64
# 63+1+63+1+63+1+63 = 255 octets
DOMAIN255 = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 63])
# 63+1+63+1+63+1+62+1+1 = 256 octets
DOMAIN256 = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 62, "e"])


def domain_of(n):
    """A valid domain of exactly n octets (labels of at most 63)."""
    labels = []
    while True:
        used = sum(len(l) for l in labels) + len(labels)   # with dots
        rest = n - used
        if rest <= 63:
            labels.append("x" * rest)
            break
        labels.append("x" * (62 if rest == 64 else 63))
    d = ".".join(labels)
    assert len(d) == n and all(0 < len(l) <= 63 for l in labels), (d, n)
    return d


class SizeTest(PosternTestCase):
    start_postern = True
    postern_overrides = {"limits": {"message_size": 20000}}

    def test_size_param_at_mail(self):
        with self.p.session() as c:
            c.cmd("MAIL FROM:<a@example.org> SIZE=20001", 552, "5.3.4")
            c.cmd("MAIL FROM:<a@example.org> SIZE=99999999999999", 552,
                  "5.3.4")
            c.cmd("MAIL FROM:<a@example.org> SIZE=1000", 250, "2.1.0")
            c.cmd("RSET", 250, "2.0.0")
            c.cmd("MAIL FROM:<a@example.org> SIZE=20000", 250, "2.1.0")

    def test_data_over_limit_after_dot(self):
        big = message(body=("x" * 70 + "\r\n") * 600)     # ~43 KB
        with self.p.session() as c:
            r = c.transaction("a@example.org", ["b@example.net"], big)
            self.assertReply(r, 552, "5.3.4")
            # the session goes on; a small message passes
            c.cmd("NOOP", 250, "2.0.0")
            queue_id(c.transaction("a@example.org", ["b@example.net"],
                                   message(subject="small")))
        files = self.p.wait_for_delivered(1, settle=0.5)
        self.assertEqual(len(files), 1)
        self.assertIn(b"Subject: small", files[0].body)

    def sized(self, n):
        """A message of exactly n octets in short lines."""
        base = b"Subject: size\r\n\r\n"
        fill = n - len(base)
        lines = b"".join(b"y" * 98 + b"\r\n" for _ in range(fill // 100))
        rest = fill - len(lines)
        body = base + lines + (b"w" * (rest - 2) + b"\r\n" if rest else b"")
        self.assertEqual(len(body), n)
        return body

    def test_size_boundary(self):
        """Exactly limits.message_size octets pass, one more does not, in
        DATA and in BDAT."""
        with self.p.session() as c:
            queue_id(c.transaction("a@example.org", ["b@example.net"],
                                   self.sized(20000)))
            r = c.transaction("a@example.org", ["b@example.net"],
                              self.sized(20001))
            self.assertReply(r, 552, "5.3.4")
            for n, code in ((20000, 250), (20001, 552)):
                c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
                c.cmd("RCPT TO:<b@example.net>", 250, "2.1.5")
                r = c.bdat(self.sized(n), last=True)
                self.assertReply(r, code, "2.0.0" if code == 250 else "5.3.4")
        files = self.p.wait_for_delivered(2, settle=0.5)
        self.assertEqual([len(f.body) for f in files], [20000, 20000])

    def test_bdat_over_limit(self):
        """Chunks are sent one at a time (RFC 3030: no more chunks after a
        failed one); the chunk that crosses the limit gets 552 5.3.4."""
        with self.p.session() as c:
            c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
            c.cmd("RCPT TO:<b@example.net>", 250, "2.1.5")
            chunk = b"Subject: big\r\n\r\n" + b"y" * 70 + b"\r\n"
            for i in range(300):                 # 300 * 88 = 26400 octets
                r = c.bdat(chunk)
                if r.code != 250:
                    break
            self.assertReply(r, 552, "5.3.4")
            self.assertGreater(i * len(chunk), 15000)
            c.cmd("NOOP", 250, "2.0.0")
            c.cmd("RSET", 250, "2.0.0")
            c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
        time.sleep(0.5)
        self.assertEqual(self.p.maildir_count(), 0)


class PathLimitTest(PosternTestCase):
    start_postern = True

    def test_local_part(self):
        with self.p.session() as c:
            c.cmd("MAIL FROM:<%s@example.org>" % ("l" * 65), 553, "5.1.7")
            c.cmd("MAIL FROM:<%s@example.org>" % LOCAL64, 250, "2.1.0")
            c.cmd("RCPT TO:<%s@example.net>" % ("l" * 65), 553, "5.1.3")
            c.cmd("RCPT TO:<%s@example.net>" % LOCAL64, 250, "2.1.5")

    def test_domain(self):
        self.assertEqual(len(DOMAIN255), 255)
        self.assertEqual(len(DOMAIN256), 256)
        with self.p.session() as c:
            c.cmd("MAIL FROM:<a@%s>" % DOMAIN256, 553, "5.1.7")
            c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
            c.cmd("RCPT TO:<b@%s>" % DOMAIN256, 553, "5.1.3")
            # domain 255 is legal on its own; the path is then
            # 1+1+1+255+1 = 259 octets > 256, so it is refused as a path
            c.cmd("RCPT TO:<b@%s>" % DOMAIN255, 553, "5.1.3")

    def test_path(self):
        # path = "<" local "@" domain ">": 1+64+1+d+1
        d256 = domain_of(256 - 67)
        d257 = domain_of(257 - 67)
        with self.p.session() as c:
            c.cmd("MAIL FROM:<%s@%s>" % (LOCAL64, d257), 553, "5.1.7")
            c.cmd("MAIL FROM:<%s@%s>" % (LOCAL64, d256), 250, "2.1.0")
            c.cmd("RCPT TO:<%s@%s>" % (LOCAL64, d257), 553, "5.1.3")
            c.cmd("RCPT TO:<%s@%s>" % (LOCAL64, d256), 250, "2.1.5")
            c.cmd("DATA", 354)
            c.send(b"Subject: long path\r\n\r\nx\r\n.\r\n")
            queue_id(c.reply())
        d = self.p.wait_for_delivered(1)[0]
        self.assertEqual(d.return_path, "<%s@%s>" % (LOCAL64, d256))


class LineLimitTest(PosternTestCase):
    start_postern = True
    postern_overrides = {"limits": {"text_line_max": 4000}}

    def test_command_line_512(self):
        with self.p.session() as c:
            line = "NOOP " + "x" * 505           # + CRLF = 512 octets
            self.assertEqual(len(line) + 2, 512)
            c.cmd(line, 250, "2.0.0")
            line = "NOOP " + "x" * 506           # 513 octets
            c.cmd(line, 500, "5.5.2")
            c.cmd("NOOP", 250, "2.0.0")          # in sync again
            c.cmd("NOOP " + "x" * 5000, 500, "5.5.2")
            c.cmd("NOOP", 250, "2.0.0")

    def test_mail_size_allowance(self):
        """A MAIL line of 530 octets with SIZE= is within 512 + 26 and is
        accepted; a plain command of that length is not; a MAIL line
        beyond every extension allowance (512+26+100+500+500) is not."""
        def mail(total, param):
            head = "MAIL FROM:<a@example.org>"
            pad = total - 2 - len(head) - len(param)
            return head + " " * pad + param

        with self.p.session() as c:
            c.cmd(mail(530, " SIZE=1000"), 250, "2.1.0")
            c.cmd("RSET", 250, "2.0.0")
            c.cmd("NOOP " + "x" * 523, 500, "5.5.2")     # 530 octets
            c.cmd(mail(2000, " SIZE=1000"), 500, "5.5.2")
            c.cmd("NOOP", 250, "2.0.0")

    def test_text_line_cap_boundary(self):
        """limits.text_line_max counts the octets of a line before its
        CRLF: exactly that many pass, one more does not."""
        with self.p.session() as c:
            r = c.transaction("a@example.org", ["b@example.net"],
                              message(body="c" * 4001 + "\r\n"))
            self.assertReply(r, 552, "5.3.4")
            queue_id(c.transaction("a@example.org", ["b@example.net"],
                                   message(body="c" * 4000 + "\r\n")))
            # a header line counts the same
            r = c.transaction("a@example.org", ["b@example.net"],
                              message(extra_headers=["X-Long: " + "h" * 3993]))
            self.assertReply(r, 552, "5.3.4")
        files = self.p.wait_for_delivered(1, settle=0.5)
        self.assertEqual(len(files), 1)
        text = files[0].body.split(b"\r\n\r\n", 1)[1]
        self.assertEqual(text.replace(b"\r\n", b"").count(b"c"), 4000)

    def test_text_line_cap(self):
        ok = message(subject="long ok", body="a" * 3000 + "\r\nend\r\n")
        too_long = message(subject="too long",
                           body="b" * 5000 + "\r\nend\r\n")
        with self.p.session() as c:
            r = c.transaction("a@example.org", ["b@example.net"], too_long)
            self.assertReply(r, 552, "5.3.4")
            queue_id(c.transaction("a@example.org", ["b@example.net"], ok))
        files = self.p.wait_for_delivered(1, settle=0.5)
        self.assertEqual(len(files), 1)
        body = files[0].body
        self.assertIn(b"Subject: long ok", body)
        # accepted over 998 octets; whatever the folding, every "a" arrives
        self.assertEqual(body.replace(b"\r\n", b"").count(b"a"),
                         b"".join(ok.split(b"\r\n")).count(b"a"))


class Utf8Test(PosternTestCase):
    start_postern = True

    def test_utf8_address_needs_smtputf8(self):
        with self.p.session() as c:
            c.cmd("MAIL FROM:<jos\u00e9@example.org>", 553, "5.6.7")
            c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
            c.cmd("RCPT TO:<m\u00fcller@b\u00fccher.example>", 553, "5.6.7")
            c.cmd("RSET", 250, "2.0.0")
            c.cmd("MAIL FROM:<jos\u00e9@example.org> SMTPUTF8", 250, "2.1.0")
            c.cmd("RCPT TO:<m\u00fcller@b\u00fccher.example>", 250, "2.1.5")
            c.cmd("DATA", 354)
            c.send("Subject: \u00fcber\r\n\r\nGr\u00fc\u00dfe\r\n.\r\n"
                   .encode("utf-8"))
            queue_id(c.reply())
        d = self.p.wait_for_delivered(1)[0]
        self.assertEqual(d.return_path, "<jos\u00e9@example.org>")
        self.assertIn("UTF8SMTP", d.received)
        self.assertEqual(d.body, "Subject: \u00fcber\r\n\r\nGr\u00fc\u00dfe"
                                 "\r\n".encode("utf-8"))


class RecipientLimitTest(PosternTestCase):
    start_postern = True
    postern_overrides = {"limits": {"recipients": 3}}

    def test_too_many_recipients(self):
        with self.p.session() as c:
            c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
            for i in range(3):
                c.cmd("RCPT TO:<r%d@example.net>" % i, 250, "2.1.5")
            c.cmd("RCPT TO:<r3@example.net>", 452, "4.5.3")
            c.cmd("RCPT TO:<r4@example.net>", 452, "4.5.3")
            c.cmd("DATA", 354)
            c.send(b"Subject: three\r\n\r\nx\r\n.\r\n")
            queue_id(c.reply())
        files = self.p.wait_for_delivered(3, settle=0.5)
        self.assertEqual(sorted(f.delivered_to.strip("<>") for f in files),
                         ["r0@example.net", "r1@example.net",
                          "r2@example.net"])


class HopLimitTest(PosternTestCase):
    start_postern = True

    def hops(self, n, subject):
        """A message whose header starts with n Received fields."""
        hdrs = b"".join(b"Received: from h%d.example (h%d.example "
                        b"[192.0.2.%d])\r\n\tby relay%d.example; "
                        b"Sun, 22 Nov 2026 00:00:%02d +0000\r\n"
                        % (i, i, i % 250 + 1, i, i % 60) for i in range(n))
        return hdrs + message(subject=subject)

    def test_default_hop_limit_50(self):
        with self.p.session() as c:
            r = c.transaction("a@example.org", ["b@example.net"],
                              self.hops(51, "loop"))
            self.assertReply(r, 554, "5.4.6")
            c.cmd("NOOP", 250, "2.0.0")
            queue_id(c.transaction("a@example.org", ["b@example.net"],
                                   self.hops(48, "fine")))
        files = self.p.wait_for_delivered(1, settle=0.5)
        self.assertEqual(len(files), 1)
        self.assertIn(b"Subject: fine", files[0].body)

    def test_configured_hop_limit(self):
        self.p.restart({"limits": {"hops": 5}})
        with self.p.session() as c:
            r = c.transaction("a@example.org", ["b@example.net"],
                              self.hops(6, "six"))
            self.assertReply(r, 554, "5.4.6")
            queue_id(c.transaction("a@example.org", ["b@example.net"],
                                   self.hops(3, "three")))
        files = self.p.wait_for_delivered(1, settle=0.5)
        self.assertEqual(len(files), 1)
        self.assertIn(b"Subject: three", files[0].body)

    def test_hop_limit_boundary(self):
        """limits.hops Received fields pass; one more gets 554 5.4.6
        (SMTP-REPLIES.md and docs/SMTP.md: "more than limits.hops")."""
        self.p.restart({"limits": {"hops": 5}})
        with self.p.session() as c:
            queue_id(c.transaction("a@example.org", ["b@example.net"],
                                   self.hops(5, "five")))
            r = c.transaction("a@example.org", ["b@example.net"],
                              self.hops(6, "six"))
            self.assertReply(r, 554, "5.4.6")
        files = self.p.wait_for_delivered(1, settle=0.5)
        self.assertEqual(len(files), 1)
        self.assertIn(b"Subject: five", files[0].body)

    def test_received_in_body_not_counted(self):
        body = "".join("Received: from x%d by y; date\r\n" % i
                       for i in range(60))
        with self.p.session() as c:
            queue_id(c.transaction("a@example.org", ["b@example.net"],
                                   message(subject="body", body=body)))
        self.p.wait_for_maildir(1)


if __name__ == "__main__":
    unittest.main()
