"""test_spool_recovery.py - what a restarted gateway does with the files it
finds, and what it does when the disk is full.

  - files in active/ (messages deferred, so copied out of the log) damaged
    while postern was down (a flipped bit in the
    message text, an unknown format version, a file cut before its commit
    record) move to corrupt/ and are logged, never deleted or delivered;
    a torn update record at the end of a good file is ignored and the
    message delivered; a half-written file in incoming/ is removed;
  - the maildir's disk full: deliveries are deferred with 4.3.1 and
    retried, and delivered once there is room;
  - the spool's disk full while receiving: 452 4.3.1 after the final dot,
    nothing left in the spool, and the next message is accepted.

The disk-full cases mount small tmpfs file systems (the tests run as root,
as tools/test does) and unmount them in cleanup.
"""

import os
import subprocess
import time
import unittest

import harness

REC_RCPT = 5


def mount_tmpfs(test, path, size):
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o",
                        "size=%s,mode=0700" % size, "tmpfs", path],
                       capture_output=True, text=True)
    if r.returncode != 0:
        test.fail("mount tmpfs on %s: %s (these tests need root)"
                  % (path, r.stderr.strip()))
    test.addCleanup(subprocess.run, ["umount", "-l", path],
                    capture_output=True)


def fill(path):
    """Fill the file system holding path; returns the filler's name."""
    name = os.path.join(path, "filler")
    fd = os.open(name, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 4096) > 0:
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return name


def crc32c(data, crc=0):
    crc ^= 0xffffffff
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xffffffff


def record(rtype, payload):
    hdr = bytes([rtype, 0, 0, 0]) + len(payload).to_bytes(4, "little")
    return hdr + payload + crc32c(hdr + payload).to_bytes(4, "little")


def send(p, subject, size=600, rcpts=("r@example.net",)):
    with p.session() as c:
        c.cmd("MAIL FROM:<rec@example.org>", 250)
        for r in rcpts:
            c.cmd("RCPT TO:<%s>" % r, 250)
        c.cmd("DATA", 354)
        c.send(harness.message(subject=subject, body="z" * size + "\r\n") +
               b".\r\n")
        r = c.reply()
        c.quit()
        return r


class SpoolRecovery(harness.PosternTestCase):

    def full_maildir_postern(self, extra=None):
        mail = os.path.join(self.tmp, "mail")
        mount_tmpfs(self, mail, "64k")
        over = {"delivery": {"retry_min": 1, "retry_max": 2}}
        p = self.postern(harness.merge(over, extra))
        return p, fill(mail)

    def test_damaged_files_and_full_maildir(self):
        p, filler = self.full_maildir_postern()
        qids = []
        for i in range(5):
            r = send(p, "recovery-%d" % i)
            self.assertEqual(r.code, 250, str(r))
            qids.append(r.lines[0].split()[-1])
        # the maildir is full: every delivery is deferred with 4.3.1, and
        # each message, deferred, is a file in active/ (small ones leave
        # the log's segments after their first attempt)
        p.wait_for_log(r"event=deferred .*status=\"4\.3\.1 maildir")
        deadline = time.monotonic() + 20
        while not (len(p.queue_list()) == 5 and
                   all(m["attempts"] >= 1 for m in p.queue_list())):
            self.assertLess(time.monotonic(), deadline, p.log_tail())
            time.sleep(0.05)
        p.stop()
        active = os.path.join(p.spool, "active")
        self.assertEqual(sorted(os.listdir(active)), sorted(qids))

        def path(q):
            return os.path.join(active, q)
        # 0: a flipped bit in the message text
        with open(path(qids[0]), "r+b") as f:
            f.seek(120)
            b = f.read(1)
            f.seek(120)
            f.write(bytes([b[0] ^ 0x01]))
        # 1: an unknown format version
        with open(path(qids[1]), "r+b") as f:
            f.seek(4)
            f.write((7).to_bytes(4, "little"))
        # 2: cut before its commit record
        os.truncate(path(qids[2]), 60)
        # 3: a torn update record at the end (a crash mid-append)
        with open(path(qids[3]), "ab") as f:
            rec = record(REC_RCPT, (0).to_bytes(4, "little") + b"\x01" +
                         (0).to_bytes(8, "little") + b"\xff\xff\xff\xff")
            f.write(rec[:-5])
        # 4: untouched
        # and a half-written file in incoming/
        with open(os.path.join(p.spool, "incoming", "0000FFFF00000001"),
                  "wb") as f:
            f.write(b"PSTQ\x01\x00\x00\x00partial")
        os.unlink(filler)

        p.start()
        log = p.log().decode()
        for q, why in ((qids[0], "bad checksum"),
                       (qids[1], "unknown version 7"),
                       (qids[2], "truncated before the commit record")):
            self.assertRegex(log, r"error msg=%s event=spool_corrupt "
                             r"dir=active reason=\"%s[^\"]*\" action=moved "
                             r"to=corrupt/%s" % (q, why, q))
        self.assertRegex(log, r"msg=%s event=spool_torn_tail" % qids[3])
        self.assertRegex(log, r"msg=0000FFFF00000001 event=spool_recover "
                         r"dir=incoming action=removed")
        self.assertRegex(log, r"event=spool_open .*loaded=2 removed=1 "
                         r"corrupt=3 torn=1")
        got = p.wait_for_delivered(2, timeout=15, settle=0.5)
        subjects = sorted(d.body.split(b"Subject: ")[1].split(b"\r\n")[0]
                          for d in got)
        self.assertEqual(subjects, [b"recovery-3", b"recovery-4"])
        self.assertEqual(sorted(os.listdir(os.path.join(p.spool, "corrupt"))),
                         sorted(qids[:3]))
        self.assertEqual(os.listdir(os.path.join(p.spool, "incoming")), [])

    def test_full_maildir_retried_until_room(self):
        p, filler = self.full_maildir_postern()
        r = send(p, "retry-me", rcpts=("a@example.net", "b@example.net"))
        self.assertEqual(r.code, 250)
        p.wait_for_log(r"event=deferred .*attempts=2 ")
        self.assertEqual(p.maildir_count(), 0)
        os.unlink(filler)
        got = p.wait_for_delivered(2, timeout=15, settle=0.3)
        self.assertEqual(sorted(d.delivered_to for d in got),
                         ["a@example.net", "b@example.net"])
        self.assertTrue(all(d.return_path == "<rec@example.org>"
                            for d in got))
        deadline = time.monotonic() + 5
        while p.spool_files("active") and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(p.spool_files("active"), [])

    def test_full_spool_during_data(self):
        spool = os.path.join(self.tmp, "spool")
        mount_tmpfs(self, spool, "1m")
        p = self.postern({"limits": {"disk_free_min": 0}})
        r = send(p, "too-big", size=3 * 1024 * 1024)
        self.assertEqual(r.code, 452, str(r))
        self.assertEqual(r.enhanced, "4.3.1")
        self.assertEqual(p.spool_files("incoming"), [])
        self.assertEqual(p.spool_files("active"), [])
        r = send(p, "fits", size=2000)
        self.assertEqual(r.code, 250, str(r))
        got = p.wait_for_delivered(1)
        self.assertIn(b"Subject: fits\r\n", got[0].body)


if __name__ == "__main__":
    unittest.main()
