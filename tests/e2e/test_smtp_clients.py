"""Issue 2, SMTP front: real clients and listeners. swaks, an IPv6
listener on ::1 (alone and next to 127.0.0.1), many concurrent clients each
sending several messages, every one delivered exactly once."""

import re
import shutil
import subprocess
import threading
import time
import unittest

from harness import (PosternTestCase, free_port_pair, require_ipv6,
                     message, queue_id)


class SwaksTest(PosternTestCase):
    start_postern = True

    def swaks(self, *args):
        exe = shutil.which("swaks")
        if not exe:
            self.fail("swaks is not installed (tools/setup installs it)")
        cmd = [exe, "--server", self.p.host, "--port", str(self.p.port),
               "--from", "swaks@example.org", "--to", "rcpt@example.net",
               "--helo", "swaks.example", "--timeout", "10"] + list(args)
        r = subprocess.run(cmd, capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout.decode(errors="replace")
                         + r.stderr.decode(errors="replace"))
        return r.stdout.decode(errors="replace")

    def test_swaks_sends_a_message(self):
        out = self.swaks("--header", "Subject: from swaks",
                         "--body", "Hello from swaks.")
        self.assertRegex(out, r"<-  250 2\.0\.0 Ok: queued as [0-9A-Fa-f]{16}")
        self.assertIn("<-  221 2.0.0", out)
        d = self.p.wait_for_delivered(1)[0]
        self.assertEqual(d.return_path, "<swaks@example.org>")
        self.assertEqual(d.delivered_to.strip("<>"), "rcpt@example.net")
        self.assertIn("from swaks.example", d.received)
        self.assertIn(b"Subject: from swaks\r\n", d.body)
        self.assertIn(b"Hello from swaks.", d.body)

    def test_swaks_pipelining(self):
        out = self.swaks("--pipeline", "--header", "Subject: piped swaks")
        self.assertIn("queued as", out)
        d = self.p.wait_for_delivered(1)[0]
        self.assertIn(b"Subject: piped swaks", d.body)


class Ipv6Test(PosternTestCase):
    def setUp(self):
        super().setUp()
        require_ipv6(self)

    def test_ipv6_only_listener(self):
        port = free_port_pair()
        p = self.postern({
            "listeners": [{"address": "::1", "port": port}],
            "relay": {"trusted_networks": ["127.0.0.1/32", "::1/128"]}})
        self.assertEqual(p.host, "::1")
        with p.session() as c:
            queue_id(c.transaction("a@example.org", ["b@example.net"],
                                   message(subject="v6")))
        d = p.wait_for_delivered(1)[0]
        self.assertRegex(d.received, r"\[(IPv6:)?::1\]")
        self.assertIn(b"Subject: v6", d.body)

    def test_ipv4_and_ipv6_listeners(self):
        port = free_port_pair()
        p = self.postern({
            "listeners": [{"address": "127.0.0.1", "port": port},
                          {"address": "::1", "port": port}],
            "relay": {"trusted_networks": ["127.0.0.1/32", "::1/128"]}})
        for host in ("127.0.0.1", "::1"):
            with p.session(host=host, port=port) as c:
                queue_id(c.transaction("a@example.org", ["b@example.net"],
                                       message(subject="via " + host)))
        files = p.wait_for_delivered(2)
        ips = sorted(re.search(r"\[([^\]]+)\]\)", f.received).group(1)
                     for f in files)
        self.assertEqual(len(ips), 2)
        self.assertEqual(ips[0], "127.0.0.1")
        self.assertRegex(ips[1], r"^(IPv6:)?::1$")
        self.assertRegex(p.log().decode(errors="replace"),
                         r"event=listening address=\[?::1\]? port=%d" % port)


class ConcurrencyTest(PosternTestCase):
    start_postern = True
    CLIENTS = 50
    PER_CLIENT = 5

    def test_many_clients_each_delivered_once(self):
        errors = []
        qids = []
        lock = threading.Lock()
        start = threading.Barrier(self.CLIENTS)

        def client(n):
            try:
                start.wait(20)
                with self.p.session("c%d.example" % n, timeout=30) as c:
                    for k in range(self.PER_CLIENT):
                        r = c.transaction(
                            "s%d@example.org" % n, ["r%d@example.net" % n],
                            message(subject="m-%d-%d" % (n, k),
                                    body="client %d message %d\r\n"
                                    % (n, k)))
                        q = queue_id(r)
                        with lock:
                            qids.append(q)
                    c.quit()
            except Exception as e:
                with lock:
                    errors.append("client %d: %r" % (n, e))

        t0 = time.monotonic()
        threads = [threading.Thread(target=client, args=(n,), daemon=True)
                   for n in range(self.CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertFalse([t for t in threads if t.is_alive()],
                         "clients still running after 60 s")
        elapsed = time.monotonic() - t0
        self.assertEqual(errors, [])
        total = self.CLIENTS * self.PER_CLIENT
        self.assertEqual(len(qids), total)
        self.assertEqual(len(set(qids)), total, "queue ids not unique")
        files = self.p.wait_for_delivered(total, timeout=60, settle=0.5)
        self.assertEqual(len(files), total)
        subjects = sorted(re.search(rb"Subject: (m-\d+-\d+)", f.body)
                          .group(1).decode() for f in files)
        expected = sorted("m-%d-%d" % (n, k) for n in range(self.CLIENTS)
                          for k in range(self.PER_CLIENT))
        self.assertEqual(subjects, expected)
        for f in files:
            n = re.search(rb"Subject: m-(\d+)-", f.body).group(1).decode()
            self.assertEqual(f.delivered_to.strip("<>"),
                             "r%s@example.net" % n)
            self.assertEqual(f.return_path, "<s%s@example.org>" % n)
        print("\n%d messages from %d clients accepted in %.2f s"
              % (total, self.CLIENTS, elapsed))


if __name__ == "__main__":
    unittest.main()
