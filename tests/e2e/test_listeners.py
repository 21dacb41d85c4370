"""Listeners on IPv4, IPv6 and IPv4-mapped IPv6 addresses, and the client
address as policy, logs and Received see it: an IPv4 client reaching an
IPv6 socket is normalised to plain IPv4 (so 127.0.0.1/32 trusts it); the
accept backlog is the session limit."""
import subprocess
import unittest

import harness
from harness import PosternTestCase, message, queue_id


class MappedListener(PosternTestCase):

    def test_ipv4_client_on_mapped_listener_is_ipv4(self):
        port = harness.free_port()
        p = self.postern({"listeners": [
            {"address": "::ffff:127.0.0.1", "port": port}]})
        with p.client(host="127.0.0.1", port=port) as c:
            c.greeting()
            c.ehlo("mapped.test")
            # trusted only as 127.0.0.1/32: relaying works only if the
            # address was normalised from ::ffff:127.0.0.1
            c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
            c.cmd("RCPT TO:<b@elsewhere.example>", 250, "2.1.5")
            c.cmd("DATA", 354)
            c.send(message(subject="mapped") + b".\r\n")
            c.expect(250, "2.0.0")
            c.quit()
        [m] = p.wait_for_delivered(1)
        self.assertIn("[127.0.0.1])", m.received)
        self.assertNotIn("IPv6:", m.received)
        p.wait_for_log(r"event=connect ip=127\.0\.0\.1 ")

    def test_ipv6_client_is_not_trusted_by_ipv4_networks(self):
        harness.require_ipv6(self)
        port = harness.free_port("::1")
        p = self.postern({"listeners": [{"address": "::1", "port": port}]})
        with p.client(host="::1", port=port) as c:
            c.greeting()
            c.ehlo("v6.test")
            c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
            c.cmd("RCPT TO:<b@elsewhere.example>", 554, "5.7.1")
            c.quit()
        p.wait_for_log(r"event=connect ip=::1 ")


class Backlog(PosternTestCase):

    def test_accept_queue_holds_a_burst_of_the_session_limit(self):
        # the listening socket's backlog (ss shows it as a listener's
        # Send-Q) is limits.sessions, within the kernel's somaxconn: a
        # burst of that many connections waits to be accepted instead of
        # having SYNs dropped (a 1 s retransmission each)
        with open("/proc/sys/net/core/somaxconn") as f:
            somaxconn = int(f.read())
        want = min(3000, somaxconn)
        p = self.postern({"limits": {"sessions": 3000}})
        out = subprocess.run(
            ["ss", "-ltnH", "( sport = :%d )" % p.listen_port],
            capture_output=True, text=True, check=True, timeout=20).stdout
        self.assertEqual([int(l.split()[2]) for l in out.splitlines()],
                         [want], out)


if __name__ == "__main__":
    unittest.main()
