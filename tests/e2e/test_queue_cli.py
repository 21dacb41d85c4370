"""test_queue_cli.py - `postern queue` against a running gateway: each
command observed to do what it says (files in the spool, copies in the
maildir, the listing), `--json` parsed, errors and exit codes, and access
checked with SO_PEERCRED (root or queue.control_group only).

Deliveries are held back by a full maildir (a small tmpfs, filled) with a
long retry delay, so messages stay queued until the test makes room and
flushes.
"""

import json
import os
import pwd
import grp
import re
import stat
import subprocess
import time
import unittest

import harness
from test_spool_recovery import fill, mount_tmpfs, send

SETPRIV = "/usr/bin/setpriv"


class QueueCLI(harness.PosternTestCase):

    def setUp(self):
        super().setUp()
        mail = os.path.join(self.tmp, "mail")
        mount_tmpfs(self, mail, "64k")
        self.p = self.postern({"delivery": {"retry_min": 3600,
                                            "retry_max": 7200},
                               "queue": {"control_group": "nogroup"}})
        self.filler = fill(mail)

    def cli(self, *args, code=0, user=None):
        argv = [self.p.binary, "queue", "-c", self.p.conf_path] + list(args)
        if user:
            argv = [SETPRIV, "--reuid=%s" % user[0], "--regid=%s" % user[1],
                    "--clear-groups", self.p.binary, "queue", "-s",
                    os.path.join(self.p.spool, "control.sock")] + list(args)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, code,
                         "postern queue %s: exit %d\nstdout: %s\nstderr: %s"
                         % (" ".join(args), r.returncode, r.stdout, r.stderr))
        return r

    def listing(self):
        return json.loads(self.cli("list", "--json").stdout)

    def wait_attempted(self, n):
        deadline = time.monotonic() + 10
        while True:
            msgs = self.listing()["messages"]
            if len(msgs) == n and all(m["attempts"] >= 1 and
                                      m["state"] == "deferred" for m in msgs):
                return msgs
            if time.monotonic() > deadline:
                self.fail("messages not deferred: %r" % msgs)
            time.sleep(0.05)

    def test_commands(self):
        qids = []
        for i, rcpts in enumerate((["a@example.net"],
                                   ["b@example.net", "c@example.net"],
                                   ["d@example.net"])):
            r = send(self.p, "cli-%d" % i, rcpts=rcpts)
            self.assertEqual(r.code, 250)
            qids.append(r.lines[0].split()[-1])
        msgs = self.wait_attempted(3)

        # list --json: every field, recipients with state and last error
        by_id = {m["id"]: m for m in msgs}
        self.assertEqual(sorted(by_id), sorted(qids))
        m1 = by_id[qids[1]]
        self.assertEqual(m1["sender"], "rec@example.org")
        self.assertGreater(m1["size"], 600)
        self.assertRegex(m1["arrival"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertLessEqual(abs(m1["arrival_time"] - time.time()), 60)
        self.assertRegex(m1["next_attempt"], r"Z$")
        self.assertIn("4.3.1", m1["last_error"])
        self.assertEqual([(r["address"], r["state"]) for r in
                          m1["recipients"]],
                         [("b@example.net", "pending"),
                          ("c@example.net", "pending")])
        self.assertIn("No space left", m1["recipients"][0]["last_error"])
        self.assertEqual(self.listing()["count"], 3)

        # list (text) and show
        out = self.cli("list").stdout
        for q in qids:
            self.assertIn(q, out)
        self.assertIn('"rec@example.org"', out)
        out = self.cli("show", qids[1]).stdout
        self.assertIn("c@example.net", out)
        self.assertIn("helo:", out)
        shown = json.loads(self.cli("show", qids[1], "--json").stdout)
        self.assertEqual(shown["id"], qids[1])
        self.assertEqual(shown["client_ip"], "127.0.0.1")
        self.assertEqual(shown["protocol"][:4], "ESMT")

        # hold: the file moves to hold/ and the listing says held
        self.cli("hold", qids[0])
        self.assertTrue(os.path.exists(os.path.join(self.p.spool, "hold",
                                                    qids[0])))
        self.assertFalse(os.path.exists(os.path.join(self.p.spool, "active",
                                                     qids[0])))
        states = {m["id"]: m["state"] for m in self.listing()["messages"]}
        self.assertEqual(states[qids[0]], "held")
        r = self.cli("hold", qids[0], code=1)
        self.assertIn("already on hold", r.stderr)

        # delete: gone from the listing and from the spool
        self.cli("delete", qids[2])
        self.assertNotIn(qids[2], [m["id"] for m in
                                   self.listing()["messages"]])
        self.assertEqual(self.p.spool_files("active"),
                         [os.path.join(self.p.spool, "active", qids[1])])

        # room in the maildir, then flush: the deferred one is delivered
        # at once (its retry is an hour away), the held one is not
        os.unlink(self.filler)
        time.sleep(0.3)
        self.assertEqual(self.p.maildir_count(), 0)
        r = self.cli("flush")
        self.assertIn("flushed 1", r.stdout)
        got = self.p.wait_for_delivered(2, settle=0.5)
        self.assertEqual(sorted(d.delivered_to for d in got),
                         ["b@example.net", "c@example.net"])
        self.assertEqual([m["id"] for m in self.listing()["messages"]],
                         [qids[0]])

        # release: back to active/ and delivered
        self.cli("release", qids[0])
        got = self.p.wait_for_delivered(3, settle=0.3)
        self.assertIn("a@example.net", [d.delivered_to for d in got])
        deadline = time.monotonic() + 5
        while self.listing()["count"] and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.listing(), {"messages": [], "count": 0})
        self.assertIn("queue is empty", self.cli("list").stdout)

        # errors
        r = self.cli("show", "0123456789ABCDEF", code=1)
        self.assertIn("no such message", r.stderr)
        r = self.cli("release", "nothex", code=1)
        self.assertIn("bad queue ID", r.stderr)
        self.cli("bogus", code=2)
        self.cli("delete", code=2)

    def test_delete_all(self):
        for i in range(4):
            self.assertEqual(send(self.p, "all-%d" % i).code, 250)
        self.wait_attempted(4)
        r = self.cli("delete", "all")
        self.assertIn("deleted 4 messages", r.stdout)
        self.assertEqual(self.listing()["count"], 0)
        self.assertEqual(self.p.spool_files("active"), [])

    def test_access_by_group(self):
        # members of queue.control_group may use it, others may not
        os.chmod(self.tmp, 0o711)
        st = os.stat(self.p.spool)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o710)
        self.assertEqual(st.st_gid, grp.getgrnam("nogroup").gr_gid)
        r = self.cli("list", "--json", user=("nobody", "nogroup"))
        self.assertEqual(json.loads(r.stdout)["count"], 0)
        # not in the group: the file system already says no ...
        r = self.cli("list", user=("nobody", "daemon"), code=1)
        self.assertIn("Permission denied", r.stderr)
        # ... and with the socket opened up, SO_PEERCRED still does
        os.chmod(self.p.spool, 0o711)
        os.chmod(os.path.join(self.p.spool, "control.sock"), 0o666)
        r = self.cli("list", user=("nobody", "daemon"), code=1)
        self.assertIn("permission denied", r.stderr)
        self.p.wait_for_log(r"event=control_denied uid=%d"
                            % pwd.getpwnam("nobody").pw_uid)

    def test_gateway_not_running(self):
        self.p.stop()
        r = self.cli("list", code=1)
        self.assertIn("is postern running?", r.stderr)


if __name__ == "__main__":
    unittest.main()
