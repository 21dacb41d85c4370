"""Client names in Received: reverse DNS confirmed forward (FCrDNS),
against dnsmasq on loopback."""
import unittest

import harness
from harness import PosternTestCase


class ReverseDns(PosternTestCase):

    def send_from(self, p, source):
        c = p.client(source=source)
        c.greeting()
        c.ehlo("helo.name.test")
        c.cmd("MAIL FROM:<a@sender.test>", 250)
        c.cmd("RCPT TO:<b@dest.test>", 250)
        c.cmd("DATA", 354)
        c.send(b"Subject: rdns\r\n\r\nbody\r\n.\r\n")
        c.expect(250, "2.0.0")
        c.quit()

    def test_confirmed_and_unconfirmed_names(self):
        dns = self.dnsmasq([
            # 127.0.0.2 -> good.rdns.test -> 127.0.0.2: confirmed
            "--ptr-record=2.0.0.127.in-addr.arpa,good.rdns.test",
            "--host-record=good.rdns.test,127.0.0.2",
            # 127.0.0.3 -> liar.rdns.test -> 127.0.0.9: not confirmed
            "--ptr-record=3.0.0.127.in-addr.arpa,liar.rdns.test",
            "--host-record=liar.rdns.test,127.0.0.9",
        ], domains=("test", "in-addr.arpa"))
        p = self.postern({"resolver": dns.resolver(),
                          "relay": {"trusted_networks": ["127.0.0.0/8"]}})
        self.send_from(p, "127.0.0.2")
        self.send_from(p, "127.0.0.3")
        self.send_from(p, "127.0.0.4")      # no PTR at all
        got = sorted(m.received for m in p.wait_for_delivered(3))
        self.assertIn("from helo.name.test (good.rdns.test [127.0.0.2])",
                      got[0])
        self.assertIn("from helo.name.test (unknown [127.0.0.3])", got[1])
        self.assertIn("from helo.name.test (unknown [127.0.0.4])", got[2])

    def test_dead_resolver_gives_unknown_promptly(self):
        # the harness default points the resolver at a closed port
        p = self.postern({"relay": {"trusted_networks": ["127.0.0.0/8"]}})
        self.send_from(p, "127.0.0.5")
        [m] = p.wait_for_delivered(1)
        self.assertIn("(unknown [127.0.0.5])", m.received)

    def test_disabled(self):
        p = self.postern({"smtp": {"reverse_dns": False}})
        self.send_from(p, "127.0.0.1")
        [m] = p.wait_for_delivered(1)
        self.assertIn("(unknown [127.0.0.1])", m.received)

    def test_hosts_file_name_for_loopback(self):
        # 127.0.0.1 is "localhost" in /etc/hosts, which confirms forward
        p = self.postern()
        self.send_from(p, "127.0.0.1")
        [m] = p.wait_for_delivered(1)
        self.assertIn("(localhost [127.0.0.1])", m.received)


if __name__ == "__main__":
    unittest.main()
