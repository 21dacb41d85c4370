"""The spf filter module (filters/spf/): RFC 7208 results against dnsmasq
on loopback, the replies on the wire, the Received-SPF and
Authentication-Results fields at the downstream, the limits, the helper
processes (killed mid-check, hostile records), the cache."""
import os
import re
import signal
import socket
import threading
import time
import unittest

import harness
import prom
from harness import PosternTestCase

HOST = harness.HOSTNAME         # postern.test: receiver and authserv-id
IP = "127.0.0.2"                # the client, checked (not trusted)

RECORDS = [
    # pass by ip4, include, a, mx
    "--txt-record=pass.test,v=spf1 ip4:127.0.0.2 -all",
    "--txt-record=inc.test,v=spf1 include:_spf.inc.test -all",
    "--txt-record=_spf.inc.test,v=spf1 ip4:10.9.9.9 ip4:127.0.0.0/30 -all",
    "--txt-record=a.test,v=spf1 a:host.a.test -all",
    "--host-record=host.a.test,127.0.0.2",
    "--txt-record=mx.test,v=spf1 mx -all",
    "--mx-host=mx.test,mail.mx.test,10",
    "--host-record=mail.mx.test,127.0.0.2",
    # fail, softfail, neutral; none.test has no TXT record at all
    "--txt-record=fail.test,v=spf1 ip4:10.0.0.1 -all",
    "--txt-record=soft.test,v=spf1 ~all",
    "--txt-record=neutral.test,v=spf1 ?all",
    "--host-record=none.test,127.0.0.2",
    # permerror: syntax, too many lookups, void lookups, include loop
    "--txt-record=syntax.test,v=spf1 ip4:300.1.1.1 -all",
    "--txt-record=many.test,v=spf1 " + " ".join(
        "include:i%d.many.test" % i for i in range(1, 12)) + " -all",
] + ["--txt-record=i%d.many.test,v=spf1 ip4:10.0.0.%d -all" % (i, i)
     for i in range(1, 12)] + [
    "--txt-record=void.test,v=spf1 a:n1.void.test a:n2.void.test "
    "a:n3.void.test -all",
    "--txt-record=loop.test,v=spf1 include:loop2.test -all",
    "--txt-record=loop2.test,v=spf1 include:loop.test -all",
    # the HELO identity of the null sender
    "--txt-record=helo.test,v=spf1 ip4:127.0.0.2 -all",
    # a macro, every name it leads to answered (with a TTL)
    "--txt-record=mac.test,v=spf1 exists:%{l}.ok.mac.test -all",
    "--host-record=a.ok.mac.test,127.0.0.9",
    "--host-record=b.ok.mac.test,127.0.0.9",
    # hostile macros: many expands in one term, long expansions
    "--txt-record=macros.test,v=spf1 exists:" + "%{l}" * 20 + ".%{d} -all",
    "--txt-record=long.test,v=spf1 exists:%{l}.%{l}.%{l}.%{l}.%{d} "
    "ip4:127.0.0.2 -all",
    "--txt-record=underflow.test,v=spf1 exists:" + "%{d}" * 127 +
    "x" * 200 + " -all",
]


def header_fields(raw):
    """The header fields of a delivered file, unfolded, in order, as
    (name, value) pairs."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    head = re.sub(r"\r\n[ \t]+", " ", head)
    out = []
    for line in head.split("\r\n"):
        name, _, value = line.partition(":")
        out.append((name, value.strip()))
    return out


def fields(raw, name):
    return [v for n, v in header_fields(raw) if n.lower() == name.lower()]


class SlowDns:
    """A UDP proxy in front of dnsmasq that delays the answers for names
    containing `slow` by `delay` seconds (for a check that is still
    running when its helper is killed)."""

    def __init__(self, upstream_port, delay):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.up = upstream_port
        self.delay = delay
        self.stopping = False
        self.slow_asked = threading.Event()     # a slow name's query came
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        self.sock.settimeout(0.2)
        while not self.stopping:
            try:
                q, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self.one, args=(q, peer),
                             daemon=True).start()

    def one(self, q, peer):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(10)
        try:
            u.sendto(q, ("127.0.0.1", self.up))
            a, _ = u.recvfrom(4096)
            if b"slow" in q:
                self.slow_asked.set()
                time.sleep(self.delay)
            if not self.stopping:
                self.sock.sendto(a, peer)
        except OSError:
            pass
        finally:
            u.close()

    def stop(self):
        self.stopping = True
        self.sock.close()


def helper_pids(ppid):
    """pids of the postern-spf children of ppid."""
    return harness.child_pids(ppid, b"postern-spf")


class Spf(PosternTestCase):

    def start(self, spf=None, records=RECORDS, resolver=None, trusted=(),
              extra=None):
        self.dns = self.dnsmasq(list(records) + ["--local-ttl=300"])
        conf = {
            "relay": {"trusted_networks": list(trusted),
                      "domains": ["dest.test"]},
            "resolver": resolver or self.dns.resolver(),
            "filters": [dict({"module": "spf"}, **(spf or {}))],
        }
        conf.update(extra or {})
        return self.postern(conf)

    def send(self, p, sender, helo="client.test", source=IP, rcpt_code=250,
             rcpt_enh="2.1.5"):
        """One message from source; returns (client, RCPT reply, final
        reply or None)."""
        c = p.client(source=source)
        c.greeting()
        c.ehlo(helo)
        c.cmd("MAIL FROM:<%s>" % sender, 250, "2.1.0")
        r = c.cmd("RCPT TO:<u@dest.test>")
        harness.check_reply(r, rcpt_code, rcpt_enh)
        final = None
        if r.code == 250:
            c.cmd("DATA", 354)
            c.send(harness.dot_stuff(harness.message(
                subject=sender or "null", sender=sender or "x@y.test",
                rcpt="u@dest.test")))
            final = c.reply()
        c.quit()
        return r, final

    def delivered_for(self, p, n):
        return [d.raw for d in p.wait_for_delivered(n)]

    def test_results_fields_and_replies(self):
        p = self.start()
        cases = [
            ("a@pass.test", "pass"),
            ("b@inc.test", "pass"),
            ("c@a.test", "pass"),
            ("d@mx.test", "pass"),
            ("e@soft.test", "softfail"),
            ("f@neutral.test", "neutral"),
            ("g@none.test", "none"),
            ("h@syntax.test", "permerror"),
            ("i@many.test", "permerror"),
            ("j@void.test", "permerror"),
            ("k@loop.test", "permerror"),
        ]
        for sender, _ in cases:
            r, final = self.send(p, sender)
            harness.check_reply(final, 250, "2.0.0")
        # fail: refused at RCPT (the default), with RFC 7372's code
        r, _ = self.send(p, "z@fail.test", rcpt_code=550, rcpt_enh="5.7.23")
        self.assertEqual(
            r.text, "5.7.23 SPF fail: fail.test does not designate "
            "127.0.0.2 as a permitted sender")
        got = self.delivered_for(p, len(cases))
        by_sender = {}
        for raw in got:
            ar = fields(raw, "Authentication-Results")
            self.assertEqual(len(ar), 1, raw[:600])
            m = re.search(r"smtp\.mailfrom=(\S+)", ar[0])
            by_sender[m.group(1)] = raw
        for sender, result in cases:
            raw = by_sender[sender]
            self.assertEqual(fields(raw, "Authentication-Results"),
                             ["%s; spf=%s smtp.mailfrom=%s"
                              % (HOST, result, sender)])
            [rs] = fields(raw, "Received-SPF")
            self.assertTrue(rs.startswith(result + " (" + HOST + ": "), rs)
            tail = ("client-ip=%s; envelope-from=\"%s\"; helo=client.test; "
                    "receiver=%s; identity=mailfrom" % (IP, sender, HOST))
            self.assertIn(tail, rs)
            # both fields above postern's Received (RFC 7208 9.1)
            names = [n for n, _ in header_fields(raw)]
            self.assertLess(names.index("Received-SPF"),
                            names.index("Received"))
        rs = fields(by_sender["a@pass.test"], "Received-SPF")[0]
        self.assertEqual(
            rs, "pass (postern.test: domain of a@pass.test designates "
            "127.0.0.2 as permitted sender) client-ip=127.0.0.2; "
            "envelope-from=\"a@pass.test\"; helo=client.test; "
            "receiver=postern.test; identity=mailfrom")
        for sender, why in [("i@many.test", "more than 10 DNS-querying"),
                            ("j@void.test", "more than 2 void lookups"),
                            ("k@loop.test", "more than 10 DNS-querying"),
                            ("h@syntax.test", "bad ip4 address")]:
            rs = fields(by_sender[sender], "Received-SPF")[0]
            self.assertIn("problem=\"" + why, rs)
        p.wait_for_log(r"event=spf identity=mailfrom result=fail ip=127\.0\.0"
                       r"\.2 sender=\"z@fail\.test\".*action=reject")

    def test_null_sender_helo_identity(self):
        p = self.start()
        self.send(p, "", helo="helo.test")
        [raw] = self.delivered_for(p, 1)
        self.assertEqual(fields(raw, "Authentication-Results"),
                         ["%s; spf=pass smtp.helo=helo.test" % HOST])
        [rs] = fields(raw, "Received-SPF")
        self.assertTrue(rs.startswith(
            "pass (postern.test: domain of postmaster@helo.test designates "
            "127.0.0.2 as permitted sender) "), rs)
        self.assertIn("envelope-from=\"postmaster@helo.test\"; helo=helo.test; "
                      "receiver=postern.test; identity=helo", rs)

    def test_check_helo(self):
        p = self.start({"check_helo": True})
        self.send(p, "e@soft.test", helo="helo.test")
        [raw] = self.delivered_for(p, 1)
        self.assertEqual(fields(raw, "Authentication-Results"), [
            "%s; spf=pass smtp.helo=helo.test; spf=softfail "
            "smtp.mailfrom=e@soft.test" % HOST])
        rs = fields(raw, "Received-SPF")
        self.assertEqual(len(rs), 2)
        self.assertTrue(rs[0].startswith("softfail ") and
                        rs[0].endswith("identity=mailfrom"), rs)
        self.assertTrue(rs[1].startswith("pass ") and
                        rs[1].endswith("identity=helo"), rs)
        # a HELO that fails refuses the message, whatever the sender
        r, _ = self.send(p, "a@pass.test", helo="fail.test", rcpt_code=550,
                         rcpt_enh="5.7.23")
        self.assertEqual(r.text, "5.7.23 SPF fail: fail.test does not "
                         "designate 127.0.0.2 as a permitted sender")

    def test_reload_replaces_the_helpers(self):
        p = self.start({"helpers": 2})
        before = helper_pids(p.proc.pid)
        self.assertEqual(len(before), 2)
        p.config["filters"] = [{"module": "spf", "helpers": 3}]
        p.write_config()
        os.kill(p.proc.pid, signal.SIGHUP)
        p.wait_for_log("event=reloaded")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            after = helper_pids(p.proc.pid)
            if len(after) == 3 and not set(after) & set(before):
                break
            time.sleep(0.05)
        self.assertEqual(len(after), 3, after)
        self.assertFalse(set(after) & set(before))
        _, final = self.send(p, "a@pass.test")
        harness.check_reply(final, 250, "2.0.0")

    def test_trusted_client_skipped(self):
        p = self.start(trusted=["127.0.0.9/32"])
        _, final = self.send(p, "z@fail.test", source="127.0.0.9")
        harness.check_reply(final, 250, "2.0.0")
        [raw] = self.delivered_for(p, 1)
        self.assertEqual(fields(raw, "Received-SPF"), [])
        self.assertEqual(fields(raw, "Authentication-Results"), [])
        p.wait_for_log("event=spf_skipped why=trusted")

    def test_policies_and_reject_at(self):
        p = self.start({"permerror": "reject", "softfail": "tempfail",
                        "reject_at": "mail"})
        texts = {}
        for sender, code, enh in [("h@syntax.test", 550, "5.7.24"),
                                  ("e@soft.test", 451, "4.7.23"),
                                  ("z@fail.test", 550, "5.7.23")]:
            c = p.client(source=IP)
            c.greeting()
            c.ehlo("client.test")
            r = c.cmd("MAIL FROM:<%s>" % sender)
            harness.check_reply(r, code, enh)
            texts[sender] = r.text
            c.quit()
        self.assertEqual(texts["h@syntax.test"], "5.7.24 SPF permerror: the "
                         "SPF record of syntax.test is in error")
        self.assertEqual(texts["e@soft.test"], "4.7.23 SPF softfail for "
                         "soft.test from 127.0.0.2, refused by policy")
        # refused at the final dot
        p.restart({"filters": [{"module": "spf", "reject_at": "data"}]})
        _, final = self.send(p, "z@fail.test")
        harness.check_reply(final, 550, "5.7.23")

    def test_temperror_when_the_server_does_not_answer(self):
        # a UDP socket that reads and never answers
        mute = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        mute.bind(("127.0.0.1", 0))
        self.addCleanup(mute.close)
        resolver = {"nameservers": ["127.0.0.1:%d" % mute.getsockname()[1]],
                    "timeout": 300, "tries": 1}
        p = self.start(resolver=resolver)
        r, _ = self.send(p, "a@pass.test", rcpt_code=451, rcpt_enh="4.7.24")
        self.assertEqual(r.text, "4.7.24 SPF temperror: cannot check "
                         "pass.test now, try again later")

    def test_cache_one_lookup_per_name(self):
        # two client addresses: two checks (results are cached per
        # address), the second with every DNS answer from the cache
        mport = harness.free_port()
        p = self.start(extra={"metrics": {"enabled": True, "port": mport}})
        for source in ["127.0.0.2", "127.0.0.3"]:
            self.send(p, "a@inc.test", source=source)
        self.delivered_for(p, 2)
        m = prom.scrape(mport)
        self.assertEqual(m.get("postern_spf_checks_total", result="pass"), 2)
        self.assertEqual(m.get("postern_spf_result_cache_total",
                               outcome="miss"), 2)
        self.assertGreaterEqual(m.get("postern_spf_cache_total",
                                      outcome="hit"), 2)
        self.assertEqual(m.get("postern_spf_cache_total", outcome="miss"), 2)
        self.assertEqual(m.get("postern_spf_dns_queries_total"), 2)
        self.assertEqual(m.get("postern_spf_helpers"), 4)

    def spf_metrics(self, mport):
        m = prom.scrape(mport)
        return (m.get("postern_spf_result_cache_total", outcome="hit"),
                m.get("postern_spf_result_cache_total", outcome="miss"),
                m.get("postern_spf_dns_queries_total"))

    def test_result_cache(self):
        mport = harness.free_port()
        p = self.start(extra={"metrics": {"enabled": True, "port": mport}})
        # one check for a burst from one address and domain, whatever the
        # local part (pass.test's record has no macro); the same fields
        for sender in ["a@pass.test", "b@pass.test", "a@pass.test"]:
            _, final = self.send(p, sender)
            harness.check_reply(final, 250, "2.0.0")
        got = self.delivered_for(p, 3)
        self.assertEqual(self.spf_metrics(mport), (2, 1, 1))
        for raw in got:
            [rs] = fields(raw, "Received-SPF")
            self.assertTrue(rs.startswith("pass (postern.test: domain of "),
                            rs)
        p.wait_for_log(r"event=spf identity=mailfrom result=pass "
                       r"ip=127\.0\.0\.2 sender=\"b@pass\.test\" queries=0 "
                       r"cached=yes action=accept")
        # another address is another check (and pass.test's record does
        # not list this one)
        self.send(p, "a@pass.test", source="127.0.0.3", rcpt_code=550,
                  rcpt_enh="5.7.23")
        self.assertEqual(self.spf_metrics(mport)[:2], (2, 2))
        # a cached fail refuses as the first did
        for _ in range(2):
            r, _ = self.send(p, "z@fail.test", rcpt_code=550,
                             rcpt_enh="5.7.23")
            self.assertEqual(r.text, "5.7.23 SPF fail: fail.test does not "
                             "designate 127.0.0.2 as a permitted sender")
        self.assertEqual(self.spf_metrics(mport)[:2], (3, 3))
        # a record with macros (%{l}): kept per sender, not per domain
        for sender in ["a@mac.test", "b@mac.test", "a@mac.test"]:
            _, final = self.send(p, sender)
            harness.check_reply(final, 250, "2.0.0")
        self.assertEqual(self.spf_metrics(mport)[:2], (4, 5))
        # a reload starts a new pool with an empty cache
        p.reload()
        self.send(p, "a@pass.test")
        self.assertEqual(self.spf_metrics(mport)[:2], (4, 6))

    def test_result_cache_lives_as_long_as_its_answers(self):
        mport = harness.free_port()
        p = self.start({"max_ttl": 1},
                       extra={"metrics": {"enabled": True, "port": mport}})
        self.send(p, "a@pass.test")
        self.send(p, "a@pass.test")
        self.assertEqual(self.spf_metrics(mport), (1, 1, 1))
        time.sleep(1.3)
        self.send(p, "a@pass.test")
        self.assertEqual(self.spf_metrics(mport), (1, 2, 2))

    def test_temperror_is_not_cached(self):
        mute = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        mute.bind(("127.0.0.1", 0))
        self.addCleanup(mute.close)
        mport = harness.free_port()
        resolver = {"nameservers": ["127.0.0.1:%d" % mute.getsockname()[1]],
                    "timeout": 300, "tries": 1}
        p = self.start(resolver=resolver,
                       extra={"metrics": {"enabled": True, "port": mport}})
        for _ in range(2):
            self.send(p, "a@pass.test", rcpt_code=451, rcpt_enh="4.7.24")
        self.assertEqual(self.spf_metrics(mport)[:2], (0, 2))

    def test_hostile_macros_do_not_crash(self):
        p = self.start()
        pids = helper_pids(p.proc.pid)
        local = "x" * 60
        for sender in ["%s@macros.test" % local, "%s@long.test" % local,
                       "a@underflow.test"]:
            _, final = self.send(p, sender)
            harness.check_reply(final, 250, "2.0.0")
        got = self.delivered_for(p, 3)
        results = sorted(re.search(r"spf=(\w+)", fields(raw,
                         "Authentication-Results")[0]).group(1)
                         for raw in got)
        # 20 macros in a term, and the CVE-2023-42118 shape (a term that
        # would fill libspf2's budget, then a literal): permerror, never
        # compiled; long expansions: checked, the name too long to ask
        self.assertEqual(results.count("permerror"), 2, results)
        self.assertEqual(helper_pids(p.proc.pid), pids)
        self.assertTrue(p.running())

    def test_helper_killed_mid_check(self):
        self.dns = self.dnsmasq(RECORDS + [
            "--txt-record=slow.test,v=spf1 ip4:127.0.0.2 -all"])
        slow = SlowDns(self.dns.port, 20.0)     # past the resolver's 8 s
        self.addCleanup(slow.stop)
        mport = harness.free_port()
        p = self.postern({
            "metrics": {"enabled": True, "port": mport},
            "relay": {"trusted_networks": [], "domains": ["dest.test"]},
            "resolver": {"nameservers": ["127.0.0.1:%d" % slow.port],
                         "timeout": 8000, "tries": 1},
            "filters": [{"module": "spf", "helpers": 2}]})
        before = helper_pids(p.proc.pid)
        self.assertEqual(len(before), 2)
        result = {}

        def slow_message():
            result["r"] = self.send(p, "s@slow.test", rcpt_code=451,
                                    rcpt_enh="4.7.24")

        t = threading.Thread(target=slow_message)
        t.start()
        # the check waits for its slow answer (the resolver gives up on it
        # 8 s later): kill the helpers now
        self.assertTrue(slow.slow_asked.wait(30), "no query for slow.test")
        for pid in before:
            os.kill(pid, signal.SIGKILL)
        t.join(20)
        self.assertIn("r", result)
        p.wait_for_log(r"event=spf identity=mailfrom result=temperror .*"
                       r"why=\"helper died")
        # the next message passes; the pool is back to its size (the
        # helper of the check at once, the idle one before the next check)
        _, final = self.send(p, "a@pass.test")
        harness.check_reply(final, 250, "2.0.0")
        after = helper_pids(p.proc.pid)
        self.assertEqual(len(after), 2, after)
        self.assertFalse(set(after) & set(before))
        m = prom.scrape(mport)
        self.assertEqual(m.get("postern_spf_helper_failures_total"), 1)
        self.assertEqual(m.get("postern_spf_checks_total",
                               result="temperror"), 1)
        self.assertEqual(m.get("postern_spf_helper_restarts_total"), 2)
        self.assertEqual(m.get("postern_spf_helpers"), 2)


if __name__ == "__main__":
    unittest.main()
