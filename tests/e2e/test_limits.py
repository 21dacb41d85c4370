"""Limits and timeouts end to end: max sessions and sessions per client
(421 4.7.0 greeting, then close), errors per session (421 4.7.0),
recipients per message (452 4.5.3), the spool's free-space floor on a
tmpfs of the test's own (452 4.3.1 at MAIL, for a SIZE= that does not fit,
and after the final dot when the floor is crossed while the text streams,
the file removed), the command
deadline (idle and a command dripped a byte at a time), the DATA deadline
(one byte every second), and a slowloris crowd that is bounded in count and
in time while normal clients still finish."""

import os
import socket
import threading
import time
import unittest

from harness import ConnectionClosed, PosternTestCase, dot_stuff, message

OUTSIDER = "127.0.0.2"
MIB = 1 << 20


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class SessionLimitTest(PosternTestCase):
    def test_max_sessions(self):
        p = self.postern({"limits": {"sessions": 3}})
        held = [p.client() for _ in range(3)]
        for c in held:
            c.greeting()
        extra = p.client()
        r = extra.reply()
        self.assertReply(r, 421, "4.7.0")
        self.assertIn("too many connections", r.text)
        self.assertTrue(extra.closed(5))
        # a slot frees when a session ends
        held.pop().quit()
        deadline = time.monotonic() + 5
        while True:
            c = p.client()
            r = c.reply()
            if r.code == 220 or time.monotonic() > deadline:
                break
            c.close()
            time.sleep(0.05)
        self.assertReply(r, 220)
        c.quit()
        for c in held:
            c.quit()
        self.assertIn(b"reason=sessions ", p.log())

    def test_sessions_per_ip(self):
        p = self.postern({"limits": {"sessions_per_ip": 2}})
        held = [p.client(source=OUTSIDER) for _ in range(2)]
        for c in held:
            c.greeting()
        extra = p.client(source=OUTSIDER)
        self.assertReply(extra.reply(), 421, "4.7.0")
        self.assertTrue(extra.closed(5))
        # another client is not affected
        other = p.client()
        other.greeting()
        other.quit()
        for c in held:
            c.quit()

    def test_sessions_per_ip_v6(self):
        import harness
        if not harness.ipv6_available():
            self.fail("IPv6 loopback (::1) is needed by this test")
        port = harness.free_port("::1")
        p = self.postern({
            "limits": {"sessions_per_ip": 2, "ipv6_prefix": 64},
            "listeners": [{"address": "127.0.0.1", "port": harness.free_port()},
                          {"address": "::1", "port": port}]})
        held = [p.client(host="::1", port=port) for _ in range(2)]
        for c in held:
            c.greeting()
        extra = p.client(host="::1", port=port)
        self.assertReply(extra.reply(), 421, "4.7.0")
        for c in held:
            c.quit()

    def test_errors_per_session(self):
        p = self.postern({"limits": {"errors": 3}})
        c = p.session()
        for _ in range(3):
            self.assertReply(c.cmd("BOGUS"), 500, "5.5.2")
        r = c.cmd("BOGUS")
        # the fourth error is answered, then 421 and the connection closes
        self.assertReply(r, 500)
        self.assertReply(c.reply(), 421, "4.7.0")
        self.assertTrue(c.closed(5))

    def test_recipients_per_message(self):
        p = self.postern({"limits": {"recipients": 2}})
        c = p.session()
        c.cmd("MAIL FROM:<s@x.test>", 250)
        c.cmd("RCPT TO:<a@x.test>", 250)
        c.cmd("RCPT TO:<b@x.test>", 250)
        self.assertReply(c.cmd("RCPT TO:<c@x.test>"), 452, "4.5.3")
        c.cmd("DATA", 354)
        c.send(dot_stuff(message()))
        c.expect(250, "2.0.0")
        c.quit()


class DiskSpaceTest(PosternTestCase):
    """The spool on a tmpfs of the test's own: the free space the floor is
    measured against changes only with what postern writes (on the shared
    disk, other programs made it move by more than the test's margins)."""

    FS_SIZE = 64 * MIB

    def setUp(self):
        super().setUp()
        self.fs = self.tmpfs(self.FS_SIZE)
        self.postern_overrides = {
            "queue": {"directory": os.path.join(self.fs, "spool")}}

    def test_floor_at_mail(self):
        # more than the file system holds
        p = self.postern({"limits": {"disk_free_min": self.FS_SIZE + MIB}})
        c = p.session()
        self.assertReply(c.cmd("MAIL FROM:<s@x.test>"), 452, "4.3.1")
        c.quit()

    def test_size_and_streaming(self):
        # the free space with the spool open, then the floor 8 MiB below
        # it: a 32 MiB SIZE= cannot fit, and a 32 MiB message sent without
        # SIZE= crosses the floor while it streams. The spool prepares its
        # next log segment in the background, so segments are 1 MiB here:
        # one made after the measure takes that much of the margin.
        p = self.postern({"queue": {"segment_size": MIB}})
        floor = free_bytes(self.fs) - 8 * MIB
        p.restart({"limits": {"disk_free_min": floor,
                              "message_size": 64 * MIB}})
        c = p.session()
        self.assertReply(c.cmd("MAIL FROM:<s@x.test> SIZE=%d" % (32 * MIB)),
                         452, "4.3.1")
        self.assertReply(c.cmd("MAIL FROM:<s@x.test> SIZE=1000"), 250)
        c.cmd("RCPT TO:<r@x.test>", 250)
        c.cmd("DATA", 354)
        line = b"x" * 998 + b"\r\n"
        chunk = line * 1024
        for _ in range(32):
            c.send(chunk)
        c.send(b".\r\n")
        r = c.reply(timeout=60)
        self.assertReply(r, 452, "4.3.1")
        # the session goes on; the refused message left nothing behind
        c.cmd("NOOP", 250)
        c.quit()
        self.assertEqual(p.spool_files("incoming"), [])
        self.assertIn(b"event=disk_space_low", p.log())


class TimeoutTest(PosternTestCase):
    # No upper bound on when a deadline fires (a loaded machine runs the
    # timer late): each test's deadline is far shorter than the defaults
    # (300 s for a command, 180 s for a DATA block, 1800 s for all of
    # DATA), and a reply waited for in time tells the deadline under test
    # from the others.

    def test_idle_command(self):
        p = self.postern({"limits": {"command_timeout": 2}})
        c = p.session()
        t0 = time.monotonic()
        r = c.reply(timeout=60)
        took = time.monotonic() - t0
        self.assertReply(r, 421, "4.4.2")
        self.assertIn("timeout", r.text)
        self.assertTrue(c.closed(30))
        self.assertGreater(took, 1.5)

    def test_commands_in_time_keep_the_session(self):
        """Each command restarts the command clock: NOOPs a second apart
        for more than twice command_timeout are all answered (the timer
        armed before them fires and is armed again for the moved
        deadline), then silence ends the session at command_timeout."""
        p = self.postern({"limits": {"command_timeout": 4}})
        c = p.session()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 9:
            c.cmd("NOOP", 250, "2.0.0")
            time.sleep(1)
        t1 = time.monotonic()
        r = c.reply(timeout=60)
        self.assertReply(r, 421, "4.4.2")
        self.assertGreater(time.monotonic() - t1, 2.5)
        self.assertTrue(c.closed(30))

    def test_command_dripped(self):
        """A command sent a byte every 0.4 s does not restart the command
        clock: the session ends at command_timeout, while the command is
        still dripping (a clock restarted by each byte would let the whole
        command arrive, and NOOP would be answered 250)."""
        p = self.postern({"limits": {"command_timeout": 2}})
        c = p.session()
        t0 = time.monotonic()
        got = None
        for b in b"NOOP NOOP NOOP NOOP NOOP NOOP NOOP NOOP\r\n":
            try:
                c.send(bytes([b]))
            except OSError:
                break
            data = c.pending(0.4)
            if data:
                got = data
                break
        took = time.monotonic() - t0
        self.assertIsNotNone(got, "no reply while dripping a command")
        self.assertTrue(got.startswith(b"421 4.4.2"), got)
        self.assertGreater(took, 1.5)

    def test_data_dripped(self):
        """One byte every second keeps each block in time, but the whole
        DATA phase has data_timeout."""
        p = self.postern({"limits": {"data_block_timeout": 3,
                                     "data_timeout": 4}})
        c = p.session()
        c.cmd("MAIL FROM:<s@x.test>", 250)
        c.cmd("RCPT TO:<r@x.test>", 250)
        c.cmd("DATA", 354)
        t0 = time.monotonic()
        got = b""
        text = message()
        # up to 30 bytes (30 s): data_timeout (4 s) ends it long before,
        # and without it no deadline would while bytes keep coming
        for i in range(30):
            try:
                c.send(text[i:i + 1])
            except OSError:
                break
            got += c.pending(1.0)
            if got:
                break
        took = time.monotonic() - t0
        self.assertTrue(got.startswith(b"421 4.4.2"), got)
        self.assertGreater(took, 3)
        self.assertEqual(p.spool_files("incoming"), [])

    def test_data_block(self):
        p = self.postern({"limits": {"data_block_timeout": 2}})
        c = p.session()
        c.cmd("MAIL FROM:<s@x.test>", 250)
        c.cmd("RCPT TO:<r@x.test>", 250)
        c.cmd("DATA", 354)
        c.send(b"Subject: x\r\n\r\npartial")
        t0 = time.monotonic()
        self.assertReply(c.reply(timeout=60), 421, "4.4.2")
        self.assertGreater(time.monotonic() - t0, 1.5)
        self.assertTrue(c.closed(30))


class SlowlorisTest(PosternTestCase):
    CROWD = 40
    DEADLINE = 10       # s: command_timeout and data_timeout for the crowd

    def test_crowd(self):
        """A crowd of dripping clients from 127.0.0.2: at most
        sessions_per_ip of them get a session, every one of those is
        disconnected by the deadlines, and normal clients from 127.0.0.1
        complete transactions meanwhile: all of them while the crowd still
        holds its sessions (a server that a dripping client held up would
        serve them only once the deadlines had freed it). Orders, not
        latencies, so a loaded machine cannot fail it: the normal clients
        have the crowd's whole deadline."""
        p = self.postern({"limits": {"sessions_per_ip": 10,
                                     "command_timeout": self.DEADLINE,
                                     "data_block_timeout": self.DEADLINE - 2,
                                     "data_timeout": self.DEADLINE}})
        # only reached if postern never ends a crowd session
        stop = time.monotonic() + 6 * self.DEADLINE
        results = {"greeted": 0, "refused": 0, "held": []}
        lock = threading.Lock()

        def loris(i):
            try:
                s = socket.create_connection((p.host, p.listen_port),
                                             timeout=15,
                                             source_address=(OUTSIDER, 0))
            except OSError:
                return
            t0 = time.monotonic()
            by_postern = False
            first = b""
            try:
                first = s.recv(512)
                with lock:
                    if first.startswith(b"220"):
                        results["greeted"] += 1
                    else:
                        results["refused"] += 1
                if not first.startswith(b"220"):
                    return
                # half the crowd drips a command, half drips DATA
                if i % 2:
                    s.sendall(b"EHLO x\r\nMAIL FROM:<a@b.test>\r\n"
                              b"RCPT TO:<r@x.test>\r\nDATA\r\n")
                s.settimeout(0.5)
                while time.monotonic() < stop:
                    try:
                        s.sendall(b"X")
                        data = s.recv(4096)
                        if data == b"" or b"421" in data:
                            by_postern = True
                            break
                    except socket.timeout:
                        continue
                    except OSError:
                        by_postern = True
                        break
            finally:
                with lock:
                    if first.startswith(b"220"):
                        results["held"].append((time.monotonic() - t0,
                                                by_postern))
                s.close()

        threads = [threading.Thread(target=loris, args=(i,))
                   for i in range(self.CROWD)]
        for t in threads:
            t.start()
        # the crowd has its sessions (and its refusals) first
        deadline = time.monotonic() + 30
        while True:
            with lock:
                answered = results["greeted"] + results["refused"]
            if answered == self.CROWD or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        latencies = []
        for i in range(10):
            t0 = time.monotonic()
            c = p.session()
            c.cmd("MAIL FROM:<s@x.test>", 250)
            c.cmd("RCPT TO:<r@x.test>", 250)
            c.cmd("DATA", 354)
            c.send(dot_stuff(message(subject="normal %d" % i)))
            c.expect(250, "2.0.0")
            c.quit()
            latencies.append(time.monotonic() - t0)
        with lock:
            held_then = results["greeted"] - len(results["held"])
        for t in threads:
            t.join(30 + 6 * self.DEADLINE)
        print("\nslowloris: %d of %d crowd sessions greeted, %d refused, "
              "longest held %.1f s; 10 normal transactions max %.0f ms"
              % (results["greeted"], self.CROWD, results["refused"],
                 max((h for h, _ in results["held"]), default=0),
                 max(latencies) * 1e3))
        self.assertFalse(any(t.is_alive() for t in threads))
        self.assertEqual(results["greeted"] + results["refused"], self.CROWD)
        self.assertLessEqual(results["greeted"], 10)
        self.assertGreater(results["greeted"], 0)
        # the normal clients were served while the whole crowd was held
        self.assertEqual(held_then, results["greeted"],
                         "crowd sessions ended before the normal clients "
                         "were done")
        # every crowd session was ended by postern (421 or close), none
        # by the test giving up
        self.assertTrue(all(b for _, b in results["held"]), results["held"])
        p.wait_for_maildir(10)


if __name__ == "__main__":
    unittest.main()
