"""What a client sends behind a message while its spool commit is in flight.

The commit is held by tests/e2e/sync_gate.c (LD_PRELOAD): while the gate
file exists the spool's syncs wait, so the 250 of the message cannot be
given. Whatever the client pipelined behind the final dot or BDAT LAST must
be answered only after it, in order; a client that floods meanwhile is
bounded by postern's input buffer (its sends stall); a client that
half-closes behind its message still gets every reply due; other sessions
are served meanwhile.
"""
import os
import socket
import time

from harness import PosternTestCase, message, queue_id

GATE_LIB = os.environ.get("POSTERN_SYNC_GATE_LIB") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "tests",
    "libsync_gate.so")


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


class CommitPipelineTest(PosternTestCase):

    def setUp(self):
        super().setUp()
        self.assertTrue(os.path.exists(GATE_LIB),
                        "sync_gate library missing: %s" % GATE_LIB)
        self.gate = os.path.join(self.tmp, "sync.gate")
        env = dict(os.environ)
        env["LD_PRELOAD"] = os.path.abspath(GATE_LIB)
        env["POSTERN_SYNC_GATE"] = self.gate
        self.p = self.postern(env=env)

    def hold(self):
        """From now the spool's syncs wait (until release())."""
        open(self.gate, "w").close()
        self.addCleanup(self.release)

    def release(self):
        if os.path.exists(self.gate):
            os.unlink(self.gate)

    def open_data(self, c):
        c.start()
        c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
        c.cmd("RCPT TO:<b@example.net>", 250, "2.1.5")
        c.cmd("DATA", 354)

    def held_commit(self, c):
        """The commit is in flight: no reply comes meanwhile."""
        self.assertEqual(c.pending(0.5), b"",
                         "a reply came while the commit was held")

    def test_dot_pipeline_waits_for_commit(self):
        """Commands behind the final dot: no reply before the commit's 250,
        then every reply in order; the next transaction goes through."""
        self.hold()
        with self.p.client() as c:
            self.open_data(c)
            c.send(message(subject="one") + b"\r\n.\r\n"
                   b"NOOP\r\nRSET\r\nMAIL FROM:<c@example.org>\r\n"
                   b"RCPT TO:<d@example.net>\r\nDATA\r\n")
            self.held_commit(c)
            # another client is served while the commit is held
            with self.p.client() as o:
                o.start()
                o.cmd("NOOP", 250, "2.0.0")
            self.release()
            queue_id(c.reply())
            c.expect(250, "2.0.0")          # NOOP
            c.expect(250, "2.0.0")          # RSET
            c.expect(250, "2.1.0")
            c.expect(250, "2.1.5")
            c.expect(354)
            c.send(message(subject="two") + b"\r\n.\r\nQUIT\r\n")
            queue_id(c.reply())
            c.expect(221, "2.0.0")
            self.assertTrue(c.closed())
        files = self.p.wait_for_delivered(2, settle=0.3)
        subjects = sorted(b"Subject: one" in f.raw for f in files)
        self.assertEqual(subjects, [False, True])

    def test_bdat_last_pipeline_waits_for_commit(self):
        """A whole BDAT transaction and commands behind it in one write:
        MAIL and RCPT are answered at once, BDAT LAST's 250 after the
        commit, then the rest; a dot line inside the chunk is text."""
        chunk = (message(subject="bdat") +
                 b"\r\n.\r\nMAIL FROM:<evil@attacker.example>\r\n")
        self.hold()
        with self.p.client() as c:
            c.start()
            c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
                   b"BDAT %d LAST\r\n" % len(chunk) + chunk +
                   b"NOOP\r\nBDAT 5 LAST\r\nhelloQUIT\r\n")
            c.expect(250, "2.1.0")
            c.expect(250, "2.1.5")
            self.held_commit(c)
            self.release()
            queue_id(c.reply())
            c.expect(250, "2.0.0")          # NOOP
            c.expect(503, "5.5.1")          # BDAT without MAIL
            c.expect(221, "2.0.0")
        files = self.p.wait_for_delivered(1, settle=0.3)
        self.assertEqual(len(files), 1)
        self.assertIn(b"MAIL FROM:<evil@attacker.example>\r\n", files[0].raw)

    def test_flood_during_commit_is_bounded(self):
        """A client that pipelines without end while its commit is held:
        postern reads no more than its input bound (the client's sends
        stall at the kernel's buffers, far below what it offers), its
        memory does not grow with the flood, and the commit's 250 comes
        first once the sync is done."""
        offer = 64 << 20
        self.hold()
        with self.p.client() as c:
            self.open_data(c)
            c.send(message(subject="flood") + b"\r\n.\r\n")
            self.held_commit(c)
            before = rss_kib(self.p.pid)
            c.sock.setblocking(False)
            piece = b"NOOP\r\n" * 10000
            sent, idle_since = 0, time.monotonic()
            deadline = time.monotonic() + 30
            while sent < offer and time.monotonic() < deadline:
                try:
                    sent += c.sock.send(piece)
                    idle_since = time.monotonic()
                except BlockingIOError:
                    if time.monotonic() - idle_since > 1.0:
                        break           # stalled: nothing read any more
                    time.sleep(0.01)
            self.assertLess(sent, 32 << 20,
                            "postern read a flood during its commit")
            grown = rss_kib(self.p.pid) - before
            self.assertLess(grown, 4096, "RSS grew %d KiB" % grown)
            c.sock.setblocking(True)
            self.release()
            queue_id(c.reply())
            for _ in range(3):
                c.expect(250, "2.0.0")      # the first NOOPs, in order
        self.assertEqual(len(self.p.wait_for_delivered(1, settle=0.3)), 1)

    def half_close(self, tail):
        """A message, `tail` and the client's EOF, all while the commit is
        held; returns the client, released."""
        self.hold()
        c = self.p.client()
        self.addCleanup(c.close)
        self.open_data(c)
        c.send(message(subject="half") + b"\r\n.\r\n" + tail)
        c.sock.shutdown(socket.SHUT_WR)
        self.held_commit(c)     # meanwhile postern reads the EOF
        self.release()
        return c

    def test_half_close_behind_quit(self):
        """MAIL... DATA, the message, QUIT, then the client's EOF during
        the commit: the 250 and the 221 still come (a client that gets no
        250 sends the message again)."""
        c = self.half_close(b"QUIT\r\n")
        queue_id(c.reply())
        c.expect(221, "2.0.0")
        self.assertTrue(c.closed())
        self.assertEqual(len(self.p.wait_for_delivered(1, settle=0.3)), 1)

    def test_half_close_behind_commands(self):
        """EOF behind NOOP and a half line: the 250, the NOOP's reply, then
        the close (reason eof)."""
        c = self.half_close(b"NOOP\r\nNO")
        queue_id(c.reply())
        c.expect(250, "2.0.0")
        self.assertTrue(c.closed())
        self.assertEqual(c.buf, b"")
        self.p.wait_for_log(rb'event=disconnect reason="eof"')
        self.assertEqual(len(self.p.wait_for_delivered(1, settle=0.3)), 1)

    def test_half_close_in_next_message(self):
        """EOF in the middle of the next message: the first is queued and
        answered, the second is lost (no 250 for it), as on any EOF."""
        c = self.half_close(b"MAIL FROM:<a@example.org>\r\n"
                            b"RCPT TO:<b@example.net>\r\nDATA\r\n"
                            b"Subject: cut\r\n\r\nno end")
        queue_id(c.reply())
        c.expect(250, "2.1.0")
        c.expect(250, "2.1.5")
        c.expect(354)
        self.assertTrue(c.closed())
        self.assertEqual(c.buf, b"")
        self.p.wait_for_log(rb"event=lost_connection state=data")
        files = self.p.wait_for_delivered(1, settle=0.5)
        self.assertEqual(len(files), 1)
        self.assertNotIn(b"Subject: cut", files[0].raw)
