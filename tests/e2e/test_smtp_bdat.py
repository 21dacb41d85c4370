"""test_smtp_bdat.py - BDAT (RFC 3030) when something goes wrong: a chunk
whose spool file cannot be opened, a chunk that fails mid-transaction, a
chunk read only to be discarded, malformed BDAT lines, and BDAT lines whose
size cannot be read. Every case checks the replies on the wire and what
reaches the maildir: no chunk of a failed transaction may start a message,
and no chunk octet may be read as a command."""

import os
import resource
import time
import unittest

from harness import PosternTestCase, queue_id


def proc_ids(pid):
    """(real uid, real gid) of a running process."""
    uid = gid = None
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                uid = int(line.split()[1])
            elif line.startswith("Gid:"):
                gid = int(line.split()[1])
    return uid, gid


def prlimit_nofile(pid, limits=None):
    """prlimit(2) RLIMIT_NOFILE of another process: get (limits None) or
    set. The kernel allows it to a caller with the target's uid and gid
    (or CAP_SYS_RESOURCE, which root in a container may lack), so when the
    ids differ (postern dropped to its account) a child takes them first."""
    uid, gid = proc_ids(pid)
    if os.getuid() == uid and os.getgid() == gid:
        return resource.prlimit(pid, resource.RLIMIT_NOFILE, *(
            [limits] if limits else []))
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            got = resource.prlimit(pid, resource.RLIMIT_NOFILE,
                                   *([limits] if limits else []))
            os.write(w, b"%d %d" % got)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read()
    _, status = os.waitpid(child, 0)
    if status != 0:
        raise AssertionError("prlimit of %d as %d:%d failed" % (pid, uid, gid))
    soft, hard = out.split()
    return int(soft), int(hard)


class FdLimit:
    """While active, the process cannot open any new descriptor: its soft
    RLIMIT_NOFILE is 1 and descriptor 0 is open (the harness gives postern
    /dev/null as its input), so open() fails with EMFILE, as when a busy
    gateway runs out of descriptors. Tests check the EMFILE in the log."""

    def __init__(self, pid):
        self.pid = pid
        self.saved = None

    def __enter__(self):
        self.saved = prlimit_nofile(self.pid)
        prlimit_nofile(self.pid, (1, self.saved[1]))
        return self

    def __exit__(self, *exc):
        prlimit_nofile(self.pid, self.saved)


class Unwritable:
    """While active, the spool's incoming/ directory is read-only to
    postern, which runs as its own account (checked: for root the mode
    would mean nothing)."""

    def __init__(self, postern):
        self.dir = os.path.join(postern.spool, "incoming")
        uid, _ = proc_ids(postern.pid)
        if uid == 0:
            raise AssertionError("postern runs as root: a directory mode "
                                 "cannot stop it")
        self.mode = None

    def __enter__(self):
        self.mode = os.stat(self.dir).st_mode & 0o7777
        os.chmod(self.dir, 0o555)
        return self

    def __exit__(self, *exc):
        os.chmod(self.dir, self.mode)


HEADER = b"Subject: first chunk\r\nX-A: 1\r\n\r\n"
TAIL = b"the rest of the message\r\n"
# A first chunk larger than the spool keeps in memory (131,060 octets): its
# spool file is created while the chunk arrives, so that creation can be
# made to fail (a small message meets the disk only at its commit).
BIG = HEADER + (b"b" * 998 + b"\r\n") * 140


class FailedChunkTest(PosternTestCase):
    start_postern = True

    def begin(self, c):
        c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
        c.cmd("RCPT TO:<b@example.net>", 250, "2.1.5")

    def test_failed_open_refuses_the_rest(self):
        """The first chunk's spool file cannot be created (incoming/ not
        writable); the next chunk, once it is writable again, must not
        start a message without the first chunk's header."""
        with self.p.session() as c:
            self.begin(c)
            with Unwritable(self.p):
                c.expect(451, "4.3.0", c.bdat(BIG))
            self.p.wait_for_log(r"event=spool_error op=write "
                                r"err=Permission denied")
            c.expect(451, "4.3.0", c.bdat(TAIL, last=True))
            c.cmd("NOOP", 250, "2.0.0")
            # the failed transaction is over: a new one starts at MAIL
            self.begin(c)
            queue_id(c.bdat(b"Subject: second\r\n\r\nwhole\r\n", last=True))
            c.quit()
        files = self.p.wait_for_delivered(1, settle=0.5)
        self.assertEqual([f.body for f in files],
                         [b"Subject: second\r\n\r\nwhole\r\n"])

    def test_failed_open_pipelined(self):
        """Every chunk pipelined behind the failed one is read by length
        and refused with the same reply; RSET ends the refusal."""
        with self.p.session() as c:
            self.begin(c)
            with FdLimit(self.p.pid):
                c.send(b"BDAT %d\r\n" % len(BIG) + BIG)
                c.expect(451, "4.3.0")
            self.p.wait_for_log(r"event=spool_error op=write "
                                r"err=Too many open files")
            c.send(b"BDAT 6\r\nNOOP\r\nBDAT %d LAST\r\n" % len(TAIL) + TAIL +
                   b"RCPT TO:<c@example.net>\r\nRSET\r\n")
            c.expect(451, "4.3.0")
            c.expect(451, "4.3.0")
            c.expect(503, "5.5.1")          # no transaction any more
            c.expect(250, "2.0.0")          # RSET
            self.assertEqual(c.pending(0.3), b"")
            self.begin(c)
            queue_id(c.bdat(b"Subject: after\r\n\r\nok\r\n", last=True))
            c.quit()
        files = self.p.wait_for_delivered(1, settle=0.5)
        self.assertEqual([f.body for f in files],
                         [b"Subject: after\r\n\r\nok\r\n"])

    def test_failed_open_then_mail(self):
        """MAIL right after the failed chunk starts a new transaction (no
        'nested MAIL'), and the refusal of chunks ends there."""
        with self.p.session() as c:
            self.begin(c)
            with FdLimit(self.p.pid):
                c.expect(451, "4.3.0", c.bdat(BIG))
            self.begin(c)
            c.expect(250, "2.0.0", c.bdat(HEADER))
            queue_id(c.bdat(TAIL, last=True))
            c.quit()
        files = self.p.wait_for_delivered(1, settle=0.5)
        self.assertEqual([f.body for f in files], [HEADER + TAIL])

    def test_failed_open_discard_has_its_own_deadline(self):
        """The chunk whose spool file could not be created is still read to
        its end: a pause inside it is not a timeout, and no reply comes
        before its last octet."""
        with self.p.session() as c:
            self.begin(c)
            size = len(BIG) + 40
            with FdLimit(self.p.pid):
                c.send(b"BDAT %d\r\n" % size + BIG)
                self.p.wait_for_log(r"event=spool_error op=write "
                                    r"err=Too many open files")
            time.sleep(0.5)
            self.assertEqual(c.pending(0.2), b"")
            c.send(b"y" * 40 + b"NOOP\r\n")
            c.expect(451, "4.3.0")
            c.expect(250, "2.0.0")


class MidTransactionTest(PosternTestCase):
    start_postern = True
    postern_overrides = {"limits": {"message_size": 1024}}

    def test_chunk_failing_mid_transaction(self):
        """A later chunk crosses limits.message_size: its 552 is given
        again to the chunks pipelined behind it (not a 503 that would
        blur a temporary and a permanent failure)."""
        with self.p.session() as c:
            c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
            c.cmd("RCPT TO:<b@example.net>", 250, "2.1.5")
            c.expect(250, "2.0.0", c.bdat(HEADER))
            c.send(b"BDAT 1200\r\n" + b"z" * 1200 +
                   b"BDAT 5\r\nabcdeBDAT 5 LAST\r\nfghij" + b"NOOP\r\n")
            c.expect(552, "5.3.4")
            c.expect(552, "5.3.4")
            c.expect(552, "5.3.4")
            c.expect(250, "2.0.0")
            c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
            c.cmd("RCPT TO:<b@example.net>", 250, "2.1.5")
            queue_id(c.bdat(b"Subject: small\r\n\r\nok\r\n", last=True))
            c.quit()
        files = self.p.wait_for_delivered(1, settle=0.5)
        self.assertEqual([f.body for f in files],
                         [b"Subject: small\r\n\r\nok\r\n"])


class DiscardedChunkTest(PosternTestCase):
    start_postern = True

    def test_bdat_without_mail_own_deadline(self):
        """A chunk sent without MAIL is discarded after 503, timed by its
        own deadline (it once met a stale data deadline: 421 after 1 ms)."""
        with self.p.client() as c:
            c.greeting()
            c.send(b"EHLO x\r\nBDAT 100\r\n" + b"q" * 50)
            c.expect(250)
            c.expect(503, "5.5.1")
            time.sleep(0.5)
            self.assertEqual(c.pending(0.2), b"")
            c.send(b"q" * 50 + b"NOOP\r\n")
            c.expect(250, "2.0.0")
            c.quit()


# Chunk text that would be commands if it were ever read as such.
SMUGGLED = (b"RSET\r\nMAIL FROM:<x@example.org>\r\nRCPT TO:<y@example.net>\r\n"
            b"DATA\r\nSubject: smuggled\r\n\r\n.\r\n")


class MalformedBdatTest(PosternTestCase):
    start_postern = True

    def test_malformed_line_consumes_its_chunk(self):
        """A BDAT line whose size is readable but which is otherwise
        malformed is refused (501) and its chunk read and dropped."""
        n = len(SMUGGLED)
        for line in (b"BDAT  %d LAST" % n,      # double space after BDAT
                     b"BDAT %d  LAST" % n,      # double space before LAST
                     b"BDAT %d LAST " % n,      # blank after LAST
                     b"BDAT %d LAST x" % n,
                     b"BDAT %d\tLAST" % n,
                     b"BDAT %d FIRST" % n):
            with self.subTest(line=line):
                with self.p.session() as c:
                    c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
                    c.cmd("RCPT TO:<b@example.net>", 250, "2.1.5")
                    c.send(line + b"\r\n" + SMUGGLED + b"NOOP\r\n")
                    c.expect(501, "5.5.4")
                    c.expect(250, "2.0.0")      # the NOOP, nothing else
                    self.assertEqual(c.pending(0.3), b"")
                    # the transaction failed: a new MAIL is needed
                    c.cmd("RCPT TO:<b@example.net>", 503, "5.5.1")
                    c.quit()
        time.sleep(0.5)
        self.assertEqual(self.p.maildir_count(), 0)

    def test_malformed_not_last_refuses_later_chunks(self):
        with self.p.session() as c:
            c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
            c.cmd("RCPT TO:<b@example.net>", 250, "2.1.5")
            c.send(b"BDAT %d FIRST\r\n" % len(HEADER) + HEADER +
                   b"BDAT %d LAST\r\n" % len(TAIL) + TAIL)
            c.expect(501, "5.5.4")
            c.expect(501, "5.5.4")
            c.cmd("BDAT 0 LAST", 503, "5.5.1")  # refusal ended at LAST
            c.quit()
        time.sleep(0.5)
        self.assertEqual(self.p.maildir_count(), 0)

    def test_overlong_line_with_readable_size(self):
        """A BDAT line over 512 octets (but under the longest command
        line) is malformed: its chunk is still consumed."""
        with self.p.session() as c:
            c.send(b"BDAT %d LAST" % len(SMUGGLED) + b" " * 600 + b"\r\n" +
                   SMUGGLED + b"NOOP\r\n")
            c.expect(501, "5.5.4")
            c.expect(250, "2.0.0")
            self.assertEqual(c.pending(0.3), b"")

    def test_unreadable_size_closes(self):
        """Without a readable size the chunk's end cannot be known: 421
        and close, never a command read from the chunk."""
        for line in (b"BDAT", b"BDAT ", b"BDAT x", b"BDAT -1", b"BDAT 10x",
                     b"BDAT 1e3", b"BDAT 99999999999999999999999",
                     b"BDAT LAST", b"bdat " + b"9" * 2000):
            with self.subTest(line=line[:40]):
                with self.p.session() as c:
                    c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
                    c.cmd("RCPT TO:<b@example.net>", 250, "2.1.5")
                    c.send(line + b"\r\n" + SMUGGLED)
                    c.expect(421, "4.5.4")
                    self.assertTrue(c.closed())
                    self.assertEqual(c.buf, b"")
        time.sleep(0.5)
        self.assertEqual(self.p.maildir_count(), 0)


if __name__ == "__main__":
    unittest.main()
