"""test_metrics.py - the metrics endpoint: /metrics scraped before and
after real traffic (plain and TLS sessions, AUTH, accepted, refused and
filtered messages, deliveries to a maildir and to an SMTP route, a
deferred and a held message), every scrape parsed strictly and by
Prometheus' own Python parser (prom.py), and each series checked to move
by what the traffic did; /healthz and /readyz, including a spool that
cannot be written and a disk below limits.disk_free_min; 404 and 405."""

import json
import os
import socket
import subprocess
import unittest
import urllib.error
import urllib.request

import harness
import prom
from harness import PosternTestCase, message, wait_for
from test_auth import crypt_hash, plain
from test_tls import make_certs, wrap

CERTS = None


def setUpModule():
    global CERTS
    CERTS = make_certs()


def tearDownModule():
    import shutil
    shutil.rmtree(CERTS, ignore_errors=True)


class MetricsBase(PosternTestCase):
    def metrics_postern(self, extra=None):
        self.mport = harness.free_port()
        conf = {"metrics": {"enabled": True, "port": self.mport}}
        return self.postern(harness.merge(conf, extra))

    def scrape(self):
        return prom.scrape(self.mport)


class MetricsTraffic(MetricsBase):

    def setUp(self):
        super().setUp()
        self.ds = self.downstream()
        self.defer = self.downstream(script={"RCPT": "451 4.3.0 later"})
        pwfile = os.path.join(self.tmp, "passwd")
        with open(pwfile, "w") as f:
            f.write("alice:%s\n" % crypt_hash("alice-pw", "$6$"))
        os.chmod(pwfile, 0o640)
        self.plain_port = harness.free_port()
        self.p = self.metrics_postern({
            "tls": {"certificates": [
                {"cert": os.path.join(CERTS, "a.pem"),
                 "key": os.path.join(CERTS, "a.key")}]},
            "auth": {"password_file": pwfile},
            "listeners": [
                {"address": "127.0.0.1", "port": harness.free_port()},
                {"address": "127.0.0.1", "port": self.plain_port,
                 "tls": "none", "auth_plaintext": True}],
            "limits": {"message_size": 4096},
            "relay": {"domains": ["relay.test", "defer.test"]},
            "delivery": {"retry_min": 3600, "retry_max": 7200,
                         "tls": "none",
                         "routes": [
                             {"domain": "relay.test",
                              "route": self.ds.route()},
                             {"domain": "defer.test",
                              "route": self.defer.route()}]},
            "filters": [{"module": "headers",
                         "rules": [{"tag_subject": "[ext]"}]}],
        })
        self.listener = "127.0.0.1:%d" % self.p.listen_port
        self.plain_listener = "127.0.0.1:%d" % self.plain_port

    def test_series_move_with_traffic(self):
        m0 = wait_for(lambda: (lambda m: m if m.has(
            "postern_queue_messages", state="active") else None)(
                self.scrape()), what="the first queue sample")
        for fam, typ in [
                ("postern_sessions_open", "gauge"),
                ("postern_sessions_total", "counter"),
                ("postern_queue_messages", "gauge"),
                ("postern_queue_oldest_message_age_seconds", "gauge"),
                ("postern_spool_commit_batch_messages", "histogram"),
                ("postern_delivery_attempt_duration_seconds", "histogram"),
                ("postern_filter_verdicts_total", "counter"),
                ("postern_filter_failures_total", "counter")]:
            self.assertEqual(m0.types.get(fam), typ, fam)
        self.assertEqual(m0.get("postern_sessions_total",
                                listener=self.listener), 0)
        self.assertTrue(m0.has("postern_sessions_open",
                               listener=self.plain_listener))

        # three accepted messages: two to the maildir, one relayed
        sizes = []
        for rcpt in ("a@example.net", "b@example.net", "c@relay.test"):
            msg = message(rcpt=rcpt)
            sizes.append(len(msg))
            with self.p.smtp() as s:
                s.sendmail("s@example.org", [rcpt], msg)
        # one refused for its size (552 5.3.4)
        with self.p.client() as c:
            c.start()
            big = message(body=("y" * 70 + "\r\n") * 80)
            r = c.transaction("s@example.org", "d@example.net", big)
            self.assertReply(r, 552, "5.3.4")
            c.quit()
        # one deferred by its route, then held by the operator
        with self.p.smtp() as s:
            s.sendmail("s@example.org", ["e@defer.test"], message())
        # TLS: one handshake that works, one that fails
        c = self.p.client()
        c.start()
        c.cmd("STARTTLS", 220)
        wrap(c)
        c.ehlo()
        c.quit()
        c = self.p.client()
        c.start()
        c.cmd("STARTTLS", 220)
        c.send(b"\x16\x03\x01\x00\x05hello-not-tls")
        self.assertTrue(c.closed(10))
        c.close()
        # AUTH: a success and a failure (plaintext listener)
        c = self.p.client(port=self.plain_port)
        c.start()
        c.cmd("AUTH PLAIN " + plain("alice", "wrong"), 535)
        c.cmd("AUTH PLAIN " + plain("alice", "alice-pw"), 235)
        c.quit()

        self.p.wait_for_maildir(2)
        self.ds.wait_for_transactions(1)

        def settled():
            m = self.scrape()
            ok = (m.get("postern_deliveries_total",
                        route="maildir:" + self.p.maildir,
                        outcome="delivered") >= 2 and
                  m.get("postern_deliveries_total", route=self.ds.route(),
                        outcome="delivered") >= 1 and
                  m.get("postern_deliveries_total", route=self.defer.route(),
                        outcome="deferred") >= 1 and
                  m.get("postern_queue_messages", state="deferred") == 1 and
                  m.get("postern_sessions_open", listener=self.listener)
                  == 0)
            return m if ok else None
        m1 = wait_for(settled, what="deliveries in the metrics")

        def delta(name, **labels):
            return m1.get(name, **labels) - m0.get(name, **labels)

        # 4 on the first listener with DATA + the deferred one + 2 TLS = 7
        self.assertEqual(delta("postern_sessions_total",
                               listener=self.listener), 7)
        self.assertEqual(delta("postern_sessions_total",
                               listener=self.plain_listener), 1)
        self.assertEqual(delta("postern_messages_total", outcome="accepted",
                               reason="queued"), 4)
        self.assertEqual(delta("postern_messages_total", outcome="refused",
                               reason="size"), 1)
        self.assertGreaterEqual(delta("postern_received_bytes_total"),
                                sum(sizes) + len(big))
        self.assertEqual(delta("postern_accept_duration_seconds_count"), 4)
        self.assertGreater(delta("postern_accept_duration_seconds_sum"), 0)
        self.assertEqual(delta("postern_spool_commit_batch_messages_sum"), 4)
        self.assertGreaterEqual(
            delta("postern_spool_commit_batch_messages_count"), 1)
        self.assertEqual(delta("postern_tls_handshakes_total", result="ok"),
                         1)
        self.assertEqual(delta("postern_tls_handshakes_total",
                               result="failed"), 1)
        self.assertEqual(delta("postern_auth_total", result="success"), 1)
        self.assertEqual(delta("postern_auth_total", result="failure"), 1)
        self.assertEqual(delta("postern_deliveries_total",
                               route="maildir:" + self.p.maildir,
                               outcome="delivered"), 2)
        self.assertEqual(delta("postern_deliveries_total",
                               route=self.ds.route(), outcome="delivered"), 1)
        self.assertGreaterEqual(
            delta("postern_delivery_attempt_duration_seconds_count"), 3)
        # the headers module saw every phase of the 4 messages + the one
        # refused after its data (its hooks ran before the size check)
        self.assertGreaterEqual(delta("postern_filter_verdicts_total",
                                      filter="headers", verdict="continue"),
                                4)
        self.assertEqual(m1.get("postern_filter_failures_total",
                                filter="headers", cause="timeout"), 0)
        self.assertEqual(m1.get("postern_queue_messages", state="active"), 0)
        self.assertEqual(m1.get("postern_queue_messages", state="hold"), 0)

        # the operator holds the deferred message: it moves to "hold",
        # and the oldest message's age grows with time
        [queued] = json.loads(subprocess.run(
            [self.p.binary, "queue", "-c", self.p.conf_path, "list",
             "--json"], capture_output=True, text=True, check=True,
            timeout=30).stdout)["messages"]
        subprocess.run([self.p.binary, "queue", "-c", self.p.conf_path,
                        "hold", queued["id"]], check=True, timeout=30,
                       capture_output=True)
        m2 = wait_for(lambda: (lambda m: m if m.get(
            "postern_queue_messages", state="hold") == 1 and m.get(
            "postern_queue_oldest_message_age_seconds") >= 1 else None)(
                self.scrape()), what="the held message and its age")
        self.assertEqual(m2.get("postern_queue_messages", state="deferred"),
                         0)

    def test_health_endpoints(self):
        st, _, body = prom.http_get(self.mport, "/healthz")
        self.assertEqual((st, body), (200, "ok\n"))
        st, _, body = prom.http_get(self.mport, "/readyz")
        self.assertEqual((st, body), (200, "ready\n"))
        st, _, _ = prom.http_get(self.mport, "/nothing")
        self.assertEqual(st, 404)
        req = urllib.request.Request(
            "http://127.0.0.1:%d/metrics" % self.mport, data=b"x",
            method="POST")
        try:
            urllib.request.urlopen(req, timeout=10)
            self.fail("POST /metrics answered 2xx")
        except urllib.error.HTTPError as e:
            self.assertEqual(e.code, 405)
            self.assertEqual(e.headers.get("Allow"), "GET, HEAD")

        # a spool that cannot be written makes the gateway unready
        spool = self.p.spool
        mode = os.stat(spool).st_mode
        os.chmod(spool, 0o500)
        try:
            # (as root, postern has dropped to its own user by now)
            st, _, body = prom.http_get(self.mport, "/readyz")
            self.assertEqual(st, 503, body)
            self.assertIn("spool not writable", body)
        finally:
            os.chmod(spool, mode & 0o7777)
        st, _, body = prom.http_get(self.mport, "/readyz")
        self.assertEqual(st, 200, body)


class MetricsDiskFloor(MetricsBase):

    def test_readyz_below_disk_floor(self):
        # more free space than any disk has: not ready, still alive
        self.p = self.metrics_postern(
            {"limits": {"disk_free_min": 1 << 49}})
        st, _, body = prom.http_get(self.mport, "/readyz")
        self.assertEqual(st, 503, body)
        self.assertIn("spool disk below the floor", body)
        st, _, body = prom.http_get(self.mport, "/healthz")
        self.assertEqual(st, 200, body)

    def test_off_by_default_and_listen_errors(self):
        # without a metrics section nothing listens for HTTP
        p = self.postern()
        self.assertNotIn(b"service=metrics", p.log())
        p.stop()
        # a port already taken: a clear fatal error, exit 1
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        try:
            q = self.postern({"metrics": {"enabled": True,
                                          "port": taken.getsockname()[1]}},
                             start=False, name="taken")
            q.start(wait=False)
            self.assertEqual(q.proc.wait(timeout=15), 1)
            harness._forget_proc(q.proc)
            self.assertRegex(q.log().decode(),
                             r"op=metrics error=\"metrics: listen on "
                             r"127\.0\.0\.1 port \d+: Address already in use")
            q.proc = None
        finally:
            taken.close()


if __name__ == "__main__":
    unittest.main()
