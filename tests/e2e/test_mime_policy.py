"""mime.policy on the wire: with `reject`, a message whose MIME structure
hits a limit of the message model (docs/CONFIG.md, mime) is refused after
the final dot with 554 5.6.0 and nothing is queued; malformations that are
not limits still pass; with the default `flag` the same message is accepted
and delivered byte for byte."""

from harness import PosternTestCase, message, queue_id


def nested(levels, body=b"leaf\r\n"):
    """A message whose body is `levels` multiparts, one inside the other."""
    text = body
    for i in reversed(range(levels)):
        b = b"n%d" % i
        text = (b"Content-Type: multipart/mixed; boundary=\"" + b + b"\"\r\n"
                b"\r\n--" + b + b"\r\n" + text + b"\r\n--" + b + b"--\r\n")
    return message(subject="nested %d" % levels, body=b"")[:-2] + text


def many_parts(n):
    parts = b"".join(b"--p\r\n\r\npart %d\r\n" % i for i in range(n))
    return message(subject="parts %d" % n, body=b"", extra_headers=(
        'Content-Type: multipart/mixed; boundary="p"',)) + parts + b"--p--\r\n"


class RejectPolicy(PosternTestCase):
    start_postern = True
    postern_overrides = {"mime": {"policy": "reject", "depth": 3,
                                  "parts": 20}}

    def test_depth_limit_refused(self):
        with self.p.session() as c:
            r = c.transaction("a@example.org", ["b@example.net"], nested(6))
            self.assertReply(r, 554, "5.6.0")
            self.p.wait_for_log(r"event=mime_limits flags=depth_limit")
            # the session goes on, and a message within the limits passes
            c.cmd("NOOP", 250, "2.0.0")
            queue_id(c.transaction("a@example.org", ["b@example.net"],
                                   nested(2)))
        files = self.p.wait_for_delivered(1, settle=0.5)
        self.assertEqual(len(files), 1)
        self.assertIn(b"Subject: nested 2", files[0].body)

    def test_part_limit_refused_in_bdat(self):
        with self.p.session() as c:
            c.cmd("MAIL FROM:<a@example.org>", 250, "2.1.0")
            c.cmd("RCPT TO:<b@example.net>", 250, "2.1.5")
            data = many_parts(30)
            half = len(data) // 2
            c.bdat(data[:half])
            r = c.bdat(data[half:], last=True)
            self.assertReply(r, 554, "5.6.0")
            queue_id(c.transaction("a@example.org", ["b@example.net"],
                                   many_parts(10)))
        self.p.wait_for_log(r"event=mime_limits flags=part_limit")
        files = self.p.wait_for_delivered(1, settle=0.5)
        self.assertEqual(len(files), 1)

    def test_malformed_within_limits_passes(self):
        # no close delimiter, bad base64: flagged for filters, not refused
        body = (b"--m\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                b"YWJj!!!\r\n--m\r\n\r\ncut off\r\n")
        data = message(subject="malformed", body=body, extra_headers=(
            'Content-Type: multipart/mixed; boundary="m"',))
        with self.p.session() as c:
            queue_id(c.transaction("a@example.org", ["b@example.net"], data))
        files = self.p.wait_for_delivered(1)
        self.assertEqual(files[0].body, data)


class FlagPolicy(PosternTestCase):
    start_postern = True
    postern_overrides = {"mime": {"depth": 3}}

    def test_depth_limit_accepted(self):
        data = nested(6)
        with self.p.session() as c:
            queue_id(c.transaction("a@example.org", ["b@example.net"], data))
        files = self.p.wait_for_delivered(1)
        self.assertEqual(files[0].body, data)
        self.assertNotIn(b"event=mime_limits", self.p.log())


class RejectPolicyWithFilters(RejectPolicy):
    """The same refusals when a filter chain runs: then the chain's parser
    builds the one model of the message, and the policy reads it."""
    postern_overrides = dict(RejectPolicy.postern_overrides, filters=[
        {"module": "headers", "rules": [{"remove": "^X-Nothing-Here$"}]}])
