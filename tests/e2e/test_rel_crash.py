"""test_rel_crash.py - a long run through postern to two real downstreams,
with postern killed by SIGKILL at random moments and restarted each time.

Sixteen sessions send uniquely numbered messages (Message-ID
<crash.N@loadgen.test>), each to two recipients: r@loadgen.test goes to
Postfix's smtp-sink, r@flaky.loadgen.test to a downstream that answers
451 to three messages in ten (so attempts end half done, recipients are
recorded one by one, and retries run). Meanwhile the gateway is killed at
least 20 times: mostly after a random number of further messages (so
mid-DATA, between a commit and its 250, during delivery and its records,
with a backlog), and now and then within 0-300 ms of a restart (while it
recovers its spool, before or just after it is ready). Each time it is
started again on the same spool. At the end the queue drains, and the
copies at each downstream are counted by Message-ID:

  lost        got a 250 and a recipient's copy never arrived: must be 0
  duplicated  extra copies, per downstream (the documented window between
              a next hop's 250 and the spool recording it)
  unacked     arrived although the client never read a 250 (committed
              just before a kill): allowed, counted

Sizes: CI 2,000 messages and 20 kills; POSTERN_RELIABILITY=full 10,000
messages and 30 kills (docs/RELIABILITY.md); bounded in time as well
(POSTERN_REL_CRASH_MESSAGES, _KILLS, _SECONDS set one). The random seed
is printed; POSTERN_REL_SEED=N repeats a run's kill schedule.

test_spool_crash.py kills at four chosen points with a maildir; this one
is the long random run through a real SMTP downstream, and knows nothing
of the spool's files (it only asks `postern queue list`), so it holds for
any spool format.
"""

import collections
import json
import os
import random
import subprocess
import time
import unittest

import harness
import loadgen

FLAKY = "flaky." + loadgen.DOMAIN


class CrashRun(harness.PosternTestCase):

    def queue_count(self, p):
        r = subprocess.run([p.binary, "queue", "-c", p.conf_path, "list",
                            "--json"], capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)["count"]

    def arrivals(self, sink, flaky):
        """Message-ID -> copies, per downstream (the flaky one's accepted
        transactions only)."""
        got_sink, _ = sink.counts()
        got_flaky = collections.Counter()
        for t in flaky.accepted:
            m = loadgen.MSGID_RE.search(t.data)
            got_flaky[m.group(1).decode() if m else None] += 1
        return {"sink": got_sink, "flaky": got_flaky}

    def test_kill9_during_run(self):
        n = loadgen.size("crash_messages", 2000, 10000)
        kills = loadgen.size("crash_kills", 20, 30)
        budget = loadgen.size("crash_seconds", 240, 1200)
        seed = int(os.environ.get("POSTERN_REL_SEED",
                                  random.randrange(1 << 30)))
        rng = random.Random(seed)
        print("\n# seed %d (POSTERN_REL_SEED=%d repeats this run)"
              % (seed, seed), flush=True)
        before = loadgen.machine(self.tmp)
        sink = loadgen.SmtpSink(self.tmp)
        self.addCleanup(sink.stop)
        flip = random.Random(seed + 1)
        flaky = self.downstream(script={
            "DATA_END": lambda *a: ("451 4.3.0 try again"
                                    if flip.random() < 0.3
                                    else "250 2.0.0 Ok")})
        p = self.postern({
            "logging": {"level": "info"},
            "limits": {"sessions_per_ip": 1000},
            "delivery": {"default_route": sink.route, "retry_min": 1,
                         "retry_max": 2, "dead_host_backoff": 1,
                         "routes": [{"domain": FLAKY,
                                     "route": flaky.route()}]}})
        t0 = time.monotonic()
        deadline = t0 + budget
        s = loadgen.Sender(p.host, p.listen_port, "crash", conns=16,
                           limit=n, rcpts=["r@" + loadgen.DOMAIN,
                                           "r@" + FLAKY]).start()
        step = n / (kills + 1)
        points = []
        while len(points) < kills and time.monotonic() < deadline:
            if rng.random() < 0.2 and points:
                # right after a restart: the spool is being recovered
                p.kill9()
                p.start(wait=False)
                time.sleep(rng.uniform(0, 0.3))
                ready = b"event=ready" in p.log()
                p.kill9()
                points.append("recovery (%s)"
                              % ("ready" if ready else "not ready"))
            else:
                goal = len(s.sent) + rng.uniform(0.3, 1.7) * step
                while len(s.sent) < goal and not s.done() and \
                        time.monotonic() < deadline:
                    time.sleep(0.002)
                p.kill9()
                points.append(len(s.sent))
            p.start()
        # the rest of the messages, then the queue drains
        while not s.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        s.stop()
        sending = time.monotonic() - t0
        # every acknowledged message arrives, or the queue stays empty
        deadline_d = time.monotonic() + 60 + n / 50
        empty_since = None
        while time.monotonic() < deadline_d:
            got = self.arrivals(sink, flaky)
            if all(got[r].get(i) for r in got for i in s.acked):
                break
            if self.queue_count(p):
                empty_since = None
            elif empty_since is None:
                empty_since = time.monotonic()
            elif time.monotonic() - empty_since > 3:
                break
            time.sleep(0.3)
        drained = time.monotonic() - t0
        deadline_q = time.monotonic() + 30      # copies nobody waited for
        while self.queue_count(p) and time.monotonic() < deadline_q:
            time.sleep(0.2)
        left = self.queue_count(p)
        time.sleep(0.5)                 # no late copy on its way
        got = self.arrivals(sink, flaky)
        p.stop()

        lost = sorted((r, i) for r in got for i in s.acked
                      if not got[r].get(i))
        dup = {r: sum(c - 1 for c in got[r].values() if c > 1) for r in got}
        seen = set(got["sink"]) | set(got["flaky"])
        unacked = [i for i in seen if i not in s.acked]
        strangers = [i for i in unacked if i not in s.sent]
        after = loadgen.machine(self.tmp)
        loadgen.figure(
            "crash", messages=len(s.sent), acked=len(s.acked),
            kills=len(points), lost=len(lost), duplicated_sink=dup["sink"],
            duplicated_flaky=dup["flaky"], unacked_delivered=len(unacked),
            refused=sum(s.refused.values()),
            flaky_451=sum(1 for t in flaky.transactions if not t.accepted),
            sending_s="%.1f" % sending, drained_s="%.1f" % drained,
            load1_before=before["load1"], load1_after=after["load1"],
            fsync_ms=before["fsync_ms"])
        print("# kill points (messages sent at the kill): %s"
              % ", ".join(str(x) for x in points))
        log = p.log(whole=True)
        self.assertEqual(lost, [], "messages answered 250 never arrived "
                         "(seed %d)" % seed)
        self.assertEqual(strangers, [], "delivered but never sent")
        self.assertNotIn(None, got["sink"], "a copy without our Message-ID")
        self.assertNotIn(None, got["flaky"], "a copy without our Message-ID")
        self.assertEqual(left, 0, "the queue did not drain")
        self.assertNotIn(b"event=spool_corrupt", log)
        self.assertEqual(len(points), kills, "ran out of time after %d "
                         "kills" % len(points))
        # enough traffic that the kills hit a busy gateway
        self.assertGreater(len(s.acked), n // 4)


if __name__ == "__main__":
    unittest.main()
