"""test_spool_durability.py - a 250 after DATA is never sent before the
message is durable: its group in a log segment written and the segment
synced, or (a message too large for the log) its file and directory entry
synced.

kill -9 alone proves nothing here: the page cache survives a killed
process. So this test records the gateway's system calls with `strace -f`
while messages (small ones, and every sixth one large) are accepted over
several concurrent connections, then checks, for every "250 2.0.0 Ok:
queued as QID" reply written to a client, that before that write began:

  small (a write to spool/log/seg-N holding QID):
  1. that write had returned,
  2. an fdatasync (or fsync) of the same segment had begun after (1) and
     returned 0;

  large (no such write):
  1. fsync of the file spool/incoming/QID had returned 0,
  2. the rename of QID from incoming/ into active/ had returned 0,
  3. an fsync of the directory spool/active had returned 0 after (2);

and that once the gateway is ready no sync of any file runs on the thread
that writes the replies (the loop).

The same check must fail on postern-nosync, a build of postern with the
spool's fsyncs compiled out (POSTERN_TEST_NO_SYNC, see queue/CMakeLists.txt):
that shows the check can see a missing sync.
"""

import os
import re
import signal
import stat
import subprocess
import threading
import time
import unittest

import harness

STRACE = "/usr/bin/strace"
NOSYNC_BIN = os.path.join(os.environ.get("POSTERN_BUILD", os.path.join(
    os.path.dirname(harness.POSTERN_BIN), "..")), "bin", "postern-nosync")

MESSAGES = 24
CONNECTIONS = 6

LINE_RE = re.compile(r"^(\d+) +(.*)$")
CALL_RE = re.compile(r"^(\w+)\((.*)$")
RESUMED_RE = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
RESULT_RE = re.compile(r"\)\s+=\s+(-?\d+)")
QUEUED_RE = re.compile(r"250 2\.0\.0 Ok: queued as ([0-9A-F]{16})")


def parse_trace(path):
    """Events in the order strace saw them: (index, tid, call, args, phase,
    result) where phase is 'entry' (the call began) or 'exit' (it returned
    with result). A call seen whole gives both, at the same index."""
    events = []
    pending = {}        # tid -> (call, args) of an unfinished call
    with open(path, "r", errors="replace") as f:
        for i, raw in enumerate(f):
            m = LINE_RE.match(raw.rstrip("\n"))
            if not m:
                continue
            tid, rest = int(m.group(1)), m.group(2)
            r = RESUMED_RE.match(rest)
            if r:
                call, args = pending.pop(tid, (r.group(1), ""))
                res = RESULT_RE.search(r.group(2))
                events.append((i, tid, call, args + r.group(2), "exit",
                               int(res.group(1)) if res else None))
                continue
            c = CALL_RE.match(rest)
            if not c:
                continue
            call, args = c.group(1), c.group(2)
            if args.endswith("<unfinished ...>"):
                pending[tid] = (call, args)
                events.append((i, tid, call, args, "entry", None))
                continue
            res = RESULT_RE.search(args)
            events.append((i, tid, call, args, "entry", None))
            events.append((i, tid, call, args, "exit",
                           int(res.group(1)) if res else None))
    return events


def check_order(events, spool, qids):
    """Returns (checked QIDs, list of violations as text, QIDs committed
    to the log)."""
    inc = os.path.join(spool, "incoming")
    act = os.path.join(spool, "active")
    log = os.path.join(spool, "log")
    file_synced = {}    # qid -> index of the fsync's return
    renamed = {}        # qid -> index of the rename's return
    dir_syncs = []      # indexes of returns of fsync(active/)
    group_written = {}  # qid -> (segment path, index of the write's return)
    seg_syncs = []      # (segment path, index of entry, index of return)
    sync_entry = {}     # tid -> (path, index) of a sync under way
    sync_tids = set()   # threads that synced once the gateway was ready
    ready = None        # index of the "event=ready" log line
    replies = []        # (index, tid, qid) of 250 writes (entry)
    for i, tid, call, args, phase, res in events:
        if ready is None and call == "write" and "event=ready" in args:
            ready = i
        if call in ("fsync", "fdatasync"):
            m = re.match(r"\d+<([^>]*)>", args)
            if not m:
                continue
            path = m.group(1)
            if phase == "entry":
                sync_entry[tid] = (path, i)
                continue
            began = sync_entry.pop(tid, (path, i))[1]
            if res != 0:
                continue
            if ready is not None:       # start-up (recovery) syncs aside
                sync_tids.add(tid)
            if os.path.dirname(path) == inc:
                file_synced.setdefault(os.path.basename(path), i)
            elif path == act:
                dir_syncs.append(i)
            elif os.path.dirname(path) == log:
                seg_syncs.append((path, began, i))
        elif call in ("pwrite64", "pwritev", "pwritev2", "write", "writev") \
                and phase == "exit" and res is not None and res > 0:
            m = re.match(r"\d+<([^>]*)>", args)
            if m and os.path.dirname(m.group(1)) == log:
                for q in qids:
                    if q in args and q not in group_written:
                        group_written[q] = (m.group(1), i)
        elif call in ("rename", "renameat", "renameat2") and phase == "exit" \
                and res == 0 and inc in args and act in args:
            m = re.search(r'"([0-9A-F]{16})"', args)
            if m:
                renamed.setdefault(m.group(1), i)
        elif call in ("write", "writev", "sendmsg", "sendto") and \
                phase == "entry":
            for q in QUEUED_RE.findall(args):
                replies.append((i, tid, q))
    problems = []
    reply_tids = set(t for _, t, _ in replies)
    for w, tid, q in replies:
        if q in group_written:
            seg, wr = group_written[q]
            if wr >= w:
                problems.append("%s: 250 written (trace line %d) before its "
                                "group's write returned" % (q, w + 1))
            elif not any(p == seg and wr < b and e < w
                         for p, b, e in seg_syncs):
                problems.append("%s: 250 written (trace line %d) without a "
                                "sync of %s begun after its group was "
                                "written (line %d) and returned before it"
                                % (q, w + 1, os.path.basename(seg), wr + 1))
            continue
        fs = file_synced.get(q)
        rn = renamed.get(q)
        if fs is None or fs >= w:
            problems.append("%s: 250 written (trace line %d) before the "
                            "fsync of incoming/%s returned" % (q, w + 1, q))
            continue
        if rn is None or rn >= w:
            problems.append("%s: 250 written (line %d) before the rename "
                            "into active/" % (q, w + 1))
            continue
        if not any(rn < d < w for d in dir_syncs):
            problems.append("%s: 250 written (line %d) without an fsync of "
                            "active/ between the rename (line %d) and it"
                            % (q, w + 1, rn + 1))
    if ready is None:
        problems.append("no event=ready in the trace")
    if sync_tids & reply_tids:
        problems.append("a sync ran on the thread that writes replies (tid "
                        "%s)" % sorted(sync_tids & reply_tids))
    return [q for _, _, q in replies], problems, sorted(group_written)


def strace_wrapper(tmp, binary, trace):
    """A script that runs binary under strace; harness.Postern execs it."""
    path = os.path.join(tmp, "postern-strace.sh")
    with open(path, "w") as f:
        f.write("#!/bin/sh\nexec %s -f -qq -y -s 256 -e signal=none "
                "-e trace=fsync,fdatasync,rename,renameat,renameat2,"
                "write,writev,pwrite64,pwritev,pwritev2,sendmsg,sendto "
                "-o %s %s \"$@\"\n"
                % (STRACE, trace, binary))
    os.chmod(path, stat.S_IRWXU)
    return path


def tracee_pid(strace_pid):
    """The traced postern: strace's child."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            with open("/proc/%d/task/%d/children" % (strace_pid, strace_pid)
                      ) as f:
                kids = f.read().split()
            if kids:
                return int(kids[0])
        except FileNotFoundError:
            return None
        time.sleep(0.02)
    return None


def send_messages(p, n, connections):
    """n messages over `connections` concurrent sessions; returns the QIDs
    of the 250 replies."""
    qids, errors = [], []
    lock = threading.Lock()

    def worker(k):
        try:
            for j in range(k, n, connections):
                with p.session() as c:
                    c.cmd("MAIL FROM:<s%d@example.org>" % j, 250)
                    c.cmd("RCPT TO:<r%d@example.net>" % j, 250)
                    c.cmd("DATA", 354)
                    # every sixth is too large for the log: a file
                    body = ("L" * 998 + "\r\n") * 200 if j % 6 == 5 else None
                    c.send(harness.message(subject="durable %d" % j,
                                           **({"body": body} if body
                                              else {})) + b".\r\n")
                    r = c.reply()
                    m = QUEUED_RE.search(str(r))
                    if r.code != 250 or not m:
                        raise AssertionError("DATA got %s" % r)
                    with lock:
                        qids.append(m.group(1))
                    c.quit()
        except Exception as e:      # reported by the main thread
            with lock:
                errors.append(repr(e))

    ts = [threading.Thread(target=worker, args=(k,))
          for k in range(connections)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    if errors:
        raise AssertionError("client errors: %s" % errors[:3])
    return qids


class SpoolDurability(harness.PosternTestCase):

    def run_traced(self, binary):
        if not os.path.exists(STRACE):
            self.fail("strace is missing (tools/setup installs it)")
        trace = os.path.join(self.tmp, "trace.txt")
        wrapper = strace_wrapper(self.tmp, binary, trace)
        p = self.postern(binary=wrapper, start=False)
        p.start()
        pid = tracee_pid(p.pid)
        self.assertIsNotNone(pid, "no traced postern process")

        def kill_tracee():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.addCleanup(kill_tracee)
        qids = send_messages(p, MESSAGES, CONNECTIONS)
        self.assertEqual(len(set(qids)), MESSAGES)
        p.wait_for_maildir(MESSAGES, timeout=30)
        # stop the traced gateway itself; strace exits with it
        os.kill(pid, signal.SIGTERM)
        p.proc.wait(timeout=30)
        harness._forget_proc(p.proc)
        p.proc = None
        return qids, parse_trace(trace), p

    def test_250_follows_sync(self):
        qids, events, p = self.run_traced(harness.POSTERN_BIN)
        checked, problems, in_log = check_order(events, p.spool, qids)
        self.assertEqual(sorted(checked), sorted(qids),
                         "every 250 reply must be seen in the trace")
        self.assertEqual(problems, [], "\n".join(problems[:10]))
        # both kinds were seen: the small ones in the log (once its first
        # segment is ready), the large ones as files
        self.assertGreaterEqual(len(in_log), MESSAGES // 2)
        self.assertGreaterEqual(len(qids) - len(in_log), MESSAGES // 6)
        syncs = sum(1 for e in events if e[2] in ("fsync", "fdatasync")
                    and e[4] == "exit")
        print("\n# %d messages over %d connections: 250s checked %d (%d in "
              "the log), sync calls %d (commit and delivery), violations 0"
              % (MESSAGES, CONNECTIONS, len(checked), len(in_log), syncs))

    def test_check_fails_without_syncs(self):
        self.assertTrue(os.path.exists(NOSYNC_BIN),
                        "%s is not built" % NOSYNC_BIN)
        qids, events, p = self.run_traced(NOSYNC_BIN)
        checked, problems, _ = check_order(events, p.spool, qids)
        self.assertEqual(sorted(checked), sorted(qids))
        # every acknowledged message lacks its syncs: the check sees it
        self.assertEqual(len(problems), len(qids), "\n".join(problems[:5]))
        print("\n# postern-nosync: %d of %d 250s flagged" %
              (len(problems), len(qids)))


if __name__ == "__main__":
    unittest.main()
