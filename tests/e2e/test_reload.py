"""test_reload.py - SIGHUP reloads, each claim of docs/OPERATIONS.md
"Reload" observed on the wire, in the maildir and in the log:

- a transaction begun before the reload ends with 250 and is delivered,
  and its session keeps its generation (host name) while new sessions get
  the new one (host name, banner);
- listeners are added and removed (a session on a removed one finishes);
- TLS certificates, the password file, the sender-login map, recipient
  lists and filter modules are read again;
- an invalid file changes nothing: one log line with every error and its
  file:line, the old config serves, a session across it is untouched;
- a new port below 1024 after the privilege drop is refused clearly;
- the service manager hears RELOADING=1 then READY=1, and the metrics
  count reloads by result.
"""

import grp
import os
import re
import socket
import unittest

import harness
import prom
from harness import PosternTestCase, dot_stuff, message
from test_auth import crypt_hash, plain
from test_drain import NotifySocket, refused
from test_tls import make_certs, peer_cn, wrap

CERTS = None


def setUpModule():
    global CERTS
    CERTS = make_certs(readable=True)


def tearDownModule():
    import shutil
    shutil.rmtree(CERTS, ignore_errors=True)


class Reload(PosternTestCase):

    def rewrite(self, p, overrides):
        p.config = harness.merge(p.config, overrides)
        p.write_config()

    def test_transaction_spans_reload(self):
        ns = NotifySocket(self.tmp)
        self.addCleanup(ns.close)
        mport = harness.free_port()
        p = self.postern({"hostname": "old.test",
                          "smtp": {"banner": "one"},
                          "metrics": {"enabled": True, "port": mport}},
                         env=dict(os.environ, NOTIFY_SOCKET=ns.path))
        ns.wait_for("READY=1")
        a = p.client()
        self.assertIn("old.test ESMTP one", a.greeting().text)
        a.ehlo()
        a.cmd("MAIL FROM:<s@example.org>", 250)
        a.cmd("RCPT TO:<r@example.net>", 250)
        a.cmd("DATA", 354)
        msg = message(subject="across the reload")
        wire = dot_stuff(msg)
        a.send(wire[:50])

        self.rewrite(p, {"hostname": "new.test", "smtp": {"banner": "two"}})
        ns.got.clear()
        p.reload()
        reloading = ns.wait_for("RELOADING=1")
        self.assertIn("MONOTONIC_USEC", reloading)
        self.assertEqual(ns.wait_for("READY=1").get("STATUS"), "serving")

        b = p.client()
        self.assertIn("new.test ESMTP two", b.greeting().text)
        self.assertTrue(b.cmd("EHLO b.test", 250).lines[0]
                        .startswith("new.test"))
        b.quit()
        # the old session finishes on its generation
        a.send(wire[50:])
        qid = harness.queue_id(a.reply())
        self.assertTrue(a.cmd("EHLO a.test", 250).lines[0]
                        .startswith("old.test"))
        a.quit()
        [d] = p.wait_for_delivered(1)
        self.assertIn(qid, d.received)
        self.assertIn("by old.test", d.received)
        self.assertEqual(d.body, msg)
        m = prom.scrape(mport)
        self.assertEqual(m.get("postern_config_reloads_total", result="ok"),
                         1)
        self.assertEqual(m.get("postern_config_last_reload_successful"), 1)

    def test_listeners_added_and_removed(self):
        pa, pb, pc = (harness.free_port() for _ in range(3))
        lst = lambda *ports: [{"address": "127.0.0.1", "port": x}
                              for x in ports]
        p = self.postern({"listeners": lst(pa, pb)})
        on_a = p.session(port=pa)
        on_a.cmd("MAIL FROM:<s@example.org>", 250)
        on_b = p.session(port=pb)
        self.rewrite(p, {"listeners": lst(pb, pc)})
        p.reload()
        self.assertTrue(refused("127.0.0.1", pa))
        for port in (pb, pc):
            c = p.session(port=port)
            r = c.transaction("s@example.org", ["r@example.net"],
                              message(subject="port %d" % port))
            harness.queue_id(r)
            c.quit()
        # sessions on a removed listener and a kept one go on
        on_a.cmd("RCPT TO:<r@example.net>", 250)
        on_a.cmd("DATA", 354)
        on_a.send(dot_stuff(message(subject="removed listener")))
        harness.queue_id(on_a.reply())
        on_a.quit()
        on_b.cmd("NOOP", 250)
        on_b.quit()
        p.wait_for_delivered(3)

    def test_files_read_again(self):
        pw = os.path.join(self.tmp, "passwd")
        senders = os.path.join(self.tmp, "senders")
        rcpts = os.path.join(self.tmp, "rcpts")
        with open(pw, "w") as f:
            f.write("alice:%s\n" % crypt_hash("alice-pw", "$6$"))
        with open(senders, "w") as f:
            f.write("alice@corp.test alice\n")
        with open(rcpts, "w") as f:
            f.write("known@local.test\n")
        for path in (senders, rcpts):
            os.chmod(path, 0o644)
        # the password file others may not read; as root, postern's group
        # may, so that the reload (after the drop) reads it
        os.chmod(pw, 0o640)
        if os.geteuid() == 0:
            os.chown(pw, 0, grp.getgrnam(harness.RUN_AS).gr_gid)
        cert = lambda n: {"cert": os.path.join(CERTS, n + ".pem"),
                          "key": os.path.join(CERTS, n + ".key")}
        plain_port = harness.free_port()
        base = {
            "tls": {"certificates": [cert("a")]},
            "auth": {"password_file": pw, "sender_login_map": senders},
            "listeners": [{"address": "127.0.0.1",
                           "port": harness.free_port()},
                          {"address": "127.0.0.1", "port": plain_port,
                           "tls": "none", "auth_plaintext": True}],
            "relay": {"domains": [{"domain": "local.test",
                                   "recipients": rcpts}]},
            "filters": [{"module": "headers",
                         "rules": [{"tag_subject": "[one]"}]}],
        }
        p = self.postern(base)

        def tls_cn():
            c = p.client()
            c.start()
            c.cmd("STARTTLS", 220)
            wrap(c)
            cn = peer_cn(c.sock)
            c.close()
            return cn

        def auth(user, pwd, sender):
            c = p.client(port=plain_port)
            c.start()
            r = c.cmd("AUTH PLAIN " + plain(user, pwd))
            out = [r.code]
            if r.code == 235:
                out.append(c.cmd("MAIL FROM:<%s>" % sender).code)
            c.close()
            return out

        def rcpt(addr):
            c = p.session()
            c.cmd("MAIL FROM:<s@example.org>", 250)
            code = c.cmd("RCPT TO:<%s>" % addr).code
            c.close()
            return code

        def send_subject():
            c = p.session()
            r = c.transaction("s@example.org", ["known@local.test"],
                              message(subject="tagged"))
            harness.queue_id(r)
            c.quit()

        self.assertEqual(tls_cn(), "mail.a.test")
        self.assertEqual(auth("bob", "bob-pw", "bob@corp.test"), [535])
        self.assertEqual(auth("alice", "alice-pw", "bob@corp.test"),
                         [235, 553])
        self.assertEqual(rcpt("new@local.test"), 550)
        send_subject()

        with open(pw, "a") as f:
            f.write("bob:%s\n" % crypt_hash("bob-pw", "$6$"))
        with open(senders, "w") as f:
            f.write("alice@corp.test alice\nbob@corp.test alice, bob\n")
        with open(rcpts, "a") as f:
            f.write("new@local.test\n")
        self.rewrite(p, {"tls": {"certificates": [cert("b")]},
                         "filters": [{"module": "headers",
                                      "rules": [{"tag_subject": "[two]"}]}]})
        p.reload()
        self.assertEqual(tls_cn(), "mx.b.test")
        self.assertEqual(auth("bob", "bob-pw", "bob@corp.test"), [235, 250])
        self.assertEqual(auth("alice", "alice-pw", "bob@corp.test"),
                         [235, 250])
        self.assertEqual(rcpt("new@local.test"), 250)
        send_subject()
        got = p.wait_for_delivered(2)
        subjects = sorted(re.search(rb"Subject: (.*)\r\n", d.body).group(1)
                          for d in got)
        self.assertEqual(subjects, [b"[one] tagged", b"[two] tagged"])

    def test_invalid_file_changes_nothing(self):
        mport = harness.free_port()
        p = self.postern({"smtp": {"banner": "kept"},
                          "metrics": {"enabled": True, "port": mport}})
        a = p.session()
        a.cmd("MAIL FROM:<s@example.org>", 250)
        good = open(p.conf_path).read()
        lines = good.count("\n")
        with open(p.conf_path, "w") as f:
            f.write(good + 'bogus = 1;\nmime = { depth = 0; };\n')
        p.reload(ok=False)
        failed = [l for l in p.log().decode().splitlines()
                  if "event=reload_failed" in l]
        self.assertEqual(len(failed), 1)
        self.assertIn("errors=2", failed[0])
        self.assertIn("%s:%d: unknown top-level key 'bogus'"
                      % (p.conf_path, lines + 1), failed[0])
        self.assertIn("%s:%d: mime.depth" % (p.conf_path, lines + 2),
                      failed[0])
        # the old configuration serves; the session across it goes on
        c = p.client()
        self.assertIn("ESMTP kept", c.greeting().text)
        c.close()
        a.cmd("RCPT TO:<r@example.net>", 250)
        a.cmd("DATA", 354)
        a.send(dot_stuff(message()))
        harness.queue_id(a.reply())
        a.quit()
        p.wait_for_delivered(1)
        m = prom.scrape(mport)
        self.assertEqual(m.get("postern_config_reloads_total",
                               result="failed"), 1)
        self.assertEqual(m.get("postern_config_last_reload_successful"), 0)
        # a file that is valid again is taken
        with open(p.conf_path, "w") as f:
            f.write(good)
        p.reload()

    def test_new_low_port_refused_clearly(self):
        # after the drop to postern's user (or never root), a port below
        # 1024 cannot be bound: the reload says so and changes nothing
        low = None
        for port in range(1023, 999, -1):
            if os.geteuid() != 0:
                low = port
                break
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
                low = port
                break
            except OSError:
                continue
            finally:
                s.close()
        self.assertIsNotNone(low)
        p = self.postern()
        self.rewrite(p, {"listeners": p.config["listeners"] +
                         [{"address": "127.0.0.1", "port": low}]})
        p.reload(ok=False)
        line = [l for l in p.log().decode().splitlines()
                if "event=reload_failed" in l][0]
        self.assertIn("listener 127.0.0.1 port %d: permission denied" % low,
                      line)
        self.assertIn("a port below 1024 needs root or CAP_NET_BIND_SERVICE",
                      line)
        self.assertTrue(refused("127.0.0.1", low))
        c = p.session()
        c.quit()


if __name__ == "__main__":
    unittest.main()
