"""test_rel_hostile.py - hostile clients all at once while normal clients
keep their latency.

The crowd runs in a process of its own (loadgen.py hostile, asyncio):
  slowloris   connect and drip a byte of a command (or, for half of them,
              of a message text after DATA) every DRIP seconds
  non-readers pipeline EHLO/NOOP/RSET batches and never read a reply, with
              a small receive buffer (issue 10 defect 5)
  guessers    AUTH PLAIN with wrong passwords, over and over, on a
              plaintext-AUTH listener (each guess costs a yescrypt hash:
              the failure limits are set out of reach)
each kind from addresses of its own (127.0.2-4.x), spread so that the
per-address session limit lets them in. It reports its own event-loop lag,
which shows it kept up.

Meanwhile 20 normal clients (threads of this process, trusted 127.0.0.1)
each run whole transactions one after another: connect, EHLO, MAIL, RCPT,
DATA, a 2 KiB message, QUIT. Each transaction's time is recorded, before
the crowd (baseline) and under it; p50 and p99 are printed, postern's RSS
too. The assertions are generous on purpose (a shared 2-core machine
under ctest -j2): every normal transaction must succeed, and p99 under the
crowd must stay below 2 s - a gateway whose loop stalls behind the crowd
(a blocking write, crypt on the loop, replies piling up) misses it by far.

Sizes: CI 100 slowloris, 100 non-readers, 20 guessers for 15 s;
POSTERN_RELIABILITY=full 200, 200, 20 for 60 s (docs/RELIABILITY.md);
POSTERN_REL_HOSTILE_SLOWLORIS, _NONREADERS, _GUESSERS, _SECONDS set one.
"""

import json
import os
import subprocess
import sys
import threading
import time
import unittest

import harness
import loadgen
from harness import dot_stuff, message
from test_auth import crypt_hash

NORMAL = 20


class HostileTest(harness.PosternTestCase):

    def setUp(self):
        super().setUp()
        pw = os.path.join(self.tmp, "passwd")
        with open(pw, "w") as f:
            f.write("alice:%s\n" % crypt_hash("alice-pw", "$y$"))
        os.chmod(pw, 0o640)
        self.auth_port = harness.free_port()
        self.p = self.postern({
            "logging": {"level": "info"},
            "auth": {"password_file": pw, "max_failures_per_ip": 1000000,
                     "max_failures_per_login": 1000000},
            "listeners": [
                {"address": "127.0.0.1", "port": harness.free_port(),
                 "auth": False},
                {"address": "127.0.0.1", "port": self.auth_port,
                 "auth_plaintext": True}]})

    def normal_run(self, seconds, stop_extra=None):
        """NORMAL threads of transactions for `seconds`: (latencies,
        failures)."""
        lat, fails = [], []
        lock = threading.Lock()
        stop_at = time.monotonic() + seconds
        body = ("normal text line\r\n" * 120)

        def client(k):
            i = 0
            while time.monotonic() < stop_at:
                i += 1
                t0 = time.monotonic()
                try:
                    c = self.p.client(timeout=30)
                    c.start()
                    r = c.transaction("s@x.test", ["r@x.test"],
                                      message(subject="n%d.%d" % (k, i),
                                              body=body))
                    harness.check_reply(r, 250)
                    c.quit()
                except (OSError, AssertionError,
                        harness.ConnectionClosed) as e:
                    with lock:
                        fails.append(repr(e))
                    continue
                with lock:
                    lat.append(time.monotonic() - t0)
        threads = [threading.Thread(target=client, args=(k,))
                   for k in range(NORMAL)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 120)
        return lat, fails

    def crowd(self, slowloris, nonreaders, guessers, name):
        """Run the crowd with the normal clients; print the figures;
        assert what any gateway that keeps serving must meet."""
        seconds = loadgen.size("hostile_seconds", 15, 60)
        loadgen.raise_nofile(4 * (slowloris + nonreaders) + 1024)
        before = loadgen.machine(self.tmp)
        base, base_fails = self.normal_run(3)
        rss0 = loadgen.proc_kib(self.p.pid, "VmRSS")

        cfg = {"host": self.p.host, "port": self.p.listen_port,
               "auth_port": self.auth_port, "auth_user": "alice",
               "seconds": seconds, "drip": 1.0,
               "slowloris": slowloris, "nonreaders": nonreaders,
               "guessers": guessers,
               "loris_sources": ["127.0.2.%d" % i for i in range(1, 9)],
               "nonreader_sources": ["127.0.3.%d" % i for i in range(1, 9)],
               "guesser_sources": ["127.0.4.%d" % i for i in range(1, 5)]}
        out_path = os.path.join(self.tmp, "crowd.out")
        with open(out_path, "wb") as out:
            crowd = subprocess.Popen(
                [sys.executable, os.path.join(os.path.dirname(
                    os.path.abspath(__file__)), "loadgen.py"), "hostile",
                 json.dumps(cfg)], stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        harness._register_proc(crowd)
        self.addCleanup(harness._kill_proc, crowd)
        settle = min(3.0, seconds / 4)
        time.sleep(settle)                  # the crowd is in place
        peak = {"rss": 0}
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak["rss"] = max(peak["rss"],
                                  loadgen.proc_kib(self.p.pid, "VmRSS"))
                stop.wait(0.2)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        lat, fails = self.normal_run(seconds - settle - 1)
        stop.set()
        sampler.join(5)
        try:
            crowd.wait(seconds + 60)
        except subprocess.TimeoutExpired:
            self.fail("the crowd did not finish")
        with open(out_path) as f:
            text = f.read()
        try:
            st = json.loads(text.strip().splitlines()[-1])
        except (ValueError, IndexError):
            self.fail("no report from the crowd: %s" % text[-2000:])
        after = loadgen.machine(self.tmp)
        p50, p99 = loadgen.percentile(lat, .5), loadgen.percentile(lat, .99)
        b50, b99 = loadgen.percentile(base, .5), loadgen.percentile(base, .99)
        loadgen.figure(
            name, slowloris=slowloris, nonreaders=nonreaders,
            guessers=guessers, seconds=seconds, normal_clients=NORMAL,
            base_n=len(base), base_p50_ms="%.1f" % (b50 * 1e3),
            base_p99_ms="%.1f" % (b99 * 1e3), n=len(lat),
            p50_ms="%.1f" % (p50 * 1e3), p99_ms="%.1f" % (p99 * 1e3),
            max_ms="%.1f" % (max(lat or [0]) * 1e3), failed=len(fails),
            rss_before_mib="%.1f" % (rss0 / 1024),
            rss_peak_mib="%.1f" % (peak["rss"] / 1024),
            load1_before=before["load1"], load1_after=after["load1"],
            fsync_ms=before["fsync_ms"])
        print("# crowd: %s" % json.dumps(st, sort_keys=True))
        self.assertEqual(base_fails, [])
        self.assertEqual(fails, [], "normal transactions failed")
        # the crowd was there: connected, dripping, guessing, not reading
        self.assertGreaterEqual(st.get("loris_connected", 0), slowloris)
        self.assertGreaterEqual(st.get("nonreader_connected", 0),
                                nonreaders)
        if guessers:
            self.assertGreater(sum(st["guess_replies"].values()), guessers)
        # and it kept to its own schedule (a loop lagging by a second
        # would not be the crowd described)
        self.assertLess(st["lag_p99_ms"], 500, st)
        # Normal clients went on: each finished several transactions
        # (a gateway stalled behind the crowd lets each finish about one,
        # when the crowd leaves), and p50/p99 stay within a generous
        # bound, relative to the baseline on this machine at this moment.
        self.assertGreaterEqual(len(lat), 5 * NORMAL)
        self.assertLess(p50, max(1.0, 5 * b50), (p50, b50))
        self.assertLess(p99, max(3.0, 10 * b99), (p99, b99))
        # a sanity bound on memory, not a measure (postern's own tests of
        # issue 10 defect 5 measure the non-readers' memory)
        self.assertLess(peak["rss"] - rss0,
                        512 * (slowloris + nonreaders + guessers) + 65536)

    def test_slowloris_and_guessers(self):
        """Everything but the non-readers."""
        self.crowd(loadgen.size("hostile_slowloris", 100, 200), 0,
                   loadgen.size("hostile_guessers", 20, 20),
                   "hostile_no_nonreaders")

    def test_crowd(self):
        """The whole crowd. Before issue 10 defect 5 was fixed
        (gateway/smtp.c) a non-reader's 64 KiB batch of commands was
        answered in full in one read callback, so 100 of them kept the
        loop busy and a normal transaction waited for the crowd to leave
        (measured: p50 11-15 s, one transaction per client, RSS +100 MiB)."""
        self.crowd(loadgen.size("hostile_slowloris", 100, 200),
                   loadgen.size("hostile_nonreaders", 100, 200),
                   loadgen.size("hostile_guessers", 20, 20), "hostile")

if __name__ == "__main__":
    unittest.main()
