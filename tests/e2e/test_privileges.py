"""Privileges end to end (run as root, as CI does): postern binds a port
below 1024, then runs as the configured user and group (every thread, real,
effective, saved and file-system ids), owns a 0700 spool and the files it
writes, and refuses to run as root: no user configured, or user = root.
Its memory holds passwords and keys, so it is never dumpable (no core dump,
no ptrace or /proc/<pid>/mem for its own user): dropped from root, and
started as the user directly (as systemd's User= does)."""

import glob
import os
import pwd
import shutil
import socket
import stat
import unittest

import harness
from harness import PosternTestCase, dot_stuff, message


def ids(pid):
    """{task id: (uids, gids, groups)} from /proc."""
    out = {}
    for st in glob.glob("/proc/%d/task/*/status" % pid):
        f = {}
        with open(st) as fh:
            for line in fh:
                k, _, v = line.partition(":")
                f[k] = v.split()
        out[st.split("/")[4]] = (f["Uid"], f["Gid"], f.get("Groups", []))
    return out


def not_dumpable(pid):
    """The kernel gives a process's /proc entries to root while it is not
    dumpable, whoever it runs as."""
    return os.stat("/proc/%d/status" % pid).st_uid == 0


def low_port():
    for port in range(600, 1000):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise AssertionError("no free port below 1024")


@unittest.skipUnless(os.geteuid() == 0, "needs root (CI runs as root)")
class PrivilegesTest(PosternTestCase):
    def test_runs_as_user(self):
        user = pwd.getpwnam(harness.RUN_AS)
        port = low_port()
        p = self.postern({"listeners": [{"address": "127.0.0.1",
                                         "port": port}],
                          "user": harness.RUN_AS, "group": harness.RUN_AS})
        tasks = ids(p.pid)
        self.assertGreater(len(tasks), 1)     # the spool's threads too
        for tid, (uids, gids, groups) in tasks.items():
            self.assertEqual(uids, [str(user.pw_uid)] * 4, tid)
            self.assertEqual(gids, [str(user.pw_gid)] * 4, tid)
            self.assertEqual(groups, [str(user.pw_gid)], tid)
        self.assertIn(b"event=privileges user=%s" % harness.RUN_AS.encode(),
                      p.log())
        self.assertTrue(not_dumpable(p.pid))
        c = p.session()                      # the low port works
        c.cmd("MAIL FROM:<s@x.test>", 250)
        c.cmd("RCPT TO:<r@x.test>", 250)
        c.cmd("DATA", 354)
        c.send(dot_stuff(message()))
        c.expect(250, "2.0.0")
        c.quit()
        p.wait_for_maildir(1)
        st = os.stat(p.spool)
        self.assertEqual(st.st_mode & 0o777 & ~0o010, 0o700)
        self.assertEqual(st.st_uid, user.pw_uid)
        for root, dirs, files in os.walk(p.spool):
            for n in dirs + files:
                path = os.path.join(root, n)
                self.assertEqual(os.lstat(path).st_uid, user.pw_uid, path)
        for path in p.maildir_paths():
            self.assertEqual(os.stat(path).st_uid, user.pw_uid, path)

    def test_maildir_route_given_to_user(self):
        other = os.path.join(self.tmp, "other-mail")
        p = self.postern({"delivery": {"routes": [
            {"domain": "other.test", "route": "maildir:" + other}]}})
        c = p.session()
        c.cmd("MAIL FROM:<s@x.test>", 250)
        c.cmd("RCPT TO:<r@other.test>", 250)
        c.cmd("DATA", 354)
        c.send(dot_stuff(message()))
        c.expect(250, "2.0.0")
        c.quit()
        p.wait_for_maildir(1, maildir=other)
        path = p.maildir_paths(maildir=other)[0]
        user = pwd.getpwnam(harness.RUN_AS)
        self.assertEqual(os.stat(path).st_uid, user.pw_uid)

    def test_root_spool_files_given_to_user(self):
        """A spool left behind by root is handed over at start."""
        spool = os.path.join(self.tmp, "spool")
        os.makedirs(os.path.join(spool, "stray"))
        with open(os.path.join(spool, "stray", "file"), "w") as f:
            f.write("x")
        p = self.postern()
        user = pwd.getpwnam(harness.RUN_AS)
        self.assertEqual(os.stat(os.path.join(spool, "stray", "file"))
                         .st_uid, user.pw_uid)
        p.stop()

    def test_started_as_user_not_dumpable(self):
        """Started as the user (no drop): still not dumpable."""
        user = pwd.getpwnam(harness.RUN_AS)
        wrapper = os.path.join(self.tmp, "as-user.sh")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nexec %s --reuid=%d --regid=%d --clear-groups "
                    "-- %s \"$@\"\n" % (shutil.which("setpriv"), user.pw_uid,
                                         user.pw_gid, harness.POSTERN_BIN))
        os.chmod(wrapper, stat.S_IRWXU)
        p = self.postern(start=False, binary=wrapper)
        del p.config["user"], p.config["group"]
        for d in (p.spool, p.maildir):
            os.makedirs(d)
            os.chown(d, user.pw_uid, user.pw_gid)
        os.chmod(self.tmp, 0o711)
        p.start()
        self.assertEqual(ids(p.pid)[str(p.pid)][0], [str(user.pw_uid)] * 4)
        self.assertNotIn(b"event=privileges", p.log())    # nothing dropped
        self.assertTrue(not_dumpable(p.pid))
        c = p.session()
        c.cmd("MAIL FROM:<s@x.test>", 250)
        c.cmd("RCPT TO:<r@x.test>", 250)
        c.cmd("DATA", 354)
        c.send(dot_stuff(message()))
        c.expect(250, "2.0.0")
        c.quit()
        p.wait_for_maildir(1)

    def test_refuses_root(self):
        p = self.postern(start=False)
        del p.config["user"], p.config["group"]
        with self.assertRaises(AssertionError):
            p.start()
        self.assertIn(b"will not go on as root", p.log())
        q = self.postern({"user": "root"}, start=False, name="postern_root")
        del q.config["group"]
        with self.assertRaises(AssertionError):
            q.start()
        self.assertIn(b"must not be root", q.log())


if __name__ == "__main__":
    unittest.main()
