"""Issue 2, SMTP front: every command with its reply code and enhanced code
(docs: notes/SMTP-REPLIES.md), case-insensitive verbs, bad sequences,
<postmaster>, PIPELINING, BDAT/CHUNKING replies."""

import unittest

from harness import HOSTNAME, PosternTestCase, message, queue_id

EXPECTED_EXTENSIONS = ["PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8",
                       "ENHANCEDSTATUSCODES", "CHUNKING"]


class CommandsTest(PosternTestCase):
    start_postern = True
    postern_overrides = {"limits": {"message_size": 1048576}}

    def test_greeting(self):
        with self.p.client() as c:
            r = c.greeting()
            self.assertEqual(r.lines[0].split()[:2], [HOSTNAME, "ESMTP"])
            self.assertIn("postern", r.text)

    def test_banner_configured(self):
        self.p.restart({"smtp": {"banner": "mail gateway ready"}})
        with self.p.client() as c:
            r = c.greeting()
            self.assertEqual(r.lines[0], HOSTNAME + " ESMTP mail gateway ready")

    def test_ehlo_keywords(self):
        with self.p.client() as c:
            c.greeting()
            ext = c.ehlo("client.test")
            first = c.ehlo_reply.lines[0]
            self.assertEqual(first.split()[0], HOSTNAME)
            for kw in EXPECTED_EXTENSIONS:
                self.assertIn(kw, ext)
            self.assertEqual(ext["SIZE"], "1048576")
            # every line but the last is a continuation
            raw_lines = c.ehlo_reply.raw.split(b"\r\n")[:-1]
            self.assertTrue(all(l.startswith(b"250-") for l in raw_lines[:-1]))
            self.assertTrue(raw_lines[-1].startswith(b"250 "))
            # a second EHLO is allowed and resets nothing harmful
            self.assertIn("PIPELINING", c.ehlo("again.test"))

    def test_helo(self):
        with self.p.client() as c:
            c.greeting()
            r = c.cmd("HELO client.test", 250)
            self.assertEqual(r.lines[0].split()[0], HOSTNAME)
            c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
            c.cmd("RCPT TO:<b@example.net>", 250, "2.1.5")

    def test_ehlo_helo_without_name(self):
        with self.p.client() as c:
            c.greeting()
            c.cmd("EHLO", 501, "5.5.4")
            c.cmd("HELO", 501, "5.5.4")
            c.cmd("EHLO ", 501, "5.5.4")
            c.cmd("EHLO ok.test", 250)

    def test_full_transaction(self):
        with self.p.session() as c:
            r = c.transaction("a@example.org", ["b@example.net"], message())
            qid = queue_id(r)
            self.assertRegex(qid, r"^[0-9A-Fa-f]{16}$")
            c.quit()
        self.p.wait_for_maildir(1)

    def test_rset_noop_quit(self):
        with self.p.session() as c:
            c.cmd("NOOP", 250, "2.0.0")
            c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
            c.cmd("RSET", 250, "2.0.0")
            # the transaction is gone
            c.cmd("RCPT TO:<b@example.net>", 503, "5.5.1")
            c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
            c.cmd("RCPT TO:<b@example.net>", 250, "2.1.5")
            c.cmd("RSET", 250, "2.0.0")
            c.cmd("DATA", 503, "5.5.1")
            c.cmd("NOOP", 250, "2.0.0")
            c.cmd("QUIT", 221, "2.0.0")
            self.assertTrue(c.closed())

    def test_vrfy_help_unknown(self):
        with self.p.session() as c:
            c.cmd("VRFY someone", 252, "2.5.0")
            c.cmd("VRFY <someone@example.net>", 252, "2.5.0")
            c.cmd("HELP", 214, "2.0.0")
            c.cmd("HELP MAIL", 214, "2.0.0")
            c.cmd("FROB", 500, "5.5.2")
            c.cmd("MAILX FROM:<a@b.test>", 500, "5.5.2")
            c.cmd("", 500, "5.5.2")
            c.cmd("VRFY", 501, "5.5.4")
            c.cmd("NOOP", 250, "2.0.0")      # still serving

    def test_nothing_after_quit(self):
        with self.p.session() as c:
            c.send(b"QUIT\r\nNOOP\r\nNOOP\r\n")
            c.expect(221, "2.0.0")
            self.assertTrue(c.closed())
            self.assertEqual(c.buf, b"")

    def test_endless_line_then_resync(self):
        """300 KB without a line end: one 500 5.5.2, memory stays bounded,
        and the next line is a command again."""
        with self.p.session() as c:
            c.send(b"NOOP " + b"x" * 300000)
            c.send(b"\r\nNOOP\r\n")
            c.expect(500, "5.5.2")
            c.expect(250, "2.0.0")
            self.assertEqual(c.pending(0.2), b"")

    def test_case_insensitive_verbs(self):
        with self.p.client() as c:
            c.greeting()
            c.cmd("eHlO client.test", 250)
            c.cmd("noop", 250, "2.0.0")
            c.cmd("mail from:<a@example.org>", 250, "2.1.0")
            c.cmd("Rcpt To:<b@example.net>", 250, "2.1.5")
            c.cmd("rset", 250, "2.0.0")
            c.cmd("MaIl FrOm:<a@example.org>", 250, "2.1.0")
            c.cmd("rCpT tO:<b@example.net>", 250, "2.1.5")
            c.cmd("vrfy x", 252, "2.5.0")
            c.cmd("help", 214, "2.0.0")
            c.cmd("dAtA", 354)
            c.send(b"Subject: case\r\n\r\nx\r\n.\r\n")
            queue_id(c.reply())
            c.cmd("helo again.test", 250)
            c.cmd("quit", 221, "2.0.0")
        self.assertEqual(len(self.p.wait_for_maildir(1)), 1)

    def test_bad_sequences(self):
        with self.p.client() as c:
            c.greeting()
            c.cmd("MAIL FROM:<a@example.org>", 503, "5.5.1")
            c.cmd("RCPT TO:<b@example.net>", 503, "5.5.1")
            c.cmd("DATA", 503, "5.5.1")
            c.cmd("EHLO client.test", 250)
            c.cmd("RCPT TO:<b@example.net>", 503, "5.5.1")
            c.cmd("DATA", 503, "5.5.1")
            c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
            c.cmd("MAIL FROM:<a@example.org>", 503, "5.5.1")    # nested
            c.cmd("DATA", 503, "5.5.1")          # no RCPT tried at all
            c.cmd("RCPT TO:<b@example.net>", 250, "2.1.5")
            c.cmd("DATA", 354)
            c.send(b"Subject: seq\r\n\r\nx\r\n.\r\n")
            queue_id(c.reply())
            # the transaction ended with the message
            c.cmd("RCPT TO:<b@example.net>", 503, "5.5.1")
            c.cmd("DATA", 503, "5.5.1")

    def test_data_with_no_valid_recipient(self):
        with self.p.session() as c:
            c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
            c.cmd("RCPT TO:<%s@example.net>" % ("x" * 65), 553, "5.1.3")
            c.cmd("DATA", 554, "5.5.1")
            c.cmd("RCPT TO:<b@example.net>", 250, "2.1.5")
            c.cmd("DATA", 354)
            c.send(b"Subject: x\r\n\r\nx\r\n.\r\n")
            queue_id(c.reply())

    def test_mail_rcpt_syntax(self):
        with self.p.session() as c:
            c.cmd("MAIL", 501, "5.5.4")
            c.cmd("MAIL FROM", 501, "5.5.4")
            c.cmd("MAIL TO:<a@example.org>", 501, "5.5.4")
            c.cmd("MAIL FROM:<a b@example.org>", 501, "5.1.7")
            c.cmd("MAIL FROM:<a@@example.org>", 501, "5.1.7")
            c.cmd("MAIL FROM:<a@example.org", 501)
            c.cmd("MAIL FROM:<a@example.org> FROBNICATE=1", 555, "5.5.4")
            # BINARYMIME is not offered (docs/SMTP.md)
            self.assertNotIn("BINARYMIME", c.ehlo_reply.text.upper())
            r = c.cmd("MAIL FROM:<a@example.org> BODY=BINARYMIME", 555,
                      "5.5.4")
            self.assertIn("BODY=BINARYMIME", r.text)
            c.cmd("MAIL FROM:<a@example.org> BODY=8BITMIME", 250, "2.1.0")
            c.cmd("RCPT", 501, "5.5.4")
            c.cmd("RCPT FROM:<b@example.net>", 501, "5.5.4")
            c.cmd("RCPT TO:<b c@example.net>", 501, "5.1.3")
            c.cmd("RCPT TO:<b@@example.net>", 501, "5.1.3")
            c.cmd("RCPT TO:<b@example.net> FROBNICATE=1", 555, "5.5.4")
            c.cmd("RCPT TO:<b@example.net>", 250, "2.1.5")

    def test_null_sender_and_params(self):
        with self.p.session() as c:
            c.cmd("MAIL FROM:<>", 250, "2.1.0")
            c.cmd("RSET", 250, "2.0.0")
            c.cmd("MAIL FROM:<a@example.org> BODY=7BIT SIZE=100", 250,
                  "2.1.0")
            c.cmd("RSET", 250, "2.0.0")
            c.cmd("MAIL FROM:<a@example.org> SMTPUTF8 BODY=8BITMIME", 250,
                  "2.1.0")

    def test_postmaster_any_case(self):
        with self.p.session() as c:
            c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
            c.cmd("RCPT TO:<postmaster>", 250, "2.1.5")
            c.cmd("RSET", 250, "2.0.0")
            c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
            c.cmd("RCPT TO:<PostMaster>", 250, "2.1.5")
            c.cmd("DATA", 354)
            c.send(b"Subject: pm\r\n\r\nx\r\n.\r\n")
            queue_id(c.reply())
        d = self.p.wait_for_delivered(1)[0]
        self.assertEqual(d.delivered_to.strip("<>").lower(), "postmaster")


class PipeliningTest(PosternTestCase):
    start_postern = True

    def test_group_in_one_write(self):
        with self.p.session() as c:
            c.send(b"MAIL FROM:<a@example.org>\r\n"
                   b"RCPT TO:<b@example.net>\r\n"
                   b"RCPT TO:<bad address@example.net>\r\n"
                   b"RCPT TO:<c@example.net>\r\n"
                   b"DATA\r\n")
            rs = c.replies(5)
            self.assertEqual([(r.code, r.enhanced) for r in rs],
                             [(250, "2.1.0"), (250, "2.1.5"), (501, "5.1.3"),
                              (250, "2.1.5"), (354, None)])
            c.send(b"Subject: piped\r\n\r\nhello\r\n.\r\n")
            queue_id(c.reply())
        self.assertEqual(len(self.p.wait_for_maildir(2)), 2)

    def test_whole_session_in_one_write(self):
        """EHLO, two whole transactions with their text, and QUIT in one
        write: every reply present and in order."""
        with self.p.client() as c:
            c.greeting()
            c.send(b"EHLO client.test\r\n"
                   b"MAIL FROM:<a@example.org>\r\n"
                   b"RCPT TO:<b@example.net>\r\n"
                   b"DATA\r\n"
                   b"Subject: one\r\n\r\nfirst\r\n.\r\n"
                   b"RSET\r\n"
                   b"MAIL FROM:<a@example.org>\r\n"
                   b"RCPT TO:<c@example.net>\r\n"
                   b"NOOP\r\n"
                   b"DATA\r\n"
                   b"Subject: two\r\n\r\nsecond\r\n.\r\n"
                   b"QUIT\r\n")
            rs = c.replies(11)
            self.assertEqual([r.code for r in rs],
                             [250, 250, 250, 354, 250, 250, 250, 250, 250,
                              354, 250])
            q1, q2 = queue_id(rs[4]), queue_id(rs[10])
            self.assertNotEqual(q1, q2)
            c.expect(221, "2.0.0")
            self.assertTrue(c.closed())
        files = self.p.wait_for_delivered(2, settle=0.3)
        self.assertEqual(len(files), 2)
        bodies = sorted(f.body for f in files)
        self.assertEqual(bodies, [b"Subject: one\r\n\r\nfirst\r\n",
                                  b"Subject: two\r\n\r\nsecond\r\n"])


class BdatTest(PosternTestCase):
    start_postern = True

    def test_chunks_and_last(self):
        with self.p.session() as c:
            c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
            c.cmd("RCPT TO:<b@example.net>", 250, "2.1.5")
            r = c.bdat(b"Subject: bdat\r\n\r\n")
            self.assertReply(r, 250, "2.0.0")
            self.assertIn("17", r.text.split())
            r = c.bdat(b"line one\r\n.dot line kept\r\n")
            self.assertReply(r, 250, "2.0.0")
            # the octets of this chunk (26) or of the message so far (43)
            self.assertTrue({"26", "43"} & set(r.text.split()), r.raw)
            r = c.bdat(b"", last=True)
            queue_id(r)
            c.quit()
        d = self.p.wait_for_delivered(1)[0]
        self.assertEqual(d.body, b"Subject: bdat\r\n\r\nline one\r\n"
                                 b".dot line kept\r\n")

    def test_bdat_pipelined(self):
        with self.p.session() as c:
            c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
                   b"BDAT 10\r\nSubject: pBDAT 10 LAST\r\n\r\n\r\nbody\r\nQUIT\r\n")
            rs = c.replies(5)
            self.assertEqual([r.code for r in rs], [250, 250, 250, 250, 221])
            queue_id(rs[3])
        d = self.p.wait_for_delivered(1)[0]
        self.assertEqual(d.body, b"Subject: p\r\n\r\nbody\r\n")

    def test_bdat_errors(self):
        with self.p.session() as c:
            c.cmd("BDAT 0 LAST", 503, "5.5.1")          # before MAIL
            c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
            c.cmd("RCPT TO:<b@example.net>", 250, "2.1.5")
            r = c.bdat(b"Subject: e\r\n\r\n")
            self.assertReply(r, 250, "2.0.0")
            c.cmd("DATA", 503, "5.5.1")                 # DATA after BDAT
            queue_id(c.bdat(b"x\r\n", last=True))
            c.cmd("NOOP", 250, "2.0.0")
        d = self.p.wait_for_delivered(1)[0]
        self.assertEqual(d.body, b"Subject: e\r\n\r\nx\r\n")


if __name__ == "__main__":
    unittest.main()
