"""test_drain.py - SIGTERM drains: the listeners close at once (new
connections refused, /readyz 503), idle sessions get 421 4.3.2 and are
closed, a transaction in progress finishes with 250 and is delivered after
the restart, deliveries in flight end (and are recorded) before the exit,
the drain timeout and a second SIGTERM end it at once, and under a stream
of concurrent messages every one that got 250 is delivered after a restart;
the exit status is 0 every time. The service manager hears READY=1 and
STOPPING=1 on $NOTIFY_SOCKET (a datagram socket of the test's own)."""

import os
import signal
import socket
import threading
import time
import unittest

import harness
import prom
from harness import PosternTestCase, dot_stuff, message


def refused(host, port):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((host, port))
        return False
    except ConnectionRefusedError:
        return True
    finally:
        s.close()


def wait_exit(p, timeout):
    """Wait for postern to exit by itself; returns the exit status."""
    code = p.proc.wait(timeout=timeout)
    harness._forget_proc(p.proc)
    p.exit_codes.append(code)
    p.proc = None
    p.check_log_clean()
    return code


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, tmp):
        self.path = os.path.join(tmp, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o777)  # postern may have dropped to its user
        self.got = []

    def wait_for(self, state, timeout=15):
        """The first datagram holding state (e.g. "READY=1"), as a dict."""
        deadline = time.monotonic() + timeout
        for msg in self.got:
            if state in msg:
                return self._dict(msg)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %s on the notify socket; got %r"
                                     % (state, self.got))
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            self.got.append(data)
            if state in data.split("\n"):
                return self._dict(data)

    @staticmethod
    def _dict(msg):
        return dict(l.split("=", 1) for l in msg.split("\n") if "=" in l)

    def close(self):
        self.sock.close()


class Drain(PosternTestCase):

    def start(self, drain_timeout=30, extra=None, env=None):
        self.mport = harness.free_port()
        conf = {"limits": {"drain_timeout": drain_timeout},
                "metrics": {"enabled": True, "port": self.mport}}
        p = self.postern(harness.merge(conf, extra), start=False, env=env)
        p.start()
        return p

    def test_idle_421_listener_closed_transaction_finishes(self):
        ns = NotifySocket(self.tmp)
        self.addCleanup(ns.close)
        env = dict(os.environ, NOTIFY_SOCKET=ns.path)
        p = self.start(env=env)
        self.assertEqual(ns.wait_for("READY=1").get("STATUS"), "serving")
        idle = [p.session() for _ in range(2)]
        busy = p.session()
        busy.cmd("MAIL FROM:<s@example.org>", 250)
        busy.cmd("RCPT TO:<r@example.net>", 250)
        busy.cmd("DATA", 354)
        msg = message(subject="in flight")
        wire = dot_stuff(msg)
        busy.send(wire[:40])

        os.kill(p.pid, signal.SIGTERM)
        self.assertEqual(ns.wait_for("STOPPING=1").get("STATUS"), "draining")
        for c in idle:
            r = c.reply()
            harness.check_reply(r, 421, "4.3.2")
            self.assertTrue(c.closed(5))
        self.assertTrue(refused(p.host, p.listen_port))
        st, _, body = prom.http_get(self.mport, "/readyz")
        self.assertEqual((st, body), (503, "draining\n"))
        # the transaction goes on: its 250, then the 421
        busy.send(wire[40:])
        qid = harness.queue_id(busy.reply())
        harness.check_reply(busy.reply(), 421, "4.3.2")
        self.assertTrue(busy.closed(5))
        self.assertEqual(wait_exit(p, 20), 0)
        p.wait_for_log(r"event=stopping reason=drained")
        # queued while draining (deliveries do not start): delivered now
        p.start()
        [d] = p.wait_for_delivered(1)
        self.assertIn(qid, d.received)
        self.assertEqual(d.body, msg)

    def test_delivery_in_flight_ends_before_exit(self):
        ds = self.downstream(script={"DATA_END": "@delay:2 250 2.0.0 ok"})
        p = self.start(extra={"relay": {"domains": ["relay.test"]},
                              "delivery": {"tls": "none", "routes": [
                                  {"domain": "relay.test",
                                   "route": ds.route()}]}})
        with p.smtp() as s:
            s.sendmail("s@example.org", ["r@relay.test"], message())
        # the text is at the downstream, its reply 2 s away: in flight
        ds.wait_for_transactions(1)
        os.kill(p.pid, signal.SIGTERM)
        self.assertEqual(wait_exit(p, 20), 0)
        log = p.log().decode()
        self.assertIn("event=delivered", log)
        self.assertIn("event=stopping reason=drained", log)
        self.assertEqual(len(ds.transactions), 1)
        # recorded: nothing is delivered twice after a restart
        p.start()
        time.sleep(1.5)
        self.assertEqual(len(ds.transactions), 1)

    def test_timeout_and_second_signal(self):
        for second in (False, True):
            p = self.start(drain_timeout=2 if not second else 600)
            c = p.session()
            c.cmd("MAIL FROM:<s@example.org>", 250)
            c.cmd("RCPT TO:<r@example.net>", 250)
            c.cmd("DATA", 354)
            c.send(b"Subject: never ends\r\n\r\npart")
            t0 = time.monotonic()
            os.kill(p.pid, signal.SIGTERM)
            p.wait_for_log(r"event=draining")
            if second:
                os.kill(p.pid, signal.SIGTERM)
            self.assertEqual(wait_exit(p, 30), 0)
            took = time.monotonic() - t0
            self.assertTrue(c.closed(5))
            log = p.log().decode()
            if second:
                self.assertIn("event=stopping reason=SIGTERM", log)
                self.assertLess(took, 20)
            else:
                self.assertIn("event=stopping reason=drain_timeout", log)
                self.assertGreaterEqual(took, 1.5)
            # nothing was acknowledged, nothing is left behind
            self.assertEqual(p.spool_files("incoming"), [])
            c.close()

    def test_signals_during_the_stop(self):
        # a stream of SIGTERMs, as fast as they can be sent: the first
        # drains, the second stops, the rest arrive while the queue closes
        # and the loop's handles close (libuv gives SIGTERM its default
        # action back then) and must not end the process with the signal
        # (exit 0, the log's last words said); rounds, since the moments
        # that matter are short
        for _ in range(15):
            p = self.start(drain_timeout=5)
            c = p.session()
            c.cmd("MAIL FROM:<s@example.org>", 250)
            deadline = time.monotonic() + 10
            while p.proc.poll() is None and time.monotonic() < deadline:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    break
            self.assertEqual(wait_exit(p, 20), 0)
            self.assertIn(b"event=stopped status=0", p.log())
            c.close()

    def test_nothing_acknowledged_is_lost(self):
        p = self.start(drain_timeout=1)
        acked, stop = [], threading.Event()
        lock = threading.Lock()
        errors = []

        def sender(n):
            for i in range(200):
                if stop.is_set():
                    return
                subject = "m-%d-%d" % (n, i)
                try:
                    c = p.client(timeout=10)
                    c.start()
                    r = c.transaction("s@example.org", ["r@example.net"],
                                      message(subject=subject))
                    if r.code == 250:
                        with lock:
                            acked.append(subject)
                    c.close()
                except (OSError, harness.ConnectionClosed, AssertionError):
                    return          # the gateway went away: expected
                except Exception as e:     # anything else fails the test
                    errors.append(e)
                    return
        threads = [threading.Thread(target=sender, args=(n,))
                   for n in range(8)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(acked) < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGTERM)
        time.sleep(0.2)
        try:
            os.kill(p.pid, signal.SIGTERM)   # and at once
        except ProcessLookupError:
            pass
        code = wait_exit(p, 30)
        stop.set()
        for t in threads:
            t.join(30)
        self.assertEqual(code, 0)
        self.assertEqual(errors, [])
        self.assertGreaterEqual(len(acked), 30)
        p.start()
        got = p.wait_for_delivered(len(acked), timeout=60, settle=0.5)
        subjects = set()
        for d in got:
            for line in d.body.split(b"\r\n"):
                if line.startswith(b"Subject: "):
                    subjects.add(line[9:].decode())
        missing = set(acked) - subjects
        self.assertEqual(missing, set(), "acknowledged but not delivered")


if __name__ == "__main__":
    unittest.main()
