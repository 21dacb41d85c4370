"""test_filters.py - the filter chain end to end: postern on loopback with a
`filters` section, driven by a raw SMTP client, delivering to a maildir;
what arrives is checked with Python's email parser and byte for byte.

Covers: every headers rule kind (add, remove, capture rewrite, subject tag,
masquerading of tricky address lists, envelope rewriting with ORCPT), the
Authentication-Results trust boundary, conditions that see an earlier
filter's edit, untouched headers and MIME parts byte-identical, a
catastrophic-backtracking regex stopped by its limit (each failure mode),
the external module loaded with dlopen (reject, quarantine and release,
discard, a pending verdict while another session flows, its deadline, a
client that leaves while its verdict is pending), a mismatched module
refused, and check-config errors with file and line.
"""

import email
import email.policy
import os
import re
import subprocess
import time
import unittest

from harness import POSTERN_BIN, PosternTestCase

BUILD = os.environ.get("POSTERN_BUILD") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "build")
EXAMPLE = os.path.join(BUILD, "lib", "pst_example.so")
EXAMPLE_BAD = os.path.join(BUILD, "lib", "pst_example_badapi.so")


def parse(raw):
    return email.message_from_bytes(raw, policy=email.policy.default)


def message(headers, body=b"Hello.\r\n"):
    return b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def send(p, msg, rcpts=("user@example.org",), sender="sender@example.com",
         final=250, final_enh=None):
    """One transaction; returns the reply to the final dot."""
    c = p.session()
    try:
        c.cmd("MAIL FROM:<%s>" % sender, 250)
        for r in rcpts:
            c.cmd("RCPT TO:<%s>" % r, 250)
        c.cmd("DATA", 354)
        c.send(msg.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        r = c.reply(timeout=20)
        if final is not None:
            if r.code != final:
                raise AssertionError("final reply %s, want %d; log:\n%s"
                                     % (r, final, p.log_tail()))
            if final_enh and not r.text.startswith(final_enh):
                pass
        c.quit()
        return r
    finally:
        c.close()


HEADERS_RULES = {
    "module": "headers",
    "rules": [
        {"remove": "^X-Spam-"},
        {"rewrite": "Subject", "match": r"^\[ext\] *(.*)$",
         "replace": "$1 (was external)"},
        {"tag_subject": "[CHECKED]"},
        {"add": "X-Gateway", "value": "postern", "top": True},
        {"masquerade": "corp.example", "as": "example.com"},
        {"recipient": r"^postmaster@(.*)$", "replace": "admin@$1"},
        {"sender": r"^(.*)@corp\.example$", "replace": "$1@example.com"},
    ],
}

RECEIVED = (b"Received: from relay.example (relay.example [192.0.2.7])\r\n"
            b"\tby mx.example with ESMTP; Sun, 22 Nov 2026 01:00:00 +0000")
MIME_BODY = (b"--b1\r\n"
             b"Content-Type: text/plain; charset=utf-8\r\n"
             b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
             b"caf=C3=A9 =\r\nline\r\n"
             b"--b1\r\n"
             b"Content-Type: application/octet-stream; name=\"a.bin\"\r\n"
             b"Content-Transfer-Encoding: base64\r\n\r\n"
             b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\r\n"
             b"--b1--\r\n")


class HeadersModule(PosternTestCase):
    postern_overrides = {"authserv_id": "mx.postern.test",
                         "filters": [HEADERS_RULES]}
    start_postern = True

    def test_rules_at_the_downstream(self):
        msg = message([
            RECEIVED,
            b"Authentication-Results: mx.postern.test; spf=pass "
            b"smtp.mailfrom=forged.example",
            b"Authentication-Results: other.example; dkim=pass",
            b'From: "Doe, John" <john@corp.example>',
            b"To: (team, all) dev@sub.corp.example, Friends: a@corp.example,"
            b"\r\n \"x@corp.example\" <b@other.example>;",
            b"Cc: =?UTF-8?B?SsOpcsO0bWU=?= <j@corp.example>",
            b"Subject: [ext] quarterly report",
            b"X-Spam-Score: 9",
            b"X-Spam-Flag: YES",
            b"Message-ID: <1@relay.example>",
            b"MIME-Version: 1.0",
            b"Content-Type: multipart/mixed; boundary=b1",
        ], MIME_BODY)
        send(self.p, msg, rcpts=("postmaster@example.org", "u@example.org"),
             sender="alice@corp.example")
        got = self.p.wait_for_delivered(2)
        by_rcpt = {d.delivered_to: d for d in got}
        # envelope: recipient routed to the rewritten address, sender too
        self.assertEqual(sorted(by_rcpt), ["admin@example.org",
                                           "u@example.org"])
        d = by_rcpt["u@example.org"]
        self.assertEqual(d.return_path, "<alice@example.com>")
        m = parse(d.body)
        self.assertEqual(m["X-Gateway"], "postern")
        self.assertEqual(str(m["Subject"]),
                         "[CHECKED] quarterly report (was external)")
        self.assertIsNone(m["X-Spam-Score"])
        self.assertIsNone(m["X-Spam-Flag"])
        ars = m.get_all("Authentication-Results")
        self.assertEqual(ars, ["other.example; dkim=pass"])
        self.assertEqual([a.addr_spec for a in m["From"].addresses],
                         ["john@example.com"])
        self.assertEqual(m["From"].addresses[0].display_name, "Doe, John")
        to = [a.addr_spec for a in m["To"].addresses]
        self.assertEqual(to, ["dev@example.com", "a@example.com",
                              "b@other.example"])
        cc = m["Cc"].addresses[0]
        self.assertEqual((cc.display_name, cc.addr_spec),
                         ("J\u00e9r\u00f4me", "j@example.com"))
        # untouched fields and every MIME part: byte-identical
        self.assertIn(RECEIVED + b"\r\n", d.body)
        self.assertIn(b"Message-ID: <1@relay.example>\r\nMIME-Version: 1.0"
                      b"\r\nContent-Type: multipart/mixed; boundary=b1\r\n"
                      b"\r\n" + MIME_BODY, d.body)
        self.assertTrue(d.body.endswith(b"\r\n\r\n" + MIME_BODY))
        parts = [p.get_content() for p in m.iter_parts()]
        self.assertEqual(parts[0], "caf\u00e9 line")
        self.assertEqual(parts[1], bytes(range(32)))
        # a message no rule touches arrives exactly as sent
        plain = message([RECEIVED, b"Subject: [CHECKED] already",
                         b"From: x@elsewhere.example"])
        send(self.p, plain)
        got = self.p.wait_for_delivered(3)
        last = [g for g in got if g.body.endswith(plain)]
        self.assertEqual(len(last), 1)
        # the original text is what the spool kept; the log names edits
        self.p.wait_for_log("event=status result=queued")

    def test_line_that_is_no_field_ends_the_header(self):
        # the filters see the header the message model and readers see: a
        # line that is no field ("X-Spam-Fo", folded or not) ends it, so
        # what follows is body text the rules neither remove nor rewrite,
        # and a field added at the header's end goes before that line
        # (once a second reading took "X-Spam-Fo\r\n o" for a field name,
        # removed it and the X-Spam-Score after it from the body)
        body = b"X-Spam-Fo\r\n o: 1\r\nX-Spam-Score: 9\r\n\r\nHello.\r\n"
        msg = b"Subject: hi\r\n" + body
        send(self.p, msg)
        d = self.p.wait_for_delivered(1)[0]
        self.assertTrue(d.body.endswith(b"Subject: [CHECKED] hi\r\n" + body),
                        d.body)
        self.assertIsNone(parse(d.body)["X-Spam-Score"])
        log = self.p.log()
        self.assertNotIn(b"op=remove", log)
        for line in log.splitlines():
            self.assertRegex(line, rb"^(=== harness|\d{4}-\d\d-\d\dT)",
                             "a log line that is not an event")

    def test_forged_auth_results_removed(self):
        # RFC 8601 authserv-ids behind comments and in quotes are ours too;
        # a field that does not parse is removed; others' fields stay
        forged = [b"(x) mx.postern.test; dkim=pass",
                  b'"mx.postern.test"; dmarc=pass',
                  b"(a (nested) one)\r\n \"MX.Postern.Test\" 1; spf=pass",
                  b"(unclosed mx.postern.test; dkim=pass",
                  b"other.example 2; dkim=pass"]
        kept = [b"(mx.postern.test) other.example; dkim=pass",
                b'"other.example"; dkim=pass']
        msg = message([b"Authentication-Results: " + v
                       for v in forged + kept] + [b"Subject: ar"])
        send(self.p, msg)
        d = self.p.wait_for_delivered(1)[0]
        head = d.body.split(b"\r\n\r\n", 1)[0]
        got = [ln for ln in head.split(b"\r\n")
               if ln.startswith(b"Authentication-Results:")]
        self.assertEqual(got, [b"Authentication-Results: " + v
                               for v in kept])
        self.assertNotIn(b"mx.postern.test;", head)
        self.assertNotIn(b"Postern", head)
        self.p.wait_for_log("event=forged_auth_results_removed why=unparsable")
        self.p.wait_for_log("event=forged_auth_results_removed why=version")

    def test_long_subject_refolded_and_encoded(self):
        msg = message([b"Subject: [ext] " + b"word " * 40 +
                       "caf\u00e9".encode()])
        send(self.p, msg)
        d = self.p.wait_for_delivered(1)[0]
        head = d.body.split(b"\r\n\r\n", 1)[0]
        for line in head.split(b"\r\n"):
            self.assertLessEqual(len(line), 998)
        subj = [ln for ln in head.split(b"\r\n") if ln.startswith(b"Subject:")]
        self.assertLessEqual(len(subj[0]), 78)
        self.assertIn(b"=?UTF-8?B?", head)     # not SMTPUTF8: encoded
        m = parse(d.body)
        self.assertTrue(str(m["Subject"]).endswith(
            "caf\u00e9 (was external)"))


class HeadersRelayed(PosternTestCase):
    """The headers module's edits on a relayed message: what the delivery
    client sends is the edited text, byte for byte, whether the message is
    small (read and edited on the loop from one buffer) or larger than a
    buffer (read off the loop); every untouched field and part as sent."""

    RULES = {"module": "headers", "rules": [
        {"remove": "^X-Originating-IP$"},
        {"rewrite": "Subject", "match": r"^\s*\[SPAM\]\s*",
         "replace": ""},
        {"add": "X-Relayed-By", "value": "postern"},
    ]}
    HEAD = [b"From: a@example.com",
            b"To: b@example.org,\r\n\t c@example.org",
            b"X-Originating-IP: [192.0.2.1]",
            b"Subject: [SPAM]  hello there",
            b"Message-ID:  <1@example.com>",
            b"MIME-Version: 1.0",
            b"Content-Type: multipart/mixed; boundary=b1"]
    EDITED = (b"From: a@example.com\r\n"
              b"To: b@example.org,\r\n\t c@example.org\r\n"
              b"Subject: hello there\r\n"
              b"Message-ID:  <1@example.com>\r\n"
              b"MIME-Version: 1.0\r\n"
              b"Content-Type: multipart/mixed; boundary=b1\r\n"
              b"X-Relayed-By: postern\r\n"
              b"\r\n")

    def test_edited_bytes_at_the_downstream(self):
        ds = self.downstream()
        p = self.postern({"filters": [self.RULES],
                          "delivery": {"default_route": ds.route(),
                                       "retry_min": 1, "retry_max": 2}})
        big = b"".join(b"line %06d " % i + b"x" * 64 + b"\r\n"
                       for i in range(4000))
        bodies = [MIME_BODY,
                  MIME_BODY[:-8] + big + b"--b1--\r\n"]    # > 128 KiB
        self.assertGreater(len(bodies[1]), 300000)
        for i, body in enumerate(bodies):
            send(p, message(self.HEAD, body))
            got = ds.wait_for_transactions(i + 1, timeout=30)[i].data
            # postern's Received field first, then the edited message
            first = re.match(rb"Received: .*?\r\n(?![ \t])", got, re.S)
            self.assertIsNotNone(first, got[:200])
            self.assertEqual(got[first.end():], self.EDITED + body)

    def test_two_routes_get_the_same_edited_bytes(self):
        # one attempt, two parts: one reads through the queue's reader,
        # the other through its own; a maildir part through a third
        ds1, ds2 = self.downstream(), self.downstream()
        p = self.postern({"filters": [self.RULES],
                          "delivery": {"default_route": ds1.route(),
                                       "retry_min": 1, "retry_max": 2,
                                       "routes": [
                                           {"domain": "two.test",
                                            "route": ds2.route()},
                                           {"domain": "box.test",
                                            "route": "maildir:" +
                                            self.tmp + "/box"}]}})
        send(p, message(self.HEAD, MIME_BODY),
             rcpts=("a@one.test", "b@two.test", "c@box.test"))
        got = [ds.wait_for_transactions(1, timeout=30)[0].data
               for ds in (ds1, ds2)]
        box = p.wait_for_maildir(1, maildir=self.tmp + "/box")[0]
        self.assertTrue(box.startswith(b"Return-Path: <sender@example.com>"
                                       b"\r\nDelivered-To: c@box.test\r\n"),
                        box[:100])
        got.append(box[box.index(b"Received: "):])
        for data in got:
            first = re.match(rb"Received: .*?\r\n(?![ \t])", data, re.S)
            self.assertIsNotNone(first, data[:200])
            self.assertEqual(data[first.end():], self.EDITED + MIME_BODY)


class ConditionsAndLimits(PosternTestCase):

    def test_condition_sees_earlier_filter(self):
        p = self.postern({"filters": [
            {"module": "headers", "rules": [
                {"add": "X-Class", "value": "bulk",
                 "if_header": "List-Id"}]},
            {"module": "headers", "rules": [
                {"tag_subject": "[BULK]", "if_header": "X-Class",
                 "if_match": "^bulk$"}]},
        ]})
        send(p, message([b"Subject: news", b"List-Id: <l.example>"]))
        send(p, message([b"Subject: personal"]))
        got = sorted((parse(d.body) for d in p.wait_for_delivered(2)),
                     key=lambda m: str(m["Subject"]))
        self.assertEqual(str(got[0]["Subject"]), "[BULK] news")
        self.assertEqual(got[0]["X-Class"], "bulk")
        self.assertEqual(str(got[1]["Subject"]), "personal")
        self.assertIsNone(got[1]["X-Class"])

    def _backtrack(self, failure):
        rule = {"module": "headers", "match_limit": 10000,
                "rules": [{"rewrite": "Subject", "match": "^(a+)+$",
                           "replace": "x"}]}
        if failure:
            rule["failure"] = failure
        return self.postern({"filters": [rule]})

    def test_catastrophic_regex_tempfail(self):
        p = self._backtrack(None)
        t0 = time.monotonic()
        r = send(p, message([b"Subject: " + b"a" * 40 + b"b"]), final=451)
        # without match_limit the backtracking would take hours
        self.assertLess(time.monotonic() - t0, 60)
        self.assertTrue(r.text.startswith("4.3.0"), r)
        p.wait_for_log("event=filter_fail filter=headers")
        time.sleep(0.3)
        self.assertEqual(p.maildir_count(), 0)

    def test_catastrophic_regex_accept_and_reject(self):
        p = self._backtrack("accept")
        msg = message([b"Subject: " + b"a" * 40 + b"b"])
        send(p, msg)
        d = p.wait_for_delivered(1)[0]
        self.assertTrue(d.body.endswith(msg))   # unfiltered, untouched
        p.stop()
        p2 = self._backtrack("reject")
        r = send(p2, msg, final=550)
        self.assertTrue(r.text.startswith("5.7.1"), r)


class ExternalModule(PosternTestCase):
    def setUp(self):
        super().setUp()
        # built with postern (filters/examples): missing means a broken
        # build, which must fail here rather than test less
        for so in (EXAMPLE, EXAMPLE_BAD):
            self.assertTrue(os.path.exists(so), "%s was not built" % so)

    def example(self, **kw):
        conf = {"module": "example", "path": EXAMPLE,
                "reject_word": "forbidden", "quarantine_word": "suspect",
                "discard_word": "junk", "slow_word": "slow", "slow_ms": 600}
        conf.update(kw)
        return self.postern({"filters": [conf]})

    def test_loaded_edits_and_rejects(self):
        p = self.example()
        send(p, message([b"Subject: hello"]))
        m = parse(p.wait_for_delivered(1)[0].body)
        self.assertEqual(m["X-Example-Filter"], "seen by the example module")
        r = send(p, message([b"Subject: a forbidden thing"]), final=550)
        self.assertEqual(r.text, "5.7.1 example: subject refused")
        r = send(p, message([b"Subject: junk mail"]))      # 250, dropped
        time.sleep(0.3)
        self.assertEqual(p.maildir_count(), 1)
        p.wait_for_log("event=discarded filter=example")
        p.stop()                        # counters logged at shutdown
        self.assertRegex(p.log(), rb"event=filter_stats filter=example "
                         rb"position=0 calls=15 pending=0 failures=0")

    def test_quarantine_and_release(self):
        p = self.example()
        r = send(p, message([b"Subject: suspect offer"]))
        qid = r.text.split()[-1]
        time.sleep(0.4)
        self.assertEqual(p.maildir_count(), 0)
        self.assertEqual(len(p.spool_files("hold")), 1)
        out = subprocess.run([POSTERN_BIN, "queue", "-c", p.conf_path,
                              "list"], capture_output=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn(qid.encode(), out.stdout)
        out = subprocess.run([POSTERN_BIN, "queue", "-c", p.conf_path,
                              "release", qid], capture_output=True,
                             timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        d = p.wait_for_delivered(1)[0]
        m = parse(d.body)
        # delivered with the edits made before the hold, filtered once
        self.assertEqual(m.get_all("X-Example-Filter"),
                         ["seen by the example module"])
        self.assertEqual(str(m["Subject"]), "suspect offer")

    def test_pending_while_others_flow(self):
        """Three quick messages are all taken while a slow verdict pends:
        told by the order of the replies, not by a clock (the slow verdict
        takes 8 s, which the quick ones have on a loaded machine; were they
        behind it, its reply would come first)."""
        p = self.example(slow_ms=8000)
        slow = p.session()
        slow.cmd("MAIL FROM:<sender@example.com>", 250)
        slow.cmd("RCPT TO:<user@example.org>", 250)
        slow.cmd("DATA", 354)
        slow.send(message([b"Subject: slow one"]) + b".\r\n")
        for i in range(3):
            send(p, message([b"Subject: quick %d" % i]))
        self.assertEqual(slow.pending(0.1), b"", "the quick ones came after "
                         "the slow one")
        slow.expect(250)
        slow.quit()
        got = [parse(d.body) for d in p.wait_for_delivered(4)]
        slow_msgs = [m for m in got if str(m["Subject"]) == "slow one"]
        self.assertEqual(slow_msgs[0]["X-Example-Slow"], "done")

    def test_deadline(self):
        p = self.example(slow_ms=6000, deadline=0.3)
        # the deadline's 451 (the slow answer would be a 250, 6 s on)
        r = send(p, message([b"Subject: slow one"]), final=451)
        self.assertTrue(r.text.startswith("4.3.0"), r)
        p.wait_for_log("why=\"deadline of 300 ms passed\"")

    def test_client_leaves_while_pending(self):
        p = self.example(slow_ms=800)
        c = p.session()
        c.cmd("MAIL FROM:<a@example.com>", 250)
        c.cmd("RCPT TO:<b@example.org>", 250)
        c.cmd("DATA", 354)
        c.send(message([b"Subject: slow"]) + b".\r\n")
        c.close()
        p.wait_for_log("event=filter_abort filter=example")
        time.sleep(1.2)                 # the late answer comes and is dropped
        self.assertEqual(p.maildir_count(), 0)
        send(p, message([b"Subject: after"]))   # still serving
        p.wait_for_delivered(1)

    def test_headers_phase_while_the_body_streams(self):
        p = self.example(slow_ms=3000)
        c = p.session()
        c.cmd("MAIL FROM:<a@example.com>", 250)
        c.cmd("RCPT TO:<b@example.org>", 250)
        c.cmd("DATA", 354)
        t0 = time.monotonic()
        c.send(b"Subject: slow upload\r\n\r\n")   # the header, complete
        time.sleep(2.5)                 # the verdict pends meanwhile
        c.send(b"x" * 70 + b"\r\n" + b".\r\n")
        c.expect(250)
        # the wait overlapped the upload: one delay (3 s), not delay +
        # upload (5.5 s); the margin is for a loaded machine
        self.assertLess(time.monotonic() - t0, 4.5)
        # a refusal at the header is given after the final dot
        c.cmd("MAIL FROM:<a@example.com>", 250)
        c.cmd("RCPT TO:<b@example.org>", 250)
        c.cmd("DATA", 354)
        c.send(b"Subject: forbidden\r\n\r\n")
        self.assertEqual(c.pending(0.3), b"")   # nothing before the dot
        c.send(b"body\r\n.\r\n")
        c.expect(550)
        c.quit()
        d = p.wait_for_delivered(1)[0]
        self.assertEqual(parse(d.body)["X-Example-Slow"], "done")
        p.wait_for_log("event=filter_verdict filter=example phase=headers "
                       "verdict=reject")

    def test_every_phase_pending(self):
        # connect, HELO, MAIL and RCPT each answered later by the pool;
        # the session resumes each command by its id, pipelined or not
        p = self.example(slow_ms=150,
                         slow_phases=["connect", "helo", "mail", "rcpt"])
        c = p.client()
        t0 = time.monotonic()
        c.greeting()
        self.assertGreaterEqual(time.monotonic() - t0, 0.14)
        c.ehlo()
        c.send(b"MAIL FROM:<a@example.com>\r\n"
               b"RCPT TO:<b@example.org>\r\n"
               b"RCPT TO:<forbidden@example.org>\r\n"
               b"RCPT TO:<c@example.org>\r\n"
               b"DATA\r\n")
        rs = c.replies(5, timeout=15)
        self.assertEqual([r.code for r in rs], [250, 250, 550, 250, 354])
        self.assertEqual(rs[2].text, "5.1.1 example: recipient refused")
        c.send(message([b"Subject: phases"]) + b".\r\n")
        c.expect(250)
        c.quit()
        got = p.wait_for_delivered(2)
        self.assertEqual(sorted(d.delivered_to for d in got),
                         ["b@example.org", "c@example.org"])

    def test_pending_command_runs_once(self):
        # a command whose verdict pends is checked once and carried out
        # once when the verdict comes: one log line each, one transaction
        p = self.example(slow_ms=150, slow_phases=["helo", "mail", "rcpt"])
        c = p.client()
        c.greeting()
        c.ehlo()
        c.send(b"MAIL FROM:<a@example.com>\r\n"
               b"RCPT TO:<forbidden@example.org>\r\n"
               b"DATA\r\n")
        rs = c.replies(3, timeout=15)
        # the refused recipient was tried: "no valid recipients", not
        # "need RCPT"
        self.assertEqual([(r.code, r.enhanced) for r in rs],
                         [(250, "2.1.0"), (550, "5.1.1"), (554, "5.5.1")])
        c.quit()
        p.wait_for_log(r"event=disconnect")
        log = p.log()
        self.assertEqual(log.count(b"event=helo "), 1, log)
        self.assertEqual(log.count(b"event=mail "), 1, log)

    def test_pipelined_behind_a_pending_verdict(self):
        p = self.example(slow_ms=700)
        c = p.session()
        c.cmd("MAIL FROM:<a@example.com>", 250)
        c.cmd("RCPT TO:<b@example.org>", 250)
        c.cmd("DATA", 354)
        # the end of a slow message and a whole second transaction at once
        c.send(message([b"Subject: slow"]) + b".\r\n"
               b"MAIL FROM:<c@example.com>\r\nRCPT TO:<d@example.org>\r\n"
               b"DATA\r\n")
        rs = c.replies(4, timeout=15)
        self.assertEqual([r.code for r in rs], [250, 250, 250, 354])
        c.send(message([b"Subject: second"]) + b".\r\n")
        c.expect(250)
        c.quit()
        got = sorted(str(parse(d.body)["Subject"])
                     for d in p.wait_for_delivered(2))
        self.assertEqual(got, ["second", "slow"])

    def test_mismatched_module_refused(self):
        conf = os.path.join(self.tmp, "bad.conf")
        with open(conf, "w") as f:
            f.write('filters = (\n  { module = "example";\n'
                    '    path = "%s"; }\n);\n' % EXAMPLE_BAD)
        out = subprocess.run([POSTERN_BIN, "check-config", conf],
                             capture_output=True, timeout=30)
        self.assertEqual(out.returncode, 1)
        err = out.stderr.decode()
        self.assertIn(conf + ":3:", err)
        self.assertIn("API version differs", err)
        # and the gateway will not start on it
        out = subprocess.run([POSTERN_BIN, "-c", conf], capture_output=True,
                             timeout=30)
        self.assertNotEqual(out.returncode, 0)


class CheckConfig(PosternTestCase):

    def check(self, text):
        path = os.path.join(self.tmp, "t.conf")
        with open(path, "w") as f:
            f.write(text)
        out = subprocess.run([POSTERN_BIN, "check-config", path],
                             capture_output=True, timeout=30)
        return path, out.returncode, out.stderr.decode()

    def test_bad_filter_configs(self):
        cases = [
            ('filters = (\n  { module = "headers";\n    rules = (\n'
             '      { remove = "^X-("; }\n    ); }\n);\n', 4,
             "does not compile"),
            ('filters = (\n  { module = "nosuch"; }\n);\n', 2,
             "not built in"),
            ('filters = (\n  { module = "headers";\n'
             '    rules = ( { add = "X"; colour = 1; } ); }\n);\n', 3,
             "unknown rule key 'colour'"),
            ('filters = (\n  { module = "headers"; deadline = 0; }\n);\n', 2,
             "deadline"),
            ('filters = (\n  { module = "headers";\n    rules = (\n'
             '      { rewrite = "Subject"; match = "x";\n'
             '        replace = "a\\r\\nBcc: v@x.example"; }\n    ); }\n);\n',
             5, "CR or LF"),
        ]
        for text, line, want in cases:
            path, rc, err = self.check(text)
            self.assertEqual(rc, 1, err)
            self.assertIn("%s:%d:" % (path, line), err)
            self.assertIn(want, err)
        path, rc, err = self.check(
            'filters = ( { module = "headers"; rules = ('
            ' { add = "X-A"; value = "b"; } ); } );\n')
        self.assertEqual(rc, 0, err)


if __name__ == "__main__":
    unittest.main()
