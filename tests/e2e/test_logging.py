"""test_logging.py - logging.format = "json": the same traffic (client text
full of quotes, backslashes, control bytes, UTF-8 and invalid UTF-8 in
EHLO names, unknown commands and addresses) run against a postern logging
key=value lines and one logging JSON; every JSON line parses with Python's
json as one object, and the two logs carry the same events with the same
fields and the same decoded values."""

import json
import re
import unittest

import harness
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


if __name__ == "__main__":
    unittest.main()
