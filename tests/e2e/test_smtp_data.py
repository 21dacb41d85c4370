"""Issue 2, SMTP front: message data. Dot-stuffing round trip, 8-bit bodies
byte-identical, BDAT and bare LF/CR normalisation, every SMTP smuggling
variant, bare_newline = "reject", the Received/Return-Path/Delivered-To
fields, a client gone mid-DATA, byte-at-a-time input."""

import datetime
import email
import email.policy
import email.utils
import os
import re
import socket
import struct
import time
import unittest

from harness import HOSTNAME, PosternTestCase, dot_stuff, message, queue_id

SMUGGLE_VARIANTS = [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n",
                    b"\r\n.\x00\r\n"]
SMUGGLED = (b"MAIL FROM:<evil@attacker.example>\r\n"
            b"RCPT TO:<victim@example.net>\r\n"
            b"DATA\r\n"
            b"From: <ceo@example.net>\r\n"
            b"Subject: smuggled\r\n"
            b"\r\n"
            b"you have been smuggled\r\n")


def assert_canonical(test, data):
    """Every CR is followed by LF and every LF preceded by CR."""
    test.assertIsNone(re.search(rb"\r(?!\n)|(?<!\r)\n", data),
                      "bare CR or LF in %r" % data[:300])


class DotAndEightBitTest(PosternTestCase):
    start_postern = True

    def test_dot_stuffing_round_trip(self):
        body = (b"Subject: dots\r\n\r\n"
                b".leading dot\r\n"
                b"..two dots\r\n"
                b".\r\n"
                b" .not at start\r\n"
                b"...\r\n"
                b"last.\r\n")
        wire = dot_stuff(body)
        self.assertEqual(wire, b"Subject: dots\r\n\r\n"
                               b"..leading dot\r\n"
                               b"...two dots\r\n"
                               b"..\r\n"
                               b" .not at start\r\n"
                               b"....\r\n"
                               b"last.\r\n"
                               b".\r\n")
        with self.p.session() as c:
            queue_id(c.transaction("a@example.org", ["b@example.net"], wire,
                                   stuffed=True))
        d = self.p.wait_for_delivered(1)[0]
        self.assertEqual(d.body, body)

    def test_dot_stuffing_smtplib(self):
        body = b"Subject: smtplib\r\n\r\n.one\r\n..two\r\n.\r\nend\r\n"
        with self.p.smtp() as s:
            s.sendmail("a@example.org", ["b@example.net"], body)
        self.assertEqual(self.p.wait_for_delivered(1)[0].body, body)

    def test_8bit_body_byte_identical(self):
        allbytes = bytes(b for b in range(1, 256) if b not in (10, 13))
        body = (b"Subject: 8bit\r\nContent-Type: application/octet-stream"
                b"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
                b"".join(allbytes[i:i + 60] + b"\r\n"
                         for i in range(0, len(allbytes), 60)) +
                "\u00e9t\u00e9 \u65e5\u672c\u8a9e \U0001f600\r\n"
                .encode("utf-8") +
                b"\xff\xfe\x80\x81 latin-1 \xe9\r\n")
        with self.p.session() as c:
            queue_id(c.transaction("a@example.org", ["b@example.net"], body,
                                   mail_params="BODY=8BITMIME"))
        self.assertEqual(self.p.wait_for_delivered(1)[0].body, body)

    def test_8bit_smtplib(self):
        body = "Subject: x\r\n\r\n\u00e4\u00f6\u00fc \u00df\r\n".encode()
        with self.p.smtp() as s:
            s.ehlo()
            s.sendmail("a@example.org", ["b@example.net"], body,
                       mail_options=["BODY=8BITMIME"])
        self.assertEqual(self.p.wait_for_delivered(1)[0].body, body)


class BdatNewlineTest(PosternTestCase):
    start_postern = True

    def test_bdat_bare_lf_arrives_as_crlf(self):
        with self.p.session() as c:
            c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
            c.cmd("RCPT TO:<b@example.net>", 250, "2.1.5")
            self.assertReply(c.bdat(b"Subject: bare\nX-A: 1\r\n\nline1\n"),
                             250, "2.0.0")
            # CR at the end of one chunk, LF at the start of the next
            self.assertReply(c.bdat(b"line2\r"), 250, "2.0.0")
            self.assertReply(c.bdat(b"\nline3\rline4\n.dot kept\n"), 250,
                             "2.0.0")
            queue_id(c.bdat(b"end\r\n", last=True))
        d = self.p.wait_for_delivered(1)[0]
        self.assertEqual(d.body, b"Subject: bare\r\nX-A: 1\r\n\r\nline1\r\n"
                                 b"line2\r\nline3\r\nline4\r\n.dot kept\r\n"
                                 b"end\r\n")

    def test_data_bare_lf_and_cr_normalised(self):
        wire = b"Subject: bare\n\nl1\nl2\rl3\r\n.\r\n"
        with self.p.session() as c:
            queue_id(c.transaction("a@example.org", ["b@example.net"], wire,
                                   stuffed=True))
        d = self.p.wait_for_delivered(1)[0]
        self.assertEqual(d.body, b"Subject: bare\r\n\r\nl1\r\nl2\r\nl3\r\n")


class SmugglingTest(PosternTestCase):
    start_postern = True

    def test_every_variant_one_message(self):
        for v in SMUGGLE_VARIANTS:
            with self.subTest(variant=v):
                before = self.p.maildir_count()
                wire = (b"Subject: variant " + repr(v).encode() +
                        b"\r\n\r\nbody" + v + SMUGGLED + b"\r\n.\r\n")
                with self.p.session() as c:
                    c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
                    c.cmd("RCPT TO:<b@example.net>", 250, "2.1.5")
                    c.cmd("DATA", 354)
                    c.send(wire)
                    queue_id(c.reply())
                    c.send(b"QUIT\r\n")
                    c.expect(221, "2.0.0")
                    # nothing else: the smuggled commands got no reply
                    self.assertEqual(c.pending(0.3), b"")
                files = self.p.wait_for_delivered(before + 1, settle=0.3)
                self.assertEqual(len(files), before + 1)
                d = files[-1]
                self.assertIn(repr(v).encode(), d.body)
                self.assertEqual(d.delivered_to.strip("<>"), "b@example.net")
                self.assertIn(b"MAIL FROM:<evil@attacker.example>\r\n",
                              d.body)
                self.assertIn(b"you have been smuggled\r\n", d.body)
                assert_canonical(self, d.raw)
        self.assertNotIn(b"evil@attacker", self.p.log(),
                         "a smuggled command reached the command parser")

    def test_variants_pipelined_with_next_command(self):
        """Smuggling attempt and the next real transaction in one write."""
        wire = (b"Subject: p\r\n\r\nbody\n.\r\n" + SMUGGLED + b"\r\n.\r\n"
                b"NOOP\r\n")
        with self.p.session() as c:
            c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
            c.cmd("RCPT TO:<b@example.net>", 250, "2.1.5")
            c.cmd("DATA", 354)
            c.send(wire)
            queue_id(c.reply())
            c.expect(250, "2.0.0")              # the NOOP
            self.assertEqual(c.pending(0.3), b"")
        self.assertEqual(len(self.p.wait_for_maildir(1, settle=0.3)), 1)


class BareNewlineRejectTest(PosternTestCase):
    start_postern = True
    postern_overrides = {"smtp": {"bare_newline": "reject"}}

    def test_reject_after_real_end(self):
        for v in [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n",
                  b"\nbare lf\r\n", b"bare\rcr\r\n"]:
            with self.subTest(variant=v):
                wire = b"Subject: r\r\n\r\nbody" + v + SMUGGLED + b"\r\n.\r\n"
                with self.p.session() as c:
                    c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
                    c.cmd("RCPT TO:<b@example.net>", 250, "2.1.5")
                    c.cmd("DATA", 354)
                    c.send(wire)
                    c.expect(550, "5.5.2")
                    c.send(b"NOOP\r\n")
                    c.expect(250, "2.0.0")
                    self.assertEqual(c.pending(0.2), b"")
        # canonical text still passes
        with self.p.session() as c:
            queue_id(c.transaction("a@example.org", ["b@example.net"],
                                   message(subject="clean")))
        files = self.p.wait_for_delivered(1, settle=0.5)
        self.assertEqual(len(files), 1)
        self.assertIn(b"Subject: clean", files[0].body)

    def test_reject_bdat(self):
        with self.p.session() as c:
            c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
            c.cmd("RCPT TO:<b@example.net>", 250, "2.1.5")
            c.expect(550, "5.5.2", c.bdat(b"Subject: b\n\nx\n", last=True))
            c.cmd("NOOP", 250, "2.0.0")
        time.sleep(0.5)
        self.assertEqual(self.p.maildir_count(), 0)


class HeadersAddedTest(PosternTestCase):
    start_postern = True

    RECEIVED_RE = re.compile(
        r"^from (?P<helo>\S+) \((?P<rdns>\S+) \[(?P<ip>[^\]]+)\]\) "
        r"by (?P<by>\S+) \(postern\) with (?P<proto>[A-Z0-9]+) "
        r"id (?P<id>[0-9A-Fa-f]{16})(?: for <(?P<for>[^>]+)>)?; "
        r"(?P<date>.+)$")

    def parse(self, d):
        msg = email.message_from_bytes(d.raw, policy=email.policy.compat32)
        received = msg.get_all("Received")
        self.assertTrue(received)
        first = re.sub(r"\s+", " ", received[0]).strip()
        m = self.RECEIVED_RE.match(first)
        self.assertIsNotNone(m, "Received: %r" % first)
        when = email.utils.parsedate_to_datetime(m.group("date"))
        now = datetime.datetime.now(datetime.timezone.utc)
        self.assertLess(abs((now - when).total_seconds()), 120)
        return msg, m

    def test_one_recipient(self):
        with self.p.client() as c:
            c.greeting()
            c.ehlo("client.example")
            sent = message()
            qid = queue_id(c.transaction("s@example.org", ["r@example.net"],
                                         sent))
        d = self.p.wait_for_delivered(1)[0]
        self.assertEqual(d.return_path, "<s@example.org>")
        self.assertEqual(d.delivered_to, "r@example.net")
        self.assertTrue(d.raw.startswith(b"Return-Path: <s@example.org>\r\n"
                                         b"Delivered-To: "))
        msg, m = self.parse(d)
        self.assertEqual(msg["Return-Path"], "<s@example.org>")
        self.assertEqual(m.group("helo"), "client.example")
        self.assertEqual(m.group("ip"), "127.0.0.1")
        self.assertEqual(m.group("by"), HOSTNAME)
        self.assertEqual(m.group("proto"), "ESMTP")
        self.assertEqual(m.group("id").upper(), qid.upper())
        self.assertEqual(m.group("for"), "r@example.net")
        self.assertEqual(d.body, sent)

    def test_two_recipients_no_for(self):
        with self.p.client() as c:
            c.greeting()
            c.cmd("HELO old.example", 250)
            queue_id(c.transaction("", ["r1@example.net", "r2@example.net"],
                                   message()))
        files = self.p.wait_for_delivered(2)
        self.assertEqual(sorted(f.delivered_to.strip("<>") for f in files),
                         ["r1@example.net", "r2@example.net"])
        for d in files:
            self.assertEqual(d.return_path, "<>")
            _, m = self.parse(d)
            self.assertIsNone(m.group("for"))
            self.assertEqual(m.group("proto"), "SMTP")
            self.assertEqual(m.group("helo"), "old.example")
            self.assertNotIn(" for ", d.received)

    def test_helo_text_sanitised(self):
        with self.p.client() as c:
            c.greeting()
            c.cmd("EHLO bad(comment;x", 250)
            queue_id(c.transaction("s@example.org", ["r@example.net"],
                                   message()))
        d = self.p.wait_for_delivered(1)[0]
        # the header stays one parseable field: parentheses balanced and
        # the date after the only top-level ';'
        depth = 0
        for ch in d.received:
            depth += {"(": 1, ")": -1}.get(ch, 0)
            self.assertGreaterEqual(depth, 0, d.received)
        self.assertEqual(depth, 0, d.received)
        self.parse(d)


class DisconnectTest(PosternTestCase):
    start_postern = True

    def test_client_gone_mid_data(self):
        c = self.p.session()
        c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
        c.cmd("RCPT TO:<b@example.net>", 250, "2.1.5")
        c.cmd("DATA", 354)
        c.send(b"Subject: gone\r\n\r\n" + (b"z" * 76 + b"\r\n") * 4000)
        # the data streams to a file in the spool's incoming/ directory
        deadline = time.monotonic() + 5
        while not self.p.spool_files("incoming") and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertTrue(self.p.spool_files("incoming"),
                        "no spool file while DATA streams: %r"
                        % self.p.spool_files(None))
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                          struct.pack("ii", 1, 0))
        c.close()                              # RST, mid-DATA
        deadline = time.monotonic() + 5
        while self.p.spool_files("incoming") and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.p.spool_files("incoming"), [])
        time.sleep(0.5)
        self.assertEqual(self.p.maildir_count(), 0)
        # a polite close mid-DATA too
        c = self.p.session()
        c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
        c.cmd("RCPT TO:<b@example.net>", 250, "2.1.5")
        c.cmd("DATA", 354)
        c.send(b"Subject: gone2\r\n\r\nhalf a line")
        c.sock.shutdown(socket.SHUT_WR)
        self.assertTrue(c.closed(5))
        c.close()
        time.sleep(0.5)
        self.assertEqual(self.p.spool_files("incoming"), [])
        self.assertEqual(self.p.maildir_count(), 0)
        # and the gateway serves the next client
        with self.p.session() as c:
            queue_id(c.transaction("a@example.org", ["b@example.net"],
                                   message(subject="after")))
        files = self.p.wait_for_delivered(1, settle=0.3)
        self.assertEqual(len(files), 1)
        self.assertIn(b"Subject: after", files[0].body)

    def test_client_gone_mid_bdat(self):
        c = self.p.session()
        c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
        c.cmd("RCPT TO:<b@example.net>", 250, "2.1.5")
        self.assertReply(c.bdat(b"Subject: gone\r\n\r\n" + b"z" * 1000),
                         250, "2.0.0")
        c.send(b"BDAT 100000 LAST\r\n" + b"q" * 5000)
        c.close()
        time.sleep(1.0)
        self.assertEqual(self.p.spool_files("incoming"), [])
        self.assertEqual(self.p.maildir_count(), 0)


class ByteAtATimeTest(PosternTestCase):
    start_postern = True

    def test_whole_session_one_byte_per_send(self):
        body = message(subject="bytes", body=".dot\r\nline two\r\n")
        session = (b"EHLO slow.example\r\n"
                   b"MAIL FROM:<a@example.org>\r\n"
                   b"RCPT TO:<b@example.net>\r\n"
                   b"DATA\r\n" + dot_stuff(body) +
                   b"RSET\r\n"
                   b"MAIL FROM:<a@example.org>\r\n"
                   b"RCPT TO:<c@example.net>\r\n"
                   b"BDAT 14 LAST\r\nSubject: b\r\n\r\n"
                   b"QUIT\r\n")
        with self.p.client() as c:
            c.greeting()
            for i in range(len(session)):
                c.send(session[i:i + 1])
                if i % 8 == 0:
                    time.sleep(0.001)
            rs = c.replies(9)
            self.assertEqual([r.code for r in rs],
                             [250, 250, 250, 354, 250, 250, 250, 250, 250])
            self.assertEqual(rs[0].lines[0].split()[0], HOSTNAME)
            queue_id(rs[4])
            queue_id(rs[8])
            c.expect(221, "2.0.0")
        files = self.p.wait_for_delivered(2, settle=0.3)
        self.assertEqual(len(files), 2)
        bodies = {f.delivered_to.strip("<>"): f.body for f in files}
        self.assertEqual(bodies["b@example.net"], body)
        self.assertEqual(bodies["c@example.net"], b"Subject: b\r\n\r\n")


if __name__ == "__main__":
    unittest.main()
