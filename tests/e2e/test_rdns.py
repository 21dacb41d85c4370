"""Client names in Received: reverse DNS confirmed forward (FCrDNS),
against dnsmasq on loopback. The answers are kept for their TTL: a client
that comes back gets the same name without a query reaching dnsmasq
(counted in its --log-queries log), a TTL of 0 is not kept, and a short
one runs out; a client without a PTR record is not looked up again either
(the negative answer kept 30 seconds)."""
import re
import time
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

    def counting_dnsmasq(self, ttl):
        return self.dnsmasq([
            "--log-queries", "--log-facility=-", "--local-ttl=%d" % ttl,
            "--ptr-record=2.0.0.127.in-addr.arpa,good.rdns.test",
            "--host-record=good.rdns.test,127.0.0.2",
        ], domains=("test", "in-addr.arpa"))

    def queries(self, dns, want=None, timeout=10.0):
        """(PTR, A) queries dnsmasq logged; with want, wait until at
        least that many arrived (then a moment for any late one)."""
        def count():
            with open(dns.log_path, "rb") as f:
                text = f.read()
            return (len(re.findall(rb"query\[PTR\] 2\.0\.0\.127\.in-addr"
                                   rb"\.arpa ", text)),
                    len(re.findall(rb"query\[A\] good\.rdns\.test ", text)))
        if want is not None:
            harness.wait_for(lambda: all(c >= w for c, w in
                                         zip(count(), want)), timeout,
                             "dnsmasq to log %r queries" % (want,))
            time.sleep(0.5)
        return count()

    def names(self, p, n):
        return [re.search(r"\((\S+) \[127\.0\.0\.2\]\)", m.received)
                .group(1) for m in p.wait_for_delivered(n)]

    def test_answers_kept_for_their_ttl(self):
        dns = self.counting_dnsmasq(300)
        p = self.postern({"resolver": dns.resolver(),
                          "relay": {"trusted_networks": ["127.0.0.0/8"]}})
        self.send_from(p, "127.0.0.2")
        self.assertEqual(self.queries(dns, (1, 1)), (1, 1))
        self.send_from(p, "127.0.0.2")
        self.send_from(p, "127.0.0.2")
        self.assertEqual(self.names(p, 3), ["good.rdns.test"] * 3)
        self.assertEqual(self.queries(dns), (1, 1))

    def test_no_ptr_kept_too(self):
        dns = self.counting_dnsmasq(300)
        p = self.postern({"resolver": dns.resolver(),
                          "relay": {"trusted_networks": ["127.0.0.0/8"]}})

        def ptr_queries():
            with open(dns.log_path, "rb") as f:
                return len(re.findall(rb"query\[PTR\] 4\.0\.0\.127\."
                                      rb"in-addr\.arpa ", f.read()))
        for _ in range(3):
            self.send_from(p, "127.0.0.4")
        for m in p.wait_for_delivered(3):
            self.assertIn("(unknown [127.0.0.4])", m.received)
        time.sleep(0.5)
        self.assertEqual(ptr_queries(), 1)

    def test_ttl_zero_not_kept(self):
        dns = self.counting_dnsmasq(0)
        p = self.postern({"resolver": dns.resolver(),
                          "relay": {"trusted_networks": ["127.0.0.0/8"]}})
        self.send_from(p, "127.0.0.2")
        self.send_from(p, "127.0.0.2")
        self.assertEqual(self.names(p, 2), ["good.rdns.test"] * 2)
        self.assertEqual(self.queries(dns, (2, 2)), (2, 2))

    def test_short_ttl_runs_out(self):
        dns = self.counting_dnsmasq(1)
        p = self.postern({"resolver": dns.resolver(),
                          "relay": {"trusted_networks": ["127.0.0.0/8"]}})
        self.send_from(p, "127.0.0.2")
        self.assertEqual(self.queries(dns, (1, 1)), (1, 1))
        time.sleep(1.5)
        self.send_from(p, "127.0.0.2")
        self.assertEqual(self.names(p, 2), ["good.rdns.test"] * 2)
        self.assertEqual(self.queries(dns, (2, 2)), (2, 2))

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
