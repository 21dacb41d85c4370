"""Issue 2, SMTP front: session lifecycles. The event log (one line per
event, sess= then msg= once the queue ID exists), clients that vanish at
every stage while others send, and a graceful stop (SIGTERM) with sessions
open: exit 0, nothing half-received left in the spool or delivered."""

import random
import re
import socket
import struct
import threading
import time
import unittest

from harness import PosternTestCase, message, queue_id

LINE_RE = re.compile(
    r"^\S+ postern\[(\d+)\]: (error|warn|info|debug) (.*)$")
PAIR_RE = re.compile(r'([a-z_0-9]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)(?: |$)')


def pairs(rest):
    """The key=value pairs of a log line; asserts the whole text is made
    of them (values bare or double-quoted with escapes)."""
    out = []
    pos = 0
    while pos < len(rest):
        m = PAIR_RE.match(rest, pos)
        if not m:
            raise AssertionError("not key=value at %d: %r" % (pos, rest))
        out.append((m.group(1), m.group(2)))
        pos = m.end()
    return out


class LogTest(PosternTestCase):
    start_postern = True

    def test_session_events(self):
        with self.p.session("log.example") as c:
            qid = queue_id(c.transaction("s@example.org", ["r@example.net"],
                                         message()))
            c.quit()
        self.p.wait_for_maildir(1)
        self.p.wait_for_log(r"event=disconnect")
        lines = self.p.log().decode("utf-8", "replace").splitlines()
        events = []
        sess = None
        for line in lines:
            if line.startswith("=== harness"):
                continue
            m = LINE_RE.match(line)
            self.assertIsNotNone(m, "log line format: %r" % line)
            self.assertEqual(int(m.group(1)), self.p.pid)
            rest = m.group(3)
            ms = re.match(r"sess=([0-9a-f]{16}) (?:msg=([0-9A-Fa-f]{16}) )?"
                          r"event=(\w+)", rest)
            if not ms:
                continue
            if sess is None:
                sess = ms.group(1)
            if ms.group(1) != sess:
                continue
            events.append((ms.group(3), ms.group(2)))
            keys = [k for k, _ in pairs(rest)]
            self.assertEqual(keys.count("event"), 1, line)
        names = [e for e, _ in events]
        for e in ("connect", "helo", "mail", "rcpt", "data", "disconnect"):
            self.assertIn(e, names)
        order = [names.index(e) for e in ("connect", "helo", "mail", "rcpt",
                                          "data", "disconnect")]
        self.assertEqual(order, sorted(order), names)
        # msg= appears once the queue ID exists (from DATA on), and is
        # the ID given to the client
        msgs = {q for e, q in events if q}
        self.assertEqual(msgs, {qid})
        self.assertEqual([q for e, q in events if e in ("connect", "helo",
                                                        "mail", "rcpt")],
                         [None] * 4)

    def test_client_text_quoted(self):
        """Client text cannot forge a key=value pair or a line."""
        with self.p.session("evil\x01event=forged") as c:
            c.cmd('MAIL FROM:<"x event=forged"@example.org>', 250)
            c.cmd("RCPT TO:<y@example.net> FORGED=x event=forged", 555)
        self.p.wait_for_log(r"event=disconnect")
        log = self.p.log().decode("utf-8", "replace")
        self.assertNotIn("\x01", log)
        self.assertIn("forged", log)            # it was logged, quoted
        for line in log.splitlines():
            m = LINE_RE.match(line)
            if not m:
                continue
            keys = [k for k, _ in pairs(m.group(3))]
            self.assertLessEqual(keys.count("event"), 1, line)


class AbortStormTest(PosternTestCase):
    start_postern = True
    GOOD = 20
    BAD = 30

    def test_vanishing_clients_leave_nothing(self):
        """Clients reset the connection at every stage (after the
        greeting, mid-command, after RCPT, mid-DATA, mid-BDAT) while
        others send whole messages; every good message is delivered once,
        no partial one, nothing stays in incoming/, and postern stops
        cleanly (under ASan: no leak)."""
        rnd = random.Random(2)
        errors = []
        qids = []
        lock = threading.Lock()

        def rst(c):
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                              struct.pack("ii", 1, 0))
            c.close()

        def bad(n, stage):
            try:
                c = self.p.client(timeout=20)
                c.greeting()
                if stage == 0:
                    return rst(c)
                c.send(b"EHLO bad%d.example\r\nMAIL FROM:<x@exa" % n)
                if stage == 1:
                    return rst(c)
                c.send(b"mple.org>\r\nRCPT TO:<y@example.net>\r\n")
                c.replies(3)
                if stage == 2:
                    return rst(c)
                if stage == 3:
                    c.cmd("DATA", 354)
                    c.send(b"Subject: partial\r\n\r\n" +
                           b"p" * rnd.randrange(1, 200000))
                else:
                    c.send(b"BDAT 100\r\nSubject: partial\r\n\r\n" +
                           b"q" * 82 + b"BDAT 5000 LAST\r\n" + b"q" * 999)
                    c.expect(250, "2.0.0")
                time.sleep(0.05)
                rst(c)
            except Exception as e:
                with lock:
                    errors.append("bad %d: %r" % (n, e))

        def good(n):
            try:
                with self.p.session("good%d.example" % n, timeout=30) as c:
                    q = queue_id(c.transaction(
                        "s@example.org", ["r%d@example.net" % n],
                        message(subject="good-%d" % n,
                                body="x" * 5000 + "\r\n")))
                    with lock:
                        qids.append(q)
                    c.quit()
            except Exception as e:
                with lock:
                    errors.append("good %d: %r" % (n, e))

        threads = [threading.Thread(target=bad, args=(n, n % 5), daemon=True)
                   for n in range(self.BAD)]
        threads += [threading.Thread(target=good, args=(n,), daemon=True)
                    for n in range(self.GOOD)]
        rnd.shuffle(threads)
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertFalse([t for t in threads if t.is_alive()])
        self.assertEqual(errors, [])
        self.assertEqual(len(set(qids)), self.GOOD)
        files = self.p.wait_for_delivered(self.GOOD, timeout=30, settle=1.0)
        subjects = sorted(re.search(rb"Subject: (\S+)", f.body).group(1)
                          for f in files)
        self.assertEqual(subjects, sorted(b"good-%d" % n
                                          for n in range(self.GOOD)))
        deadline = time.monotonic() + 5
        while self.p.spool_files("incoming") and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.p.spool_files("incoming"), [])
        with self.p.session() as c:                    # still serving
            c.cmd("NOOP", 250, "2.0.0")
        self.assertEqual(self.p.stop(), 0)


def peak_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM for %d" % pid)


class StreamingMemoryTest(PosternTestCase):
    """DATA and BDAT stream to the spool: a 20 MB message raises postern's
    peak resident memory by far less than its size."""
    start_postern = True
    postern_overrides = {"logging": {"level": "info"}}

    def test_big_messages_bounded_memory(self):
        line = b"m" * 998 + b"\r\n"
        body = b"Subject: big\r\n\r\n" + line * 20000       # 20 MB
        with self.p.session() as c:
            queue_id(c.transaction("a@example.org", ["b@example.net"],
                                   body))
            before_bdat = peak_rss_kb(self.p.pid)
            c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
            c.cmd("RCPT TO:<c@example.net>", 250, "2.1.5")
            chunk = line * 1000
            c.send(b"BDAT %d\r\n" % len(body[:16]) + body[:16])
            for _ in range(20):
                c.send(b"BDAT %d\r\n" % len(chunk) + chunk)
            c.send(b"BDAT 0 LAST\r\n")
            rs = c.replies(22)
            self.assertEqual([r.code for r in rs], [250] * 22)
            queue_id(rs[-1])
        peak = peak_rss_kb(self.p.pid)
        files = self.p.wait_for_delivered(2, timeout=60)
        for f in files:
            self.assertEqual(len(f.body), len(body))
            self.assertTrue(f.body == body)
        # 20 MB went through twice; allow 8 MB of growth over the
        # state after the first message and 16 MB over a fresh start
        self.assertLess(peak - before_bdat, 8 * 1024, (before_bdat, peak))
        self.assertLess(peak, self.start_rss + 16 * 1024,
                        (self.start_rss, peak))

    def setUp(self):
        super().setUp()
        self.start_rss = peak_rss_kb(self.p.pid)


class GracefulStopTest(PosternTestCase):
    start_postern = True
    # a transaction that never ends holds the drain until its timeout
    # (test_drain.py tests the drain itself)
    postern_overrides = {"limits": {"drain_timeout": 1}}

    def test_sigterm_with_open_sessions(self):
        idle = self.p.session("idle.example")
        busy = self.p.session("busy.example")
        busy.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
        busy.cmd("RCPT TO:<b@example.net>", 250, "2.1.5")
        busy.cmd("DATA", 354)
        # larger than the spool keeps in memory: a file in incoming/
        busy.send(b"Subject: half\r\n\r\n" + (b"h" * 998 + b"\r\n") * 200)
        deadline = time.monotonic() + 30
        while not self.p.spool_files("incoming") and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertTrue(self.p.spool_files("incoming"))
        self.assertEqual(self.p.stop(), 0)
        # the 1 s drain ended it, not the busy client (which never ends)
        self.assertIn(b"event=stopping reason=drain_timeout", self.p.log())
        # the idle client is told (421) and disconnected
        r = idle.reply()
        self.assertEqual(r.code, 421, r.raw)
        self.assertTrue(idle.closed())
        self.assertTrue(busy.closed())
        idle.close()
        busy.close()
        self.assertEqual(self.p.spool_files("incoming"), [])
        # nothing half-received comes back after a restart
        self.p.start()
        time.sleep(1.0)
        self.assertEqual(self.p.maildir_count(), 0)
        with self.p.session() as c:
            queue_id(c.transaction("a@example.org", ["b@example.net"],
                                   message(subject="after restart")))
        self.assertEqual(len(self.p.wait_for_maildir(1, settle=0.3)), 1)


if __name__ == "__main__":
    unittest.main()
