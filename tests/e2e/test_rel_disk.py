"""test_rel_disk.py - the spool on a real, small file system that fills up.

Each test mounts a file system of its own - a tmpfs (DiskTest) and ext4 on
a loop device (Ext4DiskTest: block allocation, delayed allocation, a
journal) - puts postern's spool on it and fills it with a file written
beside the spool, as another program would (the e2e tests run as root; a
test that cannot mount fails, it does not skip):

  test_floor    limits.disk_free_min above zero: MAIL is refused with
                452 4.3.1 once free space is below the floor; a message that
                crosses the floor while its text streams gets 452 4.3.1
                after the final dot and leaves nothing behind (the space is
                given back); when space returns, MAIL is taken again
  test_enospc   floor 0: filled to the last block, a small message is
                still taken (it goes whole into the log's segment, whose
                blocks were allocated before) while a large one, which needs
                a file of its own, gets 452 4.3.1 after the final dot and
                leaves nothing behind; with 512 KiB left, the write itself
                fails (ENOSPC) in the middle of a message, which gets
                452 4.3.1 after the final dot and leaves nothing behind

In both, messages answered 250 before the disk filled wait in the queue
for a downstream that is down (their delivery attempts, and the records
those append, meet the full disk), and every one of them is delivered
exactly once after space returns and the downstream comes up; so is a
message accepted after that. The mount is removed in every path (the
test's cleanup ends postern first). Nothing here depends on the spool's
file layout: "nothing behind" is measured as the file system's used bytes
(docs/SPOOL.md: small messages go into preallocated log segments, larger
ones into files).
"""

import errno
import os
import subprocess
import time
import unittest

import harness
from harness import PosternTestCase, dot_stuff, message

MIB = 1 << 20
FS_SIZE = 48 * MIB


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def used_bytes(path):
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


class DiskTest(PosternTestCase):

    FS = "tmpfs"

    def setUp(self):
        super().setUp()
        self.mnt = os.path.join(self.tmp, "fs")
        os.mkdir(self.mnt)
        if self.FS == "tmpfs":
            argv = ["mount", "-t", "tmpfs", "-o",
                    "size=%d,mode=0755" % FS_SIZE, "tmpfs", self.mnt]
        else:
            # an ext4 image on a loop device: real block allocation,
            # delayed allocation, a journal; no blocks reserved for root
            img = os.path.join(self.tmp, "fs.img")
            with open(img, "wb") as f:
                f.truncate(FS_SIZE)
            r = subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-b", "4096",
                                img],
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            argv = ["mount", "-t", "ext4", "-o", "loop", img, self.mnt]
        r = subprocess.run(argv, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, "cannot mount the %s (the test "
                         "needs root): %s" % (self.FS, r.stderr))
        self.addCleanup(self._unmount)
        self.filler = os.path.join(self.mnt, "filler")

    def _unmount(self):
        """End this test's processes (they hold files on the mount), then
        unmount; lazily if something still holds it."""
        try:
            self._cleanup_processes()
        finally:
            self._posterns, self._servers = [], []
            r = subprocess.run(["umount", self.mnt], capture_output=True)
            if r.returncode != 0:
                subprocess.run(["umount", "-l", self.mnt], check=True)

    def used_back_to(self, used, slack):
        """Wait until the file system uses at most used + slack bytes (ext4
        counts freed blocks as free once its journal has committed)."""
        deadline = time.monotonic() + 10
        while used_bytes(self.mnt) - used >= slack:
            if time.monotonic() > deadline:
                self.fail("%d bytes still used on the %s"
                          % (used_bytes(self.mnt) - used, self.FS))
            os.sync()
            time.sleep(0.1)

    def fill_to(self, free):
        """Grow or shrink the filler file so that `free` bytes stay free
        (0: write until the file system refuses even a block)."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                     0o600)
        try:
            have = free_bytes(self.mnt)
            if have <= free:
                for i in range(64):
                    if os.path.exists("%s.%d" % (self.filler, i)):
                        os.unlink("%s.%d" % (self.filler, i))
                have = free_bytes(self.mnt)
                size = os.fstat(fd).st_size - (free - have)
                os.ftruncate(fd, max(0, size))
                return free_bytes(self.mnt)
            left = have - free
            block = MIB
            while left > 0 or free == 0:
                try:
                    left -= os.write(fd, b"\0" * min(block, max(left, 4096)))
                except OSError as e:
                    if e.errno != errno.ENOSPC or free:
                        raise
                    if block == 4096:
                        break           # not even a block is left
                    block = 4096        # ext4 refuses a big write sooner
            os.fsync(fd)
        finally:
            os.close(fd)
        if free == 0:
            # ext4 refuses to grow a big file while a block or two stay
            # free (kept for its extent tree); one-byte files take them
            for i in range(64):
                try:
                    with open("%s.%d" % (self.filler, i), "wb") as f:
                        f.write(b"\0")
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
        return free_bytes(self.mnt)

    def start(self, floor):
        self.ds = self.downstream(start=False)      # down: mail waits
        return self.postern({
            "queue": {"directory": os.path.join(self.mnt, "spool")},
            "limits": {"disk_free_min": floor, "message_size": 32 * MIB},
            "delivery": {"default_route": self.ds.route(), "retry_min": 1,
                         "retry_max": 2, "dead_host_backoff": 1}})

    def send(self, c, subject, body=b"Hello.\r\n"):
        """One transaction on c; returns the reply to the final dot."""
        c.cmd("MAIL FROM:<s@x.test>", 250)
        c.cmd("RCPT TO:<r@x.test>", 250)
        c.cmd("DATA", 354)
        c.send(dot_stuff(message(subject=subject, body=body)))
        return c.reply(timeout=60)

    def queue_before(self, p, n):
        """n messages answered 250 while the downstream is down; wait until
        each has been tried (and deferred) at least once."""
        c = p.session()
        for i in range(n):
            self.assertReply(self.send(c, "before %d" % i), 250, "2.0.0")
        c.quit()
        p.wait_for_log(r"event=deferred", timeout=20)
        return ["before %d" % i for i in range(n)]

    def big(self, size):
        line = b"x" * 998 + b"\r\n"
        return line * (size // len(line))

    def finish(self, p, subjects):
        """Space back, downstream up: every subject arrives exactly once,
        and a new message is taken and delivered."""
        self.fill_to(FS_SIZE)           # the small files go too
        os.unlink(self.filler)
        c = p.session()
        self.assertReply(self.send(c, "after"), 250, "2.0.0")
        c.quit()
        subjects = subjects + ["after"]
        self.ds.up()
        self.ds.wait_for_transactions(len(subjects), timeout=60,
                                      accepted_only=True)
        time.sleep(1.5)                 # a retry that would duplicate
        got = {}
        for t in self.ds.accepted:
            for line in t.data.split(b"\r\n"):
                if line.startswith(b"Subject: "):
                    s = line[9:].decode()
                    got[s] = got.get(s, 0) + 1
        self.assertEqual(got, {s: 1 for s in subjects})
        self.assertNotIn(b"event=spool_corrupt", p.log(whole=True))

    def test_floor(self):
        floor = 8 * MIB
        p = self.start(floor)
        queued = self.queue_before(p, 3)

        # below the floor: MAIL refused
        self.fill_to(floor - MIB)
        c = p.session()
        self.assertReply(c.cmd("MAIL FROM:<s@x.test>"), 452, "4.3.1")

        # 2 MiB above the floor, a 6 MiB message crosses it mid-DATA
        self.fill_to(floor + 2 * MIB)
        used = used_bytes(self.mnt)
        r = self.send(c, "crosses", self.big(6 * MIB))
        self.assertReply(r, 452, "4.3.1")
        self.assertIn(b"event=disk_space_low", p.log())
        # nothing of it stays on disk (a page or two of records may)
        self.used_back_to(used, 256 * 1024)
        c.cmd("NOOP", 250)
        c.quit()
        self.finish(p, queued)

    def test_enospc(self):
        p = self.start(0)
        queued = self.queue_before(p, 3)
        # full to the last block: no queue file can be opened
        left = self.fill_to(0)
        self.assertLess(left, 64 * 1024)
        c = p.session()
        # the floor is 0; a small message needs no new block
        self.assertReply(self.send(c, "small, disk full"), 250, "2.0.0")
        queued.append("small, disk full")
        # a large one needs a file: refused after the final dot, nothing
        # of it kept
        used = used_bytes(self.mnt)
        r = self.send(c, "large, disk full", self.big(MIB))
        self.assertReply(r, 452, "4.3.1")
        self.used_back_to(used, 64 * 1024)
        # 512 KiB left: the file opens, and a write fails mid-message
        self.fill_to(512 * 1024)
        used = used_bytes(self.mnt)
        r = self.send(c, "enospc", self.big(2 * MIB))
        self.assertReply(r, 452, "4.3.1")
        self.used_back_to(used, 64 * 1024)
        # deliveries keep being attempted against the full disk
        self.fill_to(0)
        n = p.log().count(b"event=deferred")
        deadline = time.monotonic() + 20
        while p.log().count(b"event=deferred") < n + 3:
            self.assertLess(time.monotonic(), deadline,
                            "no delivery attempt while the disk is full")
            time.sleep(0.1)
        c.cmd("NOOP", 250)
        c.quit()
        self.finish(p, queued)


class Ext4DiskTest(DiskTest):
    """The same on ext4 on a loop device."""
    FS = "ext4"


if __name__ == "__main__":
    unittest.main()
