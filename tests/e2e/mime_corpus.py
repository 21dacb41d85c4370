"""mime_corpus - generate the message corpus the MIME tests parse.

Each case is a Case(name, data, differs): data is the message as bytes;
`differs` is None when postern must agree with Python's email package
(policy.default) on every part, or a short statement of the behaviour
postern chose on that malformed input and why (test_inspect asserts that
behaviour instead). Messages are built from code, deterministically, so the
corpus lives in this file and not as fixtures.
"""

import base64
import quopri
import random
from collections import namedtuple

Case = namedtuple("Case", "name data differs")

CRLF = b"\r\n"


def b64(data, width=76):
    s = base64.b64encode(data)
    return CRLF.join(s[i:i + width] for i in range(0, len(s), width))


def ew_b(text, charset="UTF-8"):
    return "=?%s?B?%s?=" % (charset, base64.b64encode(
        text.encode(charset)).decode())


def ew_q(text, charset="UTF-8"):
    raw = text.encode(charset)
    out = []
    for c in raw:
        if c == 0x20:
            out.append("_")
        elif 33 <= c <= 126 and chr(c) not in "=?_":
            out.append(chr(c))
        else:
            out.append("=%02X" % c)
    return "=?%s?Q?%s?=" % (charset, "".join(out))


def msg(headers, body, nl=CRLF):
    """headers: list of (name, value) str; body: bytes (lines joined by nl)."""
    h = nl.join(("%s: %s" % (k, v)).encode("utf-8") for k, v in headers)
    return h + nl + nl + body


def part(headers, body, nl=CRLF):
    return msg(headers, body, nl)


def multipart(boundary, parts, preamble=b"", epilogue=b"", nl=CRLF,
              close=True):
    b = boundary.encode()
    out = b""
    if preamble:
        out += preamble + nl
    for p in parts:
        out += b"--" + b + nl + p + nl
    if close:
        out += b"--" + b + b"--" + nl
    out += epilogue
    return out


def rnd_bytes(r, n):
    return bytes(r.getrandbits(8) for _ in range(n))


def text_lines(r, n, width=60):
    words = ["mail", "relay", "postern", "header", "boundary", "part",
             "filter", "queue", "spool", "message", "text", "line"]
    lines = []
    for _ in range(n):
        line = []
        while sum(len(w) + 1 for w in line) < width:
            line.append(r.choice(words))
        lines.append(" ".join(line).encode())
    return lines


def top(ct, extra=(), subject="test message"):
    return [("From", "sender@example.org"), ("To", "rcpt@example.net"),
            ("Subject", subject), ("Date", "Sun, 22 Nov 2026 01:00:00 +0000"),
            ("Message-ID", "<corpus@example.org>"), ("MIME-Version", "1.0"),
            ("Content-Type", ct)] + list(extra)


def cases():
    r = random.Random(20261122)
    out = []

    def add(name, data, differs=None):
        out.append(Case(name, data, differs))

    # -- the seed documents' QQ-to-163 sample: multipart/alternative, base64
    # text part, encoded-word From/To, 8Bit on the multipart
    html = (b'<div><span style="font-family: \'lucida Grande\', Verdana, '
            b'\'Microsoft YaHei\'; line-height: 23.8px;">This is the first '
            b'email sent by hand using the SMTP protocol</span></div>')
    bnd = "----=_NextPart_59DF7F2B_08CB07D0_339F08F2"
    body = multipart(bnd, [
        part([("Content-Type", 'text/plain;\r\n\tcharset="ISO-8859-1"'),
              ("Content-Transfer-Encoding", "base64")], b64(html)),
        part([("Content-Type", 'text/html;\r\n\tcharset="ISO-8859-1"'),
              ("Content-Transfer-Encoding", "base64")], b64(html)),
    ], preamble=b"This is a multi-part message in MIME format.")
    add("qq_to_163", msg([
        ("Received", "from smtpbg5.qq.com (unknown [183.60.61.230])\r\n"
         "       by mx6 (Coremail) with SMTP id OMCowACXv+ssf99ZD5FqAg--.5570S3;"
         "\r\n       Thu, 12 Oct 2017 22:41:48 +0800 (CST)"),
        ("X-QQ-mid", "webmail4t1507819307t4823829"),
        ("From", '"=?ISO-8859-1?B?MTEzMjgwMzk1MQ==?=" <1132803951@qq.com>'),
        ("To", '"=?ISO-8859-1?B?MTgyNzEyNjU3MzI=?=" <18271265732@163.com>'),
        ("Subject", "hello world"), ("Mime-Version", "1.0"),
        ("Content-Type", 'multipart/alternative;\r\n\tboundary="%s"' % bnd),
        ("Content-Transfer-Encoding", "8Bit"),
        ("Date", "Thu, 12 Oct 2017 22:41:47 +0800"),
        ("Message-ID",
         "<tencent_9EFED46440A5BAD43E6BC680FAC8A58E460A@qq.com>"),
    ], body))

    add("plain_7bit", msg(top("text/plain; charset=us-ascii"),
                          CRLF.join(text_lines(r, 20)) + CRLF))
    add("plain_no_mime", b"From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n")
    add("plain_utf8_8bit", msg(
        top("text/plain; charset=utf-8",
            [("Content-Transfer-Encoding", "8bit")],
            subject=ew_b("邮件的协议及服务器工作原理")),
        "中文正文，第二行。\r\nline two ✓\r\n".encode()))
    qp_src = ("Grüße aus dem Postamt, " * 8 + "\nzweite Zeile = gleich\n"
              "tab\tand trailing space encoded \n").encode("utf-8")
    add("qp_text", msg(top("text/plain; charset=utf-8",
                           [("Content-Transfer-Encoding", "quoted-printable")],
                           subject=ew_q("Grüße, Übersicht")),
                       quopri.encodestring(qp_src).replace(b"\n", b"\r\n")))

    pdf = rnd_bytes(r, 3000)
    png = rnd_bytes(r, 700)
    mixed = multipart("b1_mixed", [
        part([("Content-Type", "text/plain; charset=utf-8")],
             CRLF.join(text_lines(r, 5))),
        part([("Content-Type", 'application/pdf; name="report.pdf"'),
              ("Content-Transfer-Encoding", "base64"),
              ("Content-Disposition", 'attachment; filename="report.pdf"')],
             b64(pdf)),
        part([("Content-Type", "image/png"),
              ("Content-Transfer-Encoding", "base64"),
              ("Content-Disposition", "inline"),
              ("Content-ID", "<img1@example.org>")], b64(png)),
    ])
    add("mixed_attachments",
        msg(top('multipart/mixed; boundary="b1_mixed"'), mixed))

    related = multipart("rel-7", [
        part([("Content-Type", "text/html; charset=utf-8")],
             b'<p>see <img src="cid:logo@x"></p>'),
        part([("Content-Type", "image/gif"),
              ("Content-Transfer-Encoding", "base64"),
              ("Content-ID", "<logo@x>")], b64(rnd_bytes(r, 400))),
    ])
    add("related", msg(top('multipart/related; type="text/html"; '
                           'boundary="rel-7"'), related))

    alt = multipart("alt-2", [
        part([("Content-Type", "text/plain; charset=utf-8"),
              ("Content-Transfer-Encoding", "quoted-printable")],
             quopri.encodestring("plain version ✓\n".encode() * 3)
             .replace(b"\n", b"\r\n")),
        part([("Content-Type",
               'multipart/related; boundary="rel-3"')], related.replace(
                   b"rel-7", b"rel-3")),
    ])
    nested = multipart("mix-1", [
        part([("Content-Type", 'multipart/alternative; boundary="alt-2"')],
             alt),
        part([("Content-Type", "application/octet-stream"),
              ("Content-Transfer-Encoding", "base64"),
              ("Content-Disposition", 'attachment; filename="data.bin"')],
             b64(rnd_bytes(r, 5000))),
    ], preamble=b"preamble text\r\nmore preamble",
        epilogue=b"epilogue text\r\n")
    add("nested_mixed_alt_related",
        msg(top('multipart/mixed; boundary="mix-1"'), nested))
    add("nested_lf_only", msg(top('multipart/mixed; boundary="mix-1"'),
                              nested, nl=b"\n").replace(b"\r\n", b"\n"))

    # RFC 2231 and RFC 2047 filenames: Chinese, emoji, continuations
    zh = "邮件协议说明.pdf"
    pct = "".join("%%%02X" % c for c in zh.encode())
    att = lambda cd, ct="application/pdf": part(
        [("Content-Type", ct), ("Content-Transfer-Encoding", "base64"),
         ("Content-Disposition", cd)], b64(rnd_bytes(r, 300)))
    names = multipart("fn", [
        att("attachment; filename*=UTF-8''%s" % pct),
        att("attachment;\r\n filename*0*=UTF-8''%s;\r\n filename*1*=%s"
            % (pct[:30], pct[30:])),
        att('attachment; filename="%s"' % ew_b("报告 😀 2026.txt")),
        att("attachment", ct='text/plain; name="%s"' % ew_b("名单.csv",
                                                            "GB2312")),
        att('attachment; filename*0="long name part one ";'
            ' filename*1="and two.txt"'),
        att("attachment; filename*=iso-8859-1'fr'r%E9sum%E9.txt"),
        att('attachment; filename="semi;colon \\"q\\".txt"'),
        att('attachment; filename="%s"' % ew_q("emoji 🎉 party.ics")),
    ])
    add("filenames_2231_2047",
        msg(top('multipart/mixed; boundary="fn"'), names))

    # multipart/digest: parts default to message/rfc822
    inner = lambda i: msg([("From", "d%d@example.org" % i),
                           ("Subject", "digest item %d" % i)],
                          b"digest body %d\r\n" % i)
    digest = multipart("dg", [
        CRLF + inner(1),
        CRLF + inner(2),
        part([("Content-Type", "text/plain")], b"an explicit text part"),
    ])
    add("digest", msg(top('multipart/digest; boundary="dg"'), digest))

    fwd_inner = msg([("From", "orig@example.org"),
                     ("Subject", ew_b("转发的邮件")),
                     ("MIME-Version", "1.0"),
                     ("Content-Type", 'multipart/alternative; boundary="in"')],
                    multipart("in", [
                        part([("Content-Type", "text/plain")], b"inner text"),
                        part([("Content-Type", "text/html")], b"<b>x</b>"),
                    ]))
    fwd = multipart("fw", [
        part([("Content-Type", "text/plain")], b"see the forwarded message"),
        part([("Content-Type", "message/rfc822"),
              ("Content-Disposition", "attachment")], fwd_inner),
        part([("Content-Type", "message/rfc822")],
             msg([("Subject", "simple")], b"simple forwarded body\r\n")),
    ])
    add("forward_rfc822", msg(top('multipart/mixed; boundary="fw"'), fwd))
    add("top_level_rfc822", msg(top("message/rfc822"), fwd_inner))

    # boundaries that are prefixes of each other
    pref = multipart("abc", [
        part([("Content-Type", 'multipart/alternative; boundary="abcdef"')],
             multipart("abcdef", [
                 part([("Content-Type", "text/plain")],
                      b"--abc-not-a-delimiter\r\n--abcdefg\r\nx"),
                 part([("Content-Type", "text/html")], b"<i>--abc </i>"),
             ])),
        part([("Content-Type", "text/plain")], b"--abcd\r\nlast"),
    ])
    add("prefix_boundaries", msg(top('multipart/mixed; boundary="abc"'), pref))

    big = rnd_bytes(r, 200000)
    add("base64_200k", msg(top('multipart/mixed; boundary="big"'),
                           multipart("big", [
                               part([("Content-Type", "text/plain")], b"hi"),
                               part([("Content-Type", "application/zip"),
                                     ("Content-Transfer-Encoding", "base64"),
                                     ("Content-Disposition",
                                      'attachment; filename="a.zip"')],
                                    b64(big))])))
    add("empty_part", msg(top('multipart/mixed; boundary="e"'),
                          b"--e\r\n\r\n--e\r\nContent-Type: text/plain\r\n"
                          b"\r\n\r\n--e--\r\n"))
    add("boundary_trailing_blanks",
        msg(top('multipart/mixed; boundary="tb"'),
            b"--tb  \r\nContent-Type: text/plain\r\n\r\none\r\n--tb\t\r\n"
            b"\r\ntwo\r\n--tb-- \r\n"))

    # ---- malformed input ----
    add("missing_close_boundary", msg(top('multipart/mixed; boundary="mc"'),
                                      multipart("mc", [
                                          part([("Content-Type", "text/plain")],
                                               b"one"),
                                          part([("Content-Type", "text/plain")],
                                               b"two\r\nlast line"),
                                      ], close=False)))
    add("boundary_in_preamble", msg(
        top('multipart/mixed; boundary="pb"'),
        b"--pbx looks like it\r\n--pb- almost\r\n-- pb\r\n" +
        multipart("pb", [part([("Content-Type", "text/plain")], b"body")])))
    add("no_start_boundary", msg(top('multipart/mixed; boundary="ns"'),
                                 b"text but no delimiter\r\n--other\r\n"))
    add("no_boundary_param", msg(top("multipart/mixed"),
                                 b"--x\r\n\r\nbody\r\n--x--\r\n"))
    add("bad_base64", msg(top('multipart/mixed; boundary="bb"'), multipart(
        "bb", [
            part([("Content-Type", "application/octet-stream"),
                  ("Content-Transfer-Encoding", "base64")],
                 b"SGVs bG8*!\r\nd29y bGQ"),
            part([("Content-Type", "application/octet-stream"),
                  ("Content-Transfer-Encoding", "base64")],
                 b"YWJj\r\nZA==ignored\r\nYWJj"),
        ])))
    add("bad_base64_lone_sextet",
        msg(top('multipart/mixed; boundary="bl"'), multipart("bl", [
            part([("Content-Type", "application/octet-stream"),
                  ("Content-Transfer-Encoding", "base64")], b"YWJjZ"),
        ])),
        "a lone final base64 character is dropped and the decodable octets "
        "kept (Python returns the undecoded text); flagged bad_base64")
    add("header_8bit_nul", b"From: a@example.org\r\nSubject: caf\xc3\xa9 "
        b"\xff raw\r\nX-Nul: a\x00b\r\n\r\nbody\r\n")
    add("header_only_no_blank_line",
        b"From: a@example.org\r\nSubject: only headers")
    add("no_blank_line", b"From: a@example.org\r\nSubject: x\r\n"
        b"this line is body text\r\nmore\r\n")
    add("no_blank_line_multipart", msg(
        top('multipart/mixed; boundary="nb"'), multipart("nb", [
            b"Content-Type: text/plain\r\nbody starts here\r\nline 2",
            b"Content-Type: text/html\r\n<p>x</p>",
        ])))
    add("consecutive_delimiters", msg(
        top('multipart/mixed; boundary="cd"'),
        b"--cd\r\n--cd\r\nContent-Type: text/plain\r\n\r\nx\r\n--cd--\r\n"))
    add("nested_same_boundary", msg(
        top('multipart/mixed; boundary="sb"'),
        b"--sb\r\nContent-Type: multipart/alternative; boundary=\"sb\"\r\n\r\n"
        b"--sb\r\nContent-Type: text/plain\r\n\r\nin\r\n--sb--\r\n"))
    add("bad_content_type", msg([("Content-Type", "garbage"),
                                 ("Subject", "x")], b"body\r\n"))
    add("qp_malformed", msg(top("text/plain",
                                [("Content-Transfer-Encoding",
                                  "quoted-printable")]),
                            b"a=4 b=ZZ c=\r\nd==41 e=3d\r\nend="))
    add("qp_trailing_blanks", msg(top("text/plain",
                                      [("Content-Transfer-Encoding",
                                        "quoted-printable")]),
                                  b"trailing   \r\nsoft= \r\nbreak\r\n"),
        "RFC 2045 6.7: blanks ending a line are deleted and '=' followed by "
        "blanks is a soft line break (Python keeps both as text)")
    add("obs_header_colon", b"From: a@example.org\r\nContent-Type : "
        b"multipart/mixed; boundary=\"oc\"\r\n\r\n--oc\r\n\r\nx\r\n--oc--\r\n",
        "RFC 5322 obs-optional allows blanks before the colon, so the field "
        "counts (Python ends the header there and sees one text/plain body)")
    add("rfc2231_and_plain_filename", msg(
        top('multipart/mixed; boundary="dp"'), multipart("dp", [
            part([("Content-Type", "application/pdf"),
                  ("Content-Disposition", "attachment; filename=\"plain.pdf\";"
                   " filename*=UTF-8''%E6%96%B0.pdf")], b"x")])),
        "when both forms are present the RFC 2231 filename* wins, the one "
        "written for readers that understand it (Python takes the first)")
    add("close_delimiter_in_preamble", msg(
        top('multipart/mixed; boundary="cp"'),
        b"preamble line\r\n--cp--\r\nepilogue\r\n"),
        "a close delimiter before any other: the multipart is a leaf holding "
        "the preamble, and the line end before the delimiter is the "
        "delimiter's (RFC 2046 5.1.1; Python keeps it in the text)")
    add("no_start_boundary_nested", msg(
        top('multipart/mixed; boundary="ns1"'),
        b"--ns1\r\nContent-Type: multipart/alternative; boundary=\"ns2\"\r\n"
        b"\r\ninner text\r\n--ns1--\r\n"),
        "a nested multipart whose first delimiter never came, ended by its "
        "parent's delimiter: the line end before that delimiter is the "
        "delimiter's, as for every other part (Python keeps it)")
    add("delimiter_then_close", msg(
        top('multipart/mixed; boundary="dc"'),
        b"--dc\r\n\r\none\r\n--dc\r\n--dc--\r\nepilogue\r\n"),
        "a delimiter directly followed by the close delimiter: the multipart "
        "closes there (Python takes the close delimiter for a repeated "
        "delimiter and opens an empty part in the epilogue)")
    add("empty_subtype", msg([("Content-Type", "text/; charset=utf-8")],
                             b"body\r\n"),
        "a Content-Type without a subtype cannot be parsed, so it is "
        "text/plain as RFC 2045 5.2 says (Python reports \"text/\")")
    add("content_type_trailing_junk", msg(
        [("Content-Type", 'multipart/mixed junk; boundary="tj"')],
        multipart("tj", [part([("Content-Type", "text/plain")], b"one"),
                         part([("Content-Type", "text/html")], b"<p>two</p>")])),
        "junk after the subtype: the type still counts (the multipart is "
        "parsed, its parts listed) and the field is flagged "
        "bad_content_type; Python parses the same parts but reports the type "
        "as \"multipart/mixed junk\"")
    add("cte_trailing_junk", msg(
        top("application/octet-stream",
            [("Content-Transfer-Encoding", "base64 junk")]), b"YWJj\r\n"),
        "the encoding is the first token and the junk after it is flagged "
        "(bad_transfer_encoding), so the body is still decoded; Python "
        "treats the whole value as an unknown encoding and shows base64 text")
    nest = b"leaf"
    for i in range(40):
        nest = msg([("Content-Type",
                     'multipart/mixed; boundary="d%d"' % i)],
                   multipart("d%d" % i, [nest]))
    add("depth_40", nest,
        "nesting beyond the depth limit (32) is not parsed: the multipart at "
        "the limit is a leaf, flagged depth_limit (Python has no limit)")
    return out


def python_built(seed=7, count=60):
    """Messages composed with Python's own email API (EmailMessage:
    set_content, add_alternative, add_related, add_attachment, nested
    message/rfc822), serialised with policy.SMTP: varied structure, CTEs the
    library picks, long RFC 2231/2047 filenames and subjects."""
    from email import policy
    from email.message import EmailMessage
    r = random.Random(seed)
    names = ["报告.pdf", "😀 party.ics", "résumé.docx", "plain.txt",
             "a b;c.txt", "日本語のファイル名がとても長い場合のテスト.xlsx",
             "x" * 90 + ".bin"]
    texts = ["hello\n", "Grüße ✓\n" * 30, "中文正文\n" * 50,
             "line with trailing space \n", "=equals= and _under_\n",
             "." * 200 + "\n", "no newline"]
    subjects = ["hi", "邮件 test", "Grüße 😀",
                "a" * 100 + " long subject " + "ü" * 30]

    def build(depth):
        m = EmailMessage()
        m["Subject"] = r.choice(subjects)
        m["From"] = "a@example.org"
        m.set_content(r.choice(texts), cte=r.choice(
            [None, "quoted-printable", "base64", "8bit"]))
        if r.random() < 0.3:
            m.add_related(rnd_bytes(r, 200), maintype="image", subtype="png",
                          cid="<img@x>")
        if r.random() < 0.5:
            m.add_alternative("<p>%s</p>" % r.choice(texts), subtype="html")
        for _ in range(r.randrange(3)):
            kind = r.random()
            if kind < 0.5:
                m.add_attachment(rnd_bytes(r, r.randrange(0, 3000)),
                                 maintype="application",
                                 subtype="octet-stream",
                                 filename=r.choice(names))
            elif kind < 0.75:
                m.add_attachment(r.choice(texts), filename=r.choice(names))
            elif depth < 3:
                m.add_attachment(build(depth + 1))
        return m

    return [Case("python_built_%02d" % i,
                 build(0).as_bytes(policy=policy.SMTP), None)
            for i in range(count)]
