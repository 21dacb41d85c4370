"""test_spool_crash.py - kill -9 the gateway at several points, restart it,
and check that every message answered 250 is delivered.

Points: in the middle of DATA; just after a 250 reached the client; while
the queue is delivering (a backlog in the log's segments). Each round sends
a stream of uniquely numbered messages over several connections, kills
postern by PID with SIGKILL at the chosen point, and restarts it on the
same spool.
At the end the queue is drained and the maildir is read: "lost" counts
messages that got a 250 and never arrived (must be 0), "duplicated" counts
extra copies (possible only in the documented window between a delivery's
sync and the recording of its state), "unacknowledged" counts messages
delivered although the client never read their 250 (committed just before
the kill). The counts are printed. And one message to two routes, killed
while the fast route has taken its copy and the slow one holds its answer:
the fast route must get it once.

A kill -9 leaves the page cache intact, so this test checks the recovery
logic (incomplete files removed, committed groups and files scheduled,
finished ones not delivered again), not the syncs:
test_spool_durability.py checks those. What is queued is asked of the
gateway (the control socket), since small messages are groups in shared
segment files, not files of their own.
"""

import os
import re
import threading
import time
import unittest

import harness

SUBJECT_RE = re.compile(rb"^Subject: (crash-\d+-\d+)\r$", re.M)
QUEUED_RE = re.compile(r"queued as ([0-9A-F]{16})")


class Sender:
    """Sends numbered messages over `conns` sessions until stopped or the
    connection fails; records the subjects that got a 250."""

    def __init__(self, p, tag, conns=4, limit=400, on_ack=None):
        self.p, self.tag, self.conns, self.limit = p, tag, conns, limit
        self.acked, self.sent = set(), set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.on_ack = on_ack
        self.n = 0
        self.threads = [threading.Thread(target=self.run) for _ in
                        range(conns)]

    def next_subject(self):
        with self.lock:
            if self.n >= self.limit:
                return None
            self.n += 1
            return "crash-%d-%d" % (self.tag, self.n)

    def run(self):
        try:
            c = self.p.session(timeout=10)
        except OSError:
            return
        try:
            while not self.stop.is_set():
                subj = self.next_subject()
                if subj is None:
                    break
                c.cmd("MAIL FROM:<crash@example.org>", 250)
                c.cmd("RCPT TO:<a@example.net>", 250)
                c.cmd("RCPT TO:<b@example.net>", 250)
                c.cmd("DATA", 354)
                with self.lock:
                    self.sent.add(subj)
                c.send(harness.message(subject=subj, body="x" * 700 + "\r\n")
                       + b".\r\n")
                r = c.reply()
                if r.code == 250:
                    with self.lock:
                        self.acked.add(subj)
                        n = len(self.acked)
                    if self.on_ack:
                        self.on_ack(n)
        except (OSError, harness.ConnectionClosed, AssertionError):
            pass            # the gateway was killed under us
        finally:
            c.close()

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(30)


class SpoolCrash(harness.PosternTestCase):

    def delivered(self, p):
        """subject -> copies per recipient, from every maildir file."""
        got = {}
        for path in p.maildir_paths():
            with open(path, "rb") as f:
                raw = f.read()
            d = harness.Delivered(raw)
            m = SUBJECT_RE.search(d.body)
            self.assertIsNotNone(m, "maildir file without a subject: %s"
                                 % path)
            key = (m.group(1).decode(), d.delivered_to)
            got[key] = got.get(key, 0) + 1
        return got

    def drain(self, p, timeout=30):
        p.wait_queue_empty(timeout)
        self.assertEqual(p.spool_files("active"), [])
        self.assertEqual(p.spool_files("incoming"), [])

    def test_kill9_mid_data(self):
        p = self.postern()
        c = p.session()
        c.cmd("MAIL FROM:<crash@example.org>", 250)
        c.cmd("RCPT TO:<a@example.net>", 250)
        c.cmd("DATA", 354)
        c.send(harness.message(subject="crash-0-1", body="y" * 300000))
        deadline = time.monotonic() + 10
        while not p.spool_files("incoming"):
            self.assertLess(time.monotonic(), deadline, "no incoming file")
            time.sleep(0.01)
        p.kill9()
        c.close()
        self.assertEqual(len(p.spool_files("incoming")), 1)
        p.start()
        p.wait_for_log(r"event=spool_recover dir=incoming action=removed")
        self.assertEqual(p.spool_files("incoming"), [])
        self.assertEqual(p.spool_files("active"), [])
        self.assertEqual(p.queue_list(), [])
        time.sleep(0.3)
        self.assertEqual(p.maildir_count(), 0)

    def test_kill9_after_250_and_during_delivery(self):
        p = self.postern()
        acked, sent = set(), set()
        points = []

        # 1: just after the 5th 250 reached a client
        fired = threading.Event()

        def after_ack(n):
            if n >= 5 and not fired.is_set():
                fired.set()
                p.kill9()
        s = Sender(p, 1, on_ack=after_ack).start()
        fired.wait(20)
        s.join()
        self.assertTrue(fired.is_set(), "no 250 before the kill")
        points.append(("after 250", len(s.acked)))
        acked |= s.acked
        sent |= s.sent

        # 2: during delivery: a backlog queued and copies arriving
        p.start()
        s = Sender(p, 2, conns=8, limit=600).start()
        deadline = time.monotonic() + 20
        queued = 0
        while time.monotonic() < deadline:
            if len(s.acked) >= 150:
                queued = len(p.queue_list())
                if queued:
                    break
            time.sleep(0.005)
        p.kill9()
        s.join()
        points.append(("during delivery (%d queued)" % queued,
                       len(s.acked)))
        acked |= s.acked
        sent |= s.sent

        # 3 and 4: right after a restart (recovery then delivery running),
        # at two different moments
        for tag, delay in ((3, 0.05), (4, 0.25)):
            p.start()
            s = Sender(p, tag, conns=6, limit=300).start()
            time.sleep(delay)
            p.kill9()
            s.join()
            points.append(("%.2f s after restart" % delay, len(s.acked)))
            acked |= s.acked
            sent |= s.sent

        p.start()
        self.drain(p)
        time.sleep(0.3)
        got = self.delivered(p)
        lost, dup, unacked = [], 0, set()
        for subj in sorted(acked):
            for rcpt in ("a@example.net", "b@example.net"):
                if got.get((subj, rcpt), 0) == 0:
                    lost.append((subj, rcpt))
        for (subj, rcpt), n in got.items():
            dup += n - 1
            if subj not in acked:
                unacked.add(subj)
                self.assertIn(subj, sent, "delivered a message never sent")
        print("\n# kill -9 points: %s" % "; ".join(
            "%s: %d acked" % pt for pt in points))
        print("# acknowledged %d messages (x2 recipients), lost %d, "
              "duplicated %d, delivered without a 250 %d"
              % (len(acked), len(lost), dup, len(unacked)))
        self.assertEqual(lost, [], "250'd messages lost after kill -9")
        self.assertGreater(len(acked), 100)

    def kill9_while_a_route_is_slow(self, size):
        """One message to two routes: the fast one takes its copy, the
        slow one holds its answer to the end of data. The fast route's
        copy is recorded when its part is done, before the slow one
        answers; postern is killed then. After the restart only the slow
        route gets the message: the fast one must not get it twice
        (before, both parts were recorded when the last one ended, and a
        kill meanwhile delivered the fast one's copy again)."""
        fast = self.downstream()
        slow = self.downstream(script={"DATA_END": ["@hang"]})
        p = self.postern({"delivery": {
            "retry_min": 1, "retry_max": 2, "routes": [
                {"domain": "fast.test", "route": fast.route()},
                {"domain": "slow.test", "route": slow.route()}]}})
        c = p.session()
        r = c.transaction("crash@example.org",
                          ["a@fast.test", "b@slow.test"],
                          harness.message(subject="two-routes",
                                          body=("z" * 70 + "\r\n")
                                          * (size // 72)))
        self.assertEqual(r.code, 250, r)
        c.close()
        fast.wait_for_transactions(1, timeout=30, accepted_only=True)
        slow.wait_for_transactions(1, timeout=30)
        # the line follows the record; without it (a build that records
        # at the attempt's end) the kill comes after the wait and the
        # restart shows the duplicate
        try:
            p.wait_for_log(r'event=delivered to="a@fast.test"', timeout=30)
        except AssertionError:
            pass
        self.assertFalse(slow.accepted, "the slow route answered")
        p.kill9()
        p.start()
        slow.wait_for_transactions(1, timeout=30, accepted_only=True)
        p.wait_queue_empty(30)
        time.sleep(0.3)
        self.assertEqual(len(slow.accepted), 1)
        self.assertEqual(len(fast.accepted), 1,
                         "the fast route got the message %d times"
                         % len(fast.accepted))
        self.assertEqual(fast.accepted[0].rcpts, ["a@fast.test"])
        self.assertEqual(slow.accepted[0].rcpts, ["b@slow.test"])

    def test_kill9_while_a_route_is_slow_log(self):
        self.kill9_while_a_route_is_slow(1000)      # a group in the log

    def test_kill9_while_a_route_is_slow_file(self):
        self.kill9_while_a_route_is_slow(300000)    # a message file


if __name__ == "__main__":
    unittest.main()
