"""Relay control end to end: every relay trick sent from 127.0.0.2 (an
outsider: the test configs trust 127.0.0.1/32 only) is refused with
554 5.7.1 or delivered inside relay.test; relay domains compare
case-insensitively, with a trailing dot, and in IDN A-label and U-label
forms; a recipient list refuses unknown users with 550 5.1.1; a trusted
client relays anywhere."""

import os
import unittest

from harness import PosternTestCase, dot_stuff, message

OUTSIDER = "127.0.0.2"


class RelayTest(PosternTestCase):
    def setUp(self):
        super().setUp()
        rcpts = os.path.join(self.tmp, "list.rcpts")
        with open(rcpts, "w") as f:
            f.write("# known users of list.test\nalice\nBob@list.test\n")
        self.p = self.postern({"relay": {"domains": [
            "Relay.Test.",
            "b\u00fccher.test",
            {"domain": "list.test", "recipients": rcpts},
        ]}})

    def outsider(self):
        c = self.p.client(source=OUTSIDER)
        c.start("outsider.test")
        c.cmd("MAIL FROM:<s@outsider.test>", 250, "2.1.0")
        return c

    def test_tricks_from_outsider(self):
        refused = [
            "<u@evil.test>",
            "<u%evil.test@relay.test>",
            "<evil.test!u@relay.test>",
            "<\"u@evil.test\"@relay.test>",
            "<@relay.test:u@evil.test>",
            "<u@relay.test.evil.test>",
            "<u@evil.relay.test>",
            "<u@[127.0.0.1]>",
            "<u@[IPv6:::1]>",
            "<u@xn--bcher-kvb.test>",
        ]
        accepted = {
            "<plain@relay.test>": "plain@relay.test",
            "<Upper@RELAY.TEST.>": "Upper@RELAY.TEST",
            "<@evil.test:routed@relay.test>": "routed@relay.test",
            "<\"quoted\"@relay.test>": "\"quoted\"@relay.test",
            "<a@xn--bcher-kva.test>": "a@xn--bcher-kva.test",
            "<postmaster>": "postmaster",
        }
        c = self.outsider()
        for r in refused:
            rep = c.cmd("RCPT TO:%s" % r)
            self.assertReply(rep, 554, "5.7.1")
            self.assertIn("Relay access denied", rep.text)
        for r in accepted:
            self.assertReply(c.cmd("RCPT TO:%s" % r), 250, "2.1.5")
        c.cmd("DATA", 354)
        c.send(dot_stuff(message()))
        c.expect(250, "2.0.0")
        c.quit()
        got = sorted(d.delivered_to.strip("<>") for d in
                     self.p.wait_for_delivered(len(accepted), settle=0.3))
        self.assertEqual(got, sorted(accepted.values()))

    def test_u_label_recipient(self):
        c = self.outsider()
        c.cmd("RSET", 250)
        c.cmd("MAIL FROM:<s@outsider.test> SMTPUTF8", 250)
        self.assertReply(c.cmd("RCPT TO:<u@B\u00dcCHER.test.>"), 250, "2.1.5")
        self.assertReply(c.cmd("RCPT TO:<u@b\u00fccher.evil>"), 554, "5.7.1")
        c.quit()

    def test_recipient_list(self):
        c = self.outsider()
        self.assertReply(c.cmd("RCPT TO:<alice@list.test>"), 250, "2.1.5")
        self.assertReply(c.cmd("RCPT TO:<BOB@List.Test.>"), 250, "2.1.5")
        r = c.cmd("RCPT TO:<mallory@list.test>")
        self.assertReply(r, 550, "5.1.1")
        self.assertIn("<mallory@list.test>", r.text)
        self.assertReply(c.cmd("RCPT TO:<alice%evil.test@list.test>"),
                         554, "5.7.1")
        self.assertReply(c.cmd("RCPT TO:<postmaster@list.test>"), 250)
        c.quit()
        # unknown users are refused for trusted clients too (no backscatter)
        t = self.p.session()
        t.cmd("MAIL FROM:<s@inside.test>", 250)
        self.assertReply(t.cmd("RCPT TO:<mallory@list.test>"), 550, "5.1.1")
        t.quit()
        self.assertRegex(self.p.log().decode(),
                         r"event=reject phase=rcpt to=\"mallory@list.test\" "
                         r"code=550 reason=unknown_user")

    def test_trusted_relays_anywhere(self):
        c = self.p.session()          # from 127.0.0.1: trusted
        c.cmd("MAIL FROM:<s@inside.test>", 250)
        for r in ("<u@evil.test>", "<u%x@relay.test>", "<u@[127.0.0.1]>"):
            self.assertReply(c.cmd("RCPT TO:%s" % r), 250, "2.1.5")
        c.quit()


if __name__ == "__main__":
    unittest.main()
