"""test_logging.py - logging.format = "json": the same traffic (client text
full of quotes, backslashes, control bytes, UTF-8 and invalid UTF-8 in
EHLO names, unknown commands and addresses) run against a postern logging
key=value lines and one logging JSON; every JSON line parses with Python's
json as one object, and the two logs carry the same events with the same
fields and the same decoded values. And logging.session_lines, the
budget of a session's command lines at info level. And the loop's lines,
written in batches (core/log.c): under concurrent sessions every line
whole and each session's in order, all of them out while postern waits
(before any stop), and through to event=stopped after SIGTERM."""

import json
import re
import threading
import unittest

import harness
import loadgen
from harness import PosternTestCase, message

# ts, pid, session and queue ids, ports and maildir file names differ
# between the two runs
VOLATILE = {"ts", "prog", "pid", "sess", "msg", "port", "listener",
            "status", "uid", "gid", "dir", "path", "hostname", "address",
            "fsyncs", "batches", "segments"}

KV_RE = re.compile(r'([A-Za-z0-9_.-]+)=("(?:[^"\\]|\\.)*"|\S*)')


def text_fields(line):
    """The fields of one key=value line, values decoded as pst_log_quote
    encodes them (\\" \\\\ \\xNN) and read as UTF-8 (U+FFFD for invalid
    bytes, as the JSON writer does)."""
    m = re.match(r"^\S+ postern\[\d+\]: (\w+) (.*)$", line)
    if not m:
        return None
    out = {"level": m.group(1)}
    for k, v in KV_RE.findall(m.group(2)):
        if v.startswith('"'):
            raw = bytearray()
            i, inner = 0, v[1:-1]
            while i < len(inner):
                c = inner[i]
                if c == "\\" and inner[i + 1] == "x":
                    raw.append(int(inner[i + 2:i + 4], 16))
                    i += 4
                elif c == "\\":
                    raw += inner[i + 1].encode()
                    i += 2
                else:
                    raw += c.encode()
                    i += 1
            v = raw.decode("utf-8", "replace")
        out[k] = v
    return out


def traffic(p):
    c = p.client()
    c.greeting()
    c.send(b'EHLO we"ird\\name\x01\xc3\xa9\xff\r\n')
    c.reply()
    c.send(b'XYZZY "q" \\ \x7f \xe2\x82\xac \xe2\x82\r\n')
    c.expect(500)
    r = c.transaction("s\xe9nder@example.org", ["r\u00e9@example.net"],
                      message(), mail_params="SMTPUTF8")
    harness.check_reply(r, 250)
    c.quit()


class JSONLogs(PosternTestCase):

    def run_one(self, fmt):
        p = self.postern({"logging": {"format": fmt, "level": "debug"}},
                         start=False, name="postern-" + fmt)
        p.start(wait=False)
        p.wait_for_log(r'event=ready\b|"event":"ready"')
        traffic(p)
        p.wait_for_maildir(1)
        p.wait_for_log(r'event=removed|"event":"removed"')
        p.stop()
        return [l for l in p.log().decode("utf-8").splitlines()
                if not l.startswith("=== harness")]

    def test_same_fields_as_text(self):
        text = self.run_one("text")
        js = self.run_one("json")
        objs = []
        for line in js:
            o = json.loads(line)        # every line, or the test fails
            self.assertIsInstance(o, dict, line)
            for k in ("ts", "level", "pid", "prog"):
                self.assertIn(k, o, line)
            self.assertRegex(o["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            objs.append(o)
        kv = [text_fields(l) for l in text]
        self.assertNotIn(None, kv, text)

        def shape(fields):
            return [(k, None if k in VOLATILE else v)
                    for k, v in fields.items() if k not in
                    ("ts", "prog", "pid")]
        # a session's lines keep their order; lines of the queue and the
        # process may interleave with them differently from run to run
        def split(lines):
            sess = [shape(f) for f in lines if "sess" in f]
            rest = sorted(repr(shape(f)) for f in lines if "sess" not in f)
            return sess, rest
        self.assertEqual(split(kv), split(objs))
        # the hostile bytes arrived decoded, once and correctly
        helo = [o for o in objs if o.get("event") == "helo"][0]
        self.assertEqual(helo["name"], 'we"ird\\name\x01\u00e9\ufffd')
        unk = [o for o in objs if o.get("event") == "unknown_command"][0]
        self.assertEqual(unk["line"], 'XYZZY "q" \\ \x7f \u20ac \ufffd')
        mail = [o for o in objs if o.get("event") == "mail"][0]
        self.assertEqual(mail["from"], "s\u00e9nder@example.org")
        self.assertTrue(all('"event":' in l for l in js))


class SessionLogBudget(PosternTestCase):
    """logging.session_lines: a client decides how many commands it sends,
    not how many lines they write at info level. Past the budget its
    command lines (helo, mail, rcpt) go to debug, once noted; an accepted
    message makes the budget whole again; the disconnect line says how
    many were held back. Lines that record what became of a message are
    not budgeted, nor are refusals (each counts toward limits.errors)."""

    BUDGET = 10

    def info_events(self, p, sess):
        out = []
        for line in p.log().decode().splitlines():
            m = re.search(r" (info|debug) sess=%s .*?event=(\w+)" % sess,
                          line)
            if m:
                out.append((m.group(1), m.group(2)))
        return out

    def run_session(self, level):
        # a filter that logs at RCPT: its lines share the budget
        p = self.postern({"logging": {"level": level,
                                      "session_lines": self.BUDGET},
                          "filters": [{"module": "headers", "rules": [
                              {"recipient": r"^b@example\.org$",
                               "replace": "c@example.org"}]}]})
        c = p.client()
        c.greeting()
        # a client that reads its replies: 100 EHLO, 11 MAIL/RCPT/RSET
        c.send(b"EHLO x\r\n" * 100)
        c.replies(100)
        for _ in range(11):
            c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>"
                   b"\r\nRSET\r\n")
            c.replies(3)
        # the message's MAIL and RCPT lines are still past the budget; its
        # acceptance makes it whole again
        harness.check_reply(c.transaction(
            "a@example.org", "b@example.org", message("budget")), 250)
        c.ehlo()
        c.ehlo()
        c.quit()
        m = p.wait_for_log(r"sess=(\w+) event=disconnect reason=\"quit\" "
                           r"errors=0 log_suppressed=(\d+)")
        return p, m.group(1).decode(), int(m.group(2))

    def test_budget_at_info(self):
        p, sess, suppressed = self.run_session("info")
        ev = self.info_events(p, sess)
        cmd = [e for e in ev
               if e[1] in ("helo", "mail", "rcpt", "envelope_rewrite")]
        # 100 EHLO, 11 MAIL/RCPT (with the filter's line), the message's
        # 3 lines before it, 2 EHLO after it: the first 10 and the last 2
        # at info
        self.assertEqual(suppressed, 100 + 3 * 11 + 3 - self.BUDGET)
        self.assertEqual(cmd, [("info", "helo")] * self.BUDGET +
                         [("info", "helo")] * 2)
        self.assertEqual([e for e in ev if e[1] == "log_budget"],
                         [("info", "log_budget")])
        # what became of the message is logged whatever the budget
        for e in ("data", "status", "connect", "disconnect"):
            self.assertIn(("info", e), ev)
        self.assertRegex(p.log().decode(),
                         r"event=log_budget lines=%d action=debug" %
                         self.BUDGET)

    def test_held_back_lines_are_at_debug(self):
        p, sess, suppressed = self.run_session("debug")
        ev = self.info_events(p, sess)
        self.assertEqual(len([e for e in ev if e == ("debug", "helo")]), 90)
        self.assertEqual(len([e for e in ev if e[1] in ("mail", "rcpt")
                              and e[0] == "debug"]), 24)
        self.assertEqual(len([e for e in ev if e == ("debug",
                                                     "envelope_rewrite")]),
                         12)
        self.assertEqual(suppressed, 126)


class BatchedLines(PosternTestCase):
    """The loop thread's lines are written a buffer at a time. They must
    still reach the log whole, in each session's order, without waiting
    for more traffic or a stop, and nothing may be left behind at SIGTERM.
    smtp-source: 200 messages over 20 concurrent sessions."""

    MESSAGES = 200
    ORDER = ["connect", "helo", "mail", "rcpt", "data", "disconnect"]

    def check(self, fmt):
        p = self.postern({"logging": {"format": fmt}}, start=False)
        p.start(wait=False)
        p.wait_for_log(r'event=ready\b|"event":"ready"')
        code, _, out = loadgen.smtp_source(p.host, p.listen_port,
                                           self.MESSAGES, 20, timeout=300)
        self.assertEqual(code, 0, out)
        p.wait_for_maildir(self.MESSAGES, timeout=120)
        # nothing more happens: the last lines must be out all the same
        ev = r'event=removed\b' if fmt == "text" else r'"event":"removed"'
        p.wait_for_log(ev, timeout=30, count=self.MESSAGES)
        p.stop()
        lines = [l for l in p.log().decode().splitlines()
                 if not l.startswith("=== harness")]
        fields = []
        for line in lines:
            if fmt == "json":
                f = json.loads(line)        # a torn line would not parse
            else:
                f = text_fields(line)
                self.assertIsNotNone(f, line)
                self.assertRegex(line, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:"
                                 r"\d\d\.\d{3}Z postern\[\d+\]: \w+ ")
            fields.append(f)
        sessions, msgs = {}, {}
        for f in fields:
            if "sess" in f:
                sessions.setdefault(f["sess"], []).append(f["event"])
            if "msg" in f:
                msgs.setdefault(f["msg"], []).append(f["event"])
        done = [s for s, e in sessions.items() if "data" in e]
        self.assertEqual(len(done), self.MESSAGES)
        for s in done:
            self.assertEqual([e for e in sessions[s] if e in self.ORDER],
                             self.ORDER, s)
        self.assertEqual(len(msgs), self.MESSAGES)
        for m, e in msgs.items():
            self.assertEqual([x for x in e if x in
                              ("data", "delivered", "removed")],
                             ["data", "delivered", "removed"], m)
        self.assertEqual(fields[-1]["event"], "stopped")

    def test_text(self):
        self.check("text")

    def test_json(self):
        self.check("json")


if __name__ == "__main__":
    unittest.main()
