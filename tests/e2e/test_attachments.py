"""test_attachments.py - the attachments filter module end to end: postern
on loopback with an attachment policy, a raw SMTP client, delivery to a
maildir; what arrives is parsed with Python's email package and compared
part by part (sha256 of each part's bytes) with what was sent.

Covers: every way a client can name a file (quoted, token, Content-Type
name only, RFC 2231 with charsets and continuations, RFC 2047 inside
quotes, any letter case, folded, duplicated parameters - every name a
reader might take is judged, a part with more names than are read takes
the limit's action), the U+202E
"exe.pdf" trick, trailing dots and blanks, uuencoded blocks in text, parts
nested in multipart/related and in an attached message/rfc822 (also one
sent base64-encoded); a PE
executable under a harmless name and with no name (libmagic on the
decoded content); a zip with a blocked member (Python's zipfile), nested
archives, a tar.gz, a rar, a 7z, a tar.bz2, a lone .xz file, an encrypted zip (zip -P) and 7z (7z -p -mhe), a zip
bomb, a 7z whose compressed header alone asks libarchive for 512 MiB
(refused as unreadable by the helper bounded by archives.memory, the
gateway's own peak memory unchanged); strip keeps every other part
byte-identical and the structure
valid; reject (554 5.7.1, 552 5.3.4 for size) and quarantine (the hold
area, released unfiltered); multipart/signed and encrypted behaviour;
check-config errors with file and line; the module's counters at
/metrics.
"""

import base64
import bz2
import email
import email.policy
import hashlib
import io
import lzma
import os
import re
import shutil
import struct
import subprocess
import tarfile
import time
import unittest
import zipfile
import zlib

import harness
import loadgen
import prom
from harness import POSTERN_BIN, PosternTestCase

BOUNDARY = b"=_outer"


def parse(raw):
    return email.message_from_bytes(raw, policy=email.policy.default)


def send(p, msg, final=250, rcpt="user@example.org"):
    """One transaction; returns the reply to the final dot."""
    c = p.session()
    try:
        c.cmd("MAIL FROM:<sender@example.com>", 250)
        c.cmd("RCPT TO:<%s>" % rcpt, 250)
        c.cmd("DATA", 354)
        c.send(msg.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        r = c.reply(timeout=30)
        if final is not None and r.code != final:
            raise AssertionError("final reply %s, want %d; log:\n%s"
                                 % (r, final, p.log_tail()))
        c.quit()
        return r
    finally:
        c.close()


def b64(data):
    s = base64.b64encode(data)
    return b"\r\n".join(s[i:i + 76] for i in range(0, len(s), 76)) + b"\r\n"


def part(headers, body):
    return b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def multipart(parts, boundary=BOUNDARY, subtype=b"mixed", top=True,
              extra=()):
    out = b""
    if top:
        out += (b"From: <sender@example.com>\r\nTo: <user@example.org>\r\n"
                b"Subject: attachments\r\nMIME-Version: 1.0\r\n")
        out += b"".join(h + b"\r\n" for h in extra)
    out += (b"Content-Type: multipart/" + subtype + b"; boundary=\""
            + boundary + b"\"\r\n\r\npreamble\r\n")
    for p in parts:
        out += b"--" + boundary + b"\r\n" + p + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


def raw_parts(body, boundary):
    """The bytes of each part between delimiters (RFC 2046 5.1.1)."""
    delim = b"\r\n--" + boundary
    chunks = body.split(delim)
    return [c[2:] for c in chunks[1:-1]]


def sha(b):
    return hashlib.sha256(b).hexdigest()


def pe_image():
    """A minimal PE32 header: what libmagic needs to call it a Windows
    executable."""
    mz = bytearray(1024)
    mz[0:2] = b"MZ"
    struct.pack_into("<H", mz, 2, 0x90)
    struct.pack_into("<I", mz, 0x3c, 0x80)
    mz[0x80:0x84] = b"PE\0\0"
    struct.pack_into("<HHIIIHH", mz, 0x84, 0x14c, 1, 0, 0, 0, 0xe0, 0x102)
    struct.pack_into("<H", mz, 0x98, 0x10b)
    return bytes(mz)


def elf_image():
    elf = bytearray(256)
    elf[0:4] = b"\x7fELF"
    elf[4], elf[5], elf[6] = 2, 1, 1
    struct.pack_into("<HHI", elf, 16, 2, 62, 1)
    return bytes(elf)


def zip_of(members, compression=zipfile.ZIP_DEFLATED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in members:
            z.writestr(name, data)
    return buf.getvalue()


def rar4(members):
    """A RAR 4 archive of stored members, built by hand (Debian has no
    free RAR writer): marker, main header, one file header per member
    (header CRC is the low 16 bits of CRC-32), end of archive."""
    out = b"Rar!\x1a\x07\x00"
    body = struct.pack("<BHH", 0x73, 0, 13) + b"\0" * 6
    out += struct.pack("<H", zlib.crc32(body) & 0xffff) + body
    for name, data in members:
        nb = name.encode()
        fields = struct.pack("<BHHIIBIIBBHI", 0x74, 0x8000, 32 + len(nb),
                             len(data), len(data), 2, zlib.crc32(data), 0,
                             29, 0x30, len(nb), 0x20) + nb
        out += struct.pack("<H", zlib.crc32(fields) & 0xffff) + fields + data
    end = struct.pack("<BHH", 0x7b, 0x4000, 7)
    return out + struct.pack("<H", zlib.crc32(end) & 0xffff) + end


def sevenz_header_bomb(names_octets):
    """A 7z archive whose LZMA-encoded header declares a file-name table
    of names_octets zero octets: a few dozen KB that make libarchive
    allocate and fill names_octets while it reads the first header, before
    any member (and so before max_bytes or max_ratio can count anything).
    Built by hand: signature header, the packed (LZMA1) header stream, and
    the kEncodedHeader that describes it."""
    def num(v):
        return b"\xff" + struct.pack("<Q", v)
    header = b"\x01\x05\x01\x11" + num(names_octets + 1) + b"\x00"
    comp = lzma.LZMACompressor(format=lzma.FORMAT_RAW, filters=[{
        "id": lzma.FILTER_LZMA1, "dict_size": 1 << 20, "lc": 3, "lp": 0,
        "pb": 2, "mode": lzma.MODE_FAST, "nice_len": 273,
        "mf": lzma.MF_HC3, "depth": 1}])
    out = [comp.compress(header)]
    zeros = bytes(1 << 24)
    left = names_octets
    while left:
        out.append(comp.compress(zeros[:min(left, len(zeros))]))
        left -= min(left, len(zeros))
    out.append(comp.compress(b"\x00\x00"))
    out.append(comp.flush())
    packed = b"".join(out)
    props = b"\x5d" + struct.pack("<I", 1 << 20)    # lc 3 lp 0 pb 2, 1 MiB
    encoded = (b"\x17"                              # kEncodedHeader
               b"\x06\x00\x01\x09" + num(len(packed)) + b"\x00"
               b"\x07\x0b\x01\x00\x01\x23\x03\x01\x01\x05" + props +
               b"\x0c" + num(len(header) + names_octets + 2) + b"\x00\x00")
    tail = struct.pack("<QQI", len(packed), len(encoded), zlib.crc32(encoded))
    return (b"7z\xbc\xaf\x27\x1c\x00\x04" +
            struct.pack("<I", zlib.crc32(tail)) + tail + packed + encoded)


def attachment(name_headers, data, ctype=b"application/octet-stream"):
    hs = list(name_headers)
    if not any(h.lower().startswith(b"content-type") for h in hs):
        hs.insert(0, b"Content-Type: " + ctype)
    hs.append(b"Content-Transfer-Encoding: base64")
    return part(hs, b64(data))


EXECUTABLES = ["application/x-dosexec",
               "application/vnd.microsoft.portable-executable",
               "application/x-executable", "application/x-sharedlib"]

POLICY = {
    "module": "attachments",
    "archives": {"max_bytes": 50 * 1024 * 1024, "max_ratio": 100},
    "rules": [
        {"name": "docs-ok", "extensions": ["txt"], "where": "part",
         "action": "allow"},
        {"name": "exe", "extensions": ["exe", "scr", "bat"],
         "action": "strip"},
        {"name": "executable", "detected": EXECUTABLES, "action": "strip"},
        {"name": "script", "extensions": ["vbs"], "action": "reject"},
        {"name": "js", "glob": ["*.js"], "action": "quarantine"},
        {"name": "big", "larger_than": 3000000, "action": "reject"},
        {"name": "iso", "regex": r"\.(iso|img)$", "action": "reject"},
    ],
}

TEXT = part([b"Content-Type: text/plain; charset=utf-8",
             b"Content-Transfer-Encoding: quoted-printable"],
            b"Hello, see the attached files. caf=C3=A9\r\n")


class Attachments(PosternTestCase):
    postern_overrides = {"filters": [POLICY]}
    start_postern = True

    def deliver(self, msg, n=1):
        send(self.p, msg)
        got = self.p.wait_for_delivered(n)
        return got[-1]

    def check_stripped(self, sent, delivered, boundary, condemned, notices,
                       containers=()):
        """Parts at indexes `condemned` became notices naming the files
        in `notices`; every other part but the `containers` (checked on
        their own) is byte-identical."""
        before = raw_parts(sent, boundary)
        after = raw_parts(delivered, boundary)
        self.assertEqual(len(before), len(after))
        for i, (b, a) in enumerate(zip(before, after)):
            if i in containers:
                continue
            if i in condemned:
                self.assertNotEqual(sha(b), sha(a), "part %d kept" % i)
                self.assertTrue(a.startswith(
                    b"Content-Type: text/plain; charset=us-ascii\r\n"), a)
                self.assertIn(b"removed by the attachment policy", a)
                name = notices[condemned.index(i)]
                self.assertIn(name.encode(), a)
            else:
                self.assertEqual(sha(b), sha(a), "part %d changed:\n%r\n%r"
                                 % (i, b[:200], a[:200]))

    def test_name_forms(self):
        data = b"not really an executable\r\n" * 4
        forms = [
            ([b"Content-Disposition: attachment; filename=\"q1.exe\""],
             "q1.exe"),
            ([b"Content-Disposition: attachment; filename=t2.exe"], "t2.exe"),
            ([b"Content-Type: application/octet-stream; name=\"n3.exe\""],
             "n3.exe"),
            ([b"Content-Disposition: attachment; "
              b"filename*=UTF-8''%E2%82%AC4.exe"], "?4.exe"),
            ([b"Content-Disposition: attachment;\r\n filename*0*=UTF-8''c5"
              b"%20x; filename*1=.e;\r\n filename*2=\"xe\""], "c5 x.exe"),
            ([b"Content-Disposition: attachment; "
              b"filename*=iso-8859-1'fr'r%E9sum%E96.exe"], "r?sum?6.exe"),
            ([b"Content-Disposition: attachment; "
              b"filename=\"=?UTF-8?B?ZW53N" + b"y5leGU=?=\""], "enw7.exe"),
            ([b"CONTENT-DISPOSITION: ATTACHMENT; FILENAME=\"UP8.EXE\""],
             "UP8.EXE"),
            ([b"Content-Disposition: attachment;\r\n\tfilename=\r\n"
              b"\t\"fold9.exe\""], "fold9.exe"),
            # U+202E: shows as "invoice10exe.pdf", is "invoice10fdp.exe"
            ([b"Content-Disposition: attachment; "
              b"filename*=UTF-8''invoice10%E2%80%AEfdp.exe"],
             "invoice10fdp.exe"),
            ([b"Content-Disposition: attachment; filename=\"dots11.exe. . \""],
             "dots11.exe"),
            ([b"Content-Disposition: attachment; filename=\"ok12.pdf\"; "
              b"filename=\"dup12.exe\""], "dup12.exe"),
            ([b"Content-Type: application/pdf; name=\"hidden13.bat\"",
              b"Content-Disposition: attachment; filename=\"shown13.pdf\""],
             "hidden13.bat"),
            ([b"Content-Disposition: attachment; filename=\"..\\\\..\\\\"
              b"win\\\\path14.scr\""], "path14.scr"),
        ]
        kept = [
            TEXT,
            attachment([b"Content-Disposition: attachment; "
                        b"filename=\"notes.exe.txt\""], data),
            attachment([b"Content-Disposition: attachment; "
                        b"filename=\"report.pdf\""], b"%PDF-1.4\r\n" * 30,
                       b"application/pdf"),
            attachment([b"Content-Disposition: attachment; "
                        b"filename=\"exe\""], data),
        ]
        parts = kept + [attachment(h, data) for h, _ in forms]
        msg = multipart(parts)
        d = self.deliver(msg)
        condemned = list(range(len(kept), len(parts)))
        self.check_stripped(msg, d.body, BOUNDARY, condemned,
                            [n for _, n in forms])
        m = parse(d.body)
        self.assertEqual(len(list(m.iter_parts())), len(parts))
        summary = m["X-Postern-Attachments"]
        self.assertIsNotNone(summary)
        self.assertIn('stripped "q1.exe" (rule exe)', str(summary))
        self.assertIn('stripped "invoice10fdp.exe"', str(summary))
        self.assertEqual(len(m.get_all("X-Postern-Attachments")), 1)
        self.p.wait_for_log("event=attachment action=strip section=5 "
                            "file=\"q1.exe\" rule=exe")

    def test_every_name_judged(self):
        """A part that names itself more than once - a second filename, a
        plain and an RFC 2231 form that disagree, two RFC 2231 forms, a
        repeated or gapped continuation, folded or not, a comment before
        the name: mail clients differ on which name they show and save,
        so every one is judged, and the allowed .txt covers nothing."""
        data = b"not really an executable\r\n" * 4
        cd = b"Content-Disposition: attachment; "
        forms = [
            ([cd + b"filename=\"a.txt\"; filename=\"evil1.exe\""],
             "evil1.exe"),
            ([cd + b"filename=\"a.txt\";\r\n filename=\"evil2.exe\""],
             "evil2.exe"),
            ([cd + b"filename=\"a.txt\"; filename*=UTF-8''evil3.exe"],
             "evil3.exe"),
            ([cd + b"\r\n filename*=UTF-8''a.txt;\r\n filename=\"evil4.exe\""],
             "evil4.exe"),
            ([cd + b"filename*=UTF-8''a.txt; filename*0=\"evil5.exe\""],
             "evil5.exe"),
            ([cd + b"filename*=UTF-8''a.txt; filename*=UTF-8''evil6.exe"],
             "evil6.exe"),
            ([cd + b"filename*0=\"a.txt\"; filename*0=\"evil7.exe\""],
             "evil7.exe"),
            ([cd + b"filename*0=\"a.txt\"; filename*2=\"evil8.exe\""],
             "a.txtevil8.exe"),
            ([cd + b"filename=\"a.txt\"; (x) filename=\"evil9.exe\""],
             "evil9.exe"),
            ([b"Content-Type: application/octet-stream; name=\"a.txt\";\r\n"
              b" name*=UTF-8''evil10.exe", cd + b"filename=\"a.txt\""],
             "evil10.exe"),
        ]
        kept = [TEXT, attachment([cd + b"filename=\"a.txt\";\r\n"
                                  b" filename*=UTF-8''b.txt"], data)]
        parts = kept + [attachment(h, data) for h, _ in forms]
        msg = multipart(parts)
        d = self.deliver(msg)
        condemned = list(range(len(kept), len(parts)))
        self.check_stripped(msg, d.body, BOUNDARY, condemned,
                            [n for _, n in forms])
        summary = str(parse(d.body)["X-Postern-Attachments"])
        for _, n in forms:
            self.assertIn('stripped "%s" (rule exe)' % n, summary)
        self.assertNotIn("a.txt\"", summary)
        # reject: the name that rejects is judged beside the allowed one
        r = send(self.p, multipart([TEXT, attachment(
            [cd + b"filename*=UTF-8''a.txt;\r\n filename=\"run.vbs\""],
            b"MsgBox 1\r\n")]), final=554)
        self.assertEqual(r.text, '5.7.1 Message refused: attachment '
                         '"run.vbs" is not allowed (rule script)')
        # more names than are read: the inspection limit's action
        many = b"".join(b"; filename=\"n%d.txt\"" % i for i in range(8))
        r = send(self.p, multipart([TEXT, attachment(
            [b"Content-Disposition: attachment" + many
             + b"; filename=\"evil.exe\""], data)]), final=554)
        self.assertIn("(policy name-limit)", r.text)
        self.p.wait_for_log("action=reject section=2 file=\"n0.txt\" "
                            "policy=name-limit")
        # so do more uuencoded names in one text part than are kept
        uu = b"".join(b"begin 644 u%d.%s\r\nM5&AI<R!I<R!A\r\n`\r\nend\r\n"
                      % (i, b"exe" if i == 8 else b"txt") for i in range(9))
        r = send(self.p, multipart([part(
            [b"Content-Type: text/plain"], b"See:\r\n\r\n" + uu)]),
            final=554)
        self.assertIn("(policy name-limit)", r.text)
        time.sleep(0.3)
        self.assertEqual(self.p.maildir_count(), 1)

    def test_uuencode_and_nested(self):
        uu = (b"Here it is:\r\n\r\nbegin 644 uu.exe\r\n"
              b"M5&AI<R!I<R!A('1E<W0@;V8@=75E;F-O9&EN9RX*\r\n`\r\nend\r\n")
        inner = multipart([
            TEXT,
            attachment([b"Content-Disposition: attachment; "
                        b"filename=\"inner.exe\""], b"x" * 100),
        ], boundary=b"=_inner", top=False)
        inner = (b"From: <a@example.com>\r\nSubject: fwd\r\n"
                 b"MIME-Version: 1.0\r\n" + inner)
        related = multipart([
            part([b"Content-Type: text/html; charset=us-ascii"],
                 b"<p>hi <img src=\"cid:img1\"></p>\r\n"),
            attachment([b"Content-ID: <img1>",
                        b"Content-Disposition: inline; filename=\"logo.png\""],
                       b"\x89PNG\r\n\x1a\n" + b"\0" * 64, b"image/png"),
            attachment([b"Content-Disposition: attachment; "
                        b"filename=\"rel.scr\""], b"y" * 50),
        ], boundary=b"=_rel", subtype=b"related", top=False)
        alt = multipart([
            part([b"Content-Type: text/plain"], b"plain\r\n"),
            related,
        ], boundary=b"=_alt", subtype=b"alternative", top=False)
        msg = multipart([
            alt,
            part([b"Content-Type: text/plain"], uu),
            part([b"Content-Type: message/rfc822"], inner),
            part([b"Content-Type: text/plain; charset=utf-8",
                  b"Content-Transfer-Encoding: base64"],
                 b64(b"caf\xc3\xa9\r\nbegin 0755 b64uu.scr\r\n`\r\nend\r\n")),
        ])
        d = self.deliver(msg)
        m = parse(d.body)
        # structure: the same tree, every container still valid
        self.assertEqual([p.get_content_type() for p in m.walk()],
                         [p.get_content_type() for p in parse(msg).walk()
                          if True][:1] +
                         ["multipart/alternative", "text/plain",
                          "multipart/related", "text/html", "image/png",
                          "text/plain", "text/plain", "message/rfc822",
                          "multipart/mixed", "text/plain", "text/plain",
                          "text/plain"])
        self.assertEqual(m.defects, [])
        for p in m.walk():
            self.assertEqual(p.defects, [], p.get_content_type())
        self.check_stripped(msg, d.body, BOUNDARY, [1, 3],
                            ["uu.exe", "b64uu.scr"], containers=(0, 2))
        self.check_stripped(related, d.body[d.body.index(b"Content-Type: "
                                                         b"multipart/related"):],
                            b"=_rel", [2], ["rel.scr"])
        self.check_stripped(inner, d.body[d.body.index(b"From: <a@"):],
                            b"=_inner", [1], ["inner.exe"])
        s = str(m["X-Postern-Attachments"])
        for n in ("uu.exe", "rel.scr", "inner.exe", "b64uu.scr"):
            self.assertIn(n, s)

    def test_encoded_attached_message(self):
        # a message/rfc822 part sent base64-encoded (RFC 2046 forbids it,
        # readers decode it anyway): the parts inside are found, and the
        # whole attached message goes
        inner = (b"From: <a@example.com>\r\nSubject: inner\r\n"
                 b"MIME-Version: 1.0\r\n" +
                 multipart([TEXT, attachment(
                     [b"Content-Disposition: attachment; "
                      b"filename=\"deep.exe\""], b"q" * 30)],
                     boundary=b"=_enc_inner", top=False))
        msg = multipart([TEXT, part(
            [b"Content-Type: message/rfc822",
             b"Content-Transfer-Encoding: base64"], b64(inner))])
        d = self.deliver(msg)
        self.check_stripped(msg, d.body, BOUNDARY, [1], ["deep.exe"])

    def test_detected_executables(self):
        parts = [
            TEXT,
            attachment([b"Content-Disposition: attachment; "
                        b"filename=\"report.pdf\""], pe_image(),
                       b"application/pdf"),
            attachment([], pe_image()),                    # no name at all
            part([b"Content-Type: text/plain",
                  b"Content-Transfer-Encoding: base64"], b64(elf_image())),
            attachment([b"Content-Disposition: attachment; "
                        b"filename=\"photo.png\""],
                       b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + b"\0" * 40,
                       b"image/png"),
        ]
        msg = multipart(parts)
        d = self.deliver(msg)
        self.check_stripped(msg, d.body, BOUNDARY, [1, 2, 3],
                            ["report.pdf", "unnamed", "unnamed"])
        self.assertIn("rule executable", str(parse(d.body)
                                             ["X-Postern-Attachments"]))

    def test_archives(self):
        blocked = zip_of([("docs/readme.txt", b"hello\n"),
                          ("docs/setup.exe", pe_image())])
        clean = zip_of([("a.txt", b"a" * 1000), ("b.csv", b"1,2\n")])
        nested = zip_of([("outer.txt", b"x"),
                         ("inner.zip", zip_of([("deep/tool.bat",
                                                b"@echo off\r\n")]))])
        tgz = io.BytesIO()
        with tarfile.open(fileobj=tgz, mode="w:gz") as t:
            data = elf_image()
            info = tarfile.TarInfo("bin/tool")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        disguised = zip_of([("invoice.pdf", pe_image())])
        parts = [
            TEXT,
            attachment([b"Content-Disposition: attachment; "
                        b"filename=\"blocked.zip\""], blocked,
                       b"application/zip"),
            attachment([b"Content-Disposition: attachment; "
                        b"filename=\"clean.zip\""], clean,
                       b"application/zip"),
            attachment([b"Content-Disposition: attachment; "
                        b"filename=\"nested.zip\""], nested),
            attachment([b"Content-Disposition: attachment; "
                        b"filename=\"tools.tar.gz\""], tgz.getvalue(),
                       b"application/gzip"),
            attachment([b"Content-Disposition: attachment; "
                        b"filename=\"disguised.zip\""], disguised),
        ]
        msg = multipart(parts)
        d = self.deliver(msg)
        self.check_stripped(msg, d.body, BOUNDARY, [1, 3, 4, 5],
                            ["blocked.zip/docs/setup.exe",
                             "nested.zip/inner.zip/deep/tool.bat",
                             "tools.tar.gz/bin/tool",
                             "disguised.zip/invoice.pdf"])
        s = str(parse(d.body)["X-Postern-Attachments"])
        self.assertIn('"blocked.zip/docs/setup.exe" (rule exe)', s)
        self.assertIn('(rule executable)', s)

    def test_more_formats(self):
        d = os.path.join(self.tmp, "7z")
        os.makedirs(os.path.join(d, "tools"))
        with open(os.path.join(d, "tools", "setup.exe"), "wb") as f:
            f.write(pe_image())
        with open(os.path.join(d, "notes.txt"), "wb") as f:
            f.write(b"notes\n" * 20)
        subprocess.run(["7z", "a", "-bd", "-y", "t.7z", "tools", "notes.txt"],
                       cwd=d, check=True, timeout=60,
                       stdout=subprocess.DEVNULL)
        with open(os.path.join(d, "t.7z"), "rb") as f:
            sevenz = f.read()
        tbz = io.BytesIO()
        with tarfile.open(fileobj=tbz, mode="w:bz2") as t:
            info = tarfile.TarInfo("x/run.bat")
            info.size = 9
            t.addfile(info, io.BytesIO(b"@echo on\n"))
        clean_tar = io.BytesIO()
        with tarfile.open(fileobj=clean_tar, mode="w:xz") as t:
            info = tarfile.TarInfo("data.csv")
            info.size = 4
            t.addfile(info, io.BytesIO(b"1,2\n"))
        parts = [
            TEXT,
            attachment([b"Content-Disposition: attachment; "
                        b"filename=\"t.rar\""],
                       rar4([("readme.txt", b"hello\n"),
                             ("bin/run.exe", b"MZ" + b"\0" * 50)])),
            attachment([b"Content-Disposition: attachment; "
                        b"filename=\"t.7z\""], sevenz),
            attachment([b"Content-Disposition: attachment; "
                        b"filename=\"t.tar.bz2\""], tbz.getvalue()),
            # one compressed file: named by the outer name without .xz
            attachment([b"Content-Disposition: attachment; "
                        b"filename=\"helper.scr.xz\""],
                       lzma.compress(b"plain words, not a program\n")),
            attachment([b"Content-Disposition: attachment; "
                        b"filename=\"data.tar.xz\""], clean_tar.getvalue()),
            attachment([b"Content-Disposition: attachment; "
                        b"filename=\"log.bz2\""],
                       bz2.compress(b"log line\n" * 100)),
        ]
        msg = multipart(parts)
        d = self.deliver(msg)
        self.check_stripped(msg, d.body, BOUNDARY, [1, 2, 3, 4],
                            ["t.rar/bin/run.exe", "t.7z/tools/setup.exe",
                             "t.tar.bz2/x/run.bat", "helper.scr.xz/helper.scr"])

    def encrypted_zip(self):
        d = os.path.join(self.tmp, "enc")
        os.makedirs(d)
        with open(os.path.join(d, "secret.txt"), "wb") as f:
            f.write(b"the payload\n" * 10)
        subprocess.run(["zip", "-q", "-P", "s3cret", "enc.zip", "secret.txt"],
                       cwd=d, check=True, timeout=60)
        subprocess.run(["7z", "a", "-bd", "-y", "-ps3cret", "-mhe=on",
                        "enc.7z", "secret.txt"], cwd=d, check=True,
                       timeout=60, stdout=subprocess.DEVNULL)
        with open(os.path.join(d, "enc.zip"), "rb") as f:
            z = f.read()
        with open(os.path.join(d, "enc.7z"), "rb") as f:
            s = f.read()
        return z, s

    def test_encrypted_archives_refused(self):
        z, s = self.encrypted_zip()
        for name, data in ((b"locked.zip", z), (b"locked.7z", s)):
            msg = multipart([TEXT, attachment(
                [b"Content-Disposition: attachment; filename=\"" + name +
                 b"\""], data)])
            r = send(self.p, msg, final=554)
            self.assertTrue(r.text.startswith("5.7.1 Message refused: "
                                              "encrypted archive"), r.text)
            self.assertIn("(policy encrypted)", r.text)
        time.sleep(0.3)
        self.assertEqual(self.p.maildir_count(), 0)

    def test_zip_bomb_refused(self):
        bomb = zip_of([("zeros.bin", b"\0" * (30 * 1024 * 1024))])
        self.assertLess(len(bomb), 100000)
        msg = multipart([TEXT, attachment(
            [b"Content-Disposition: attachment; filename=\"bomb.zip\""],
            bomb)])
        r = send(self.p, msg, final=554)
        self.assertIn("archive beyond the inspection limits", r.text)
        self.p.wait_for_log("action=reject")
        time.sleep(0.3)
        self.assertEqual(self.p.maildir_count(), 0)

    def test_reject_replies(self):
        msg = multipart([TEXT, attachment(
            [b"Content-Disposition: attachment; filename=\"run.vbs\""],
            b"MsgBox 1\r\n")])
        r = send(self.p, msg, final=554)
        self.assertEqual(r.text, '5.7.1 Message refused: attachment '
                         '"run.vbs" is not allowed (rule script)')
        big = multipart([TEXT, attachment(
            [b"Content-Disposition: attachment; filename=\"data.bin\""],
            b"0123456789abcdef" * 200000)])
        r = send(self.p, big, final=552)
        self.assertTrue(r.text.startswith('5.3.4 Message refused: '
                                          'attachment "data.bin"'), r.text)
        time.sleep(0.3)
        self.assertEqual(self.p.maildir_count(), 0)
        self.p.wait_for_log(re.compile(
            rb"msg=[0-9A-F]{16} filter=attachments phase=message "
            rb"event=attachment action=reject section=2 file=\"run.vbs\""))

    def test_quarantine_and_release(self):
        msg = multipart([TEXT, attachment(
            [b"Content-Disposition: attachment; filename=\"app.js\""],
            b"alert(1)\r\n", b"text/javascript")])
        r = send(self.p, msg)
        qid = r.text.split()[-1]
        time.sleep(0.4)
        self.assertEqual(self.p.maildir_count(), 0)
        self.assertEqual(len(self.p.spool_files("hold")), 1)
        out = subprocess.run([POSTERN_BIN, "queue", "-c", self.p.conf_path,
                              "release", qid], capture_output=True,
                             timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        d = self.p.wait_for_delivered(1)[0]
        # held intact: nothing stripped, the reason in the summary field
        self.check_stripped(msg, d.body, BOUNDARY, [], [])
        self.assertEqual(str(parse(d.body)["X-Postern-Attachments"]),
                         'quarantined "app.js" (rule js)')

    def test_single_part_message(self):
        # the message is the attachment: its header keeps everything but
        # the Content-* fields, its body becomes the notice
        msg = (b"From: <a@example.com>\r\nSubject: just a file\r\n"
               b"MIME-Version: 1.0\r\n"
               b"Content-Type: application/octet-stream; name=\"solo.exe\"\r\n"
               b"Content-Transfer-Encoding: base64\r\n\r\n" + b64(b"x" * 90))
        d = self.deliver(msg)
        m = parse(d.body)
        self.assertEqual(str(m["Subject"]), "just a file")
        self.assertEqual(m.get_content_type(), "text/plain")
        self.assertIsNone(m["Content-Transfer-Encoding"])
        self.assertIn('"solo.exe" removed by the attachment policy',
                      m.get_content())
        self.assertEqual(str(m["X-Postern-Attachments"]),
                         'stripped "solo.exe" (rule exe)')

    def test_plain_message_untouched(self):
        msg = (b"From: <a@example.com>\r\nSubject: plain\r\n\r\n"
               b"begin not uuencode\r\njust text\r\n")
        d = self.deliver(msg)
        self.assertEqual(d.body, msg)

    def test_inbound_summary_removed(self):
        forged = (b"X-Postern-Attachments: stripped \"nothing\" (rule none)\r\n"
                  b"From: <a@example.com>\r\nSubject: plain\r\n\r\nhi\r\n")
        d = self.deliver(forged)
        self.assertEqual(d.body, forged[forged.index(b"From:"):])
        msg = multipart([TEXT, attachment(
            [b"Content-Disposition: attachment; filename=\"a.exe\""], b"z")],
            extra=(b"X-Postern-Attachments: forged",))
        d = self.deliver(msg, n=2)
        self.assertEqual(parse(d.body).get_all("X-Postern-Attachments"),
                         ['stripped "a.exe" (rule exe)'])



class Confinement(PosternTestCase):
    """Archives are walked in a helper process bounded by archives.memory:
    a 7z whose header alone asks libarchive for 512 MiB is refused as
    unreadable while the gateway's own peak memory stays where it was,
    and the next archive is inspected as usual."""

    def test_header_bomb_bounded(self):
        policy = dict(POLICY, archives=dict(POLICY["archives"],
                                            memory=64 << 20))
        p = self.postern({"filters": [policy]})
        bomb = sevenz_header_bomb(512 << 20)
        self.assertLess(len(bomb), 200000)
        hwm0 = loadgen.proc_kib(p.pid, "VmHWM")
        msg = multipart([TEXT, attachment(
            [b"Content-Disposition: attachment; filename=\"names.7z\""],
            bomb)])
        r = send(p, msg, final=554)
        self.assertIn("unreadable archive", r.text)
        grew = loadgen.proc_kib(p.pid, "VmHWM") - hwm0
        self.assertLess(grew, 64 << 10, "the gateway's peak grew %d KiB"
                        % grew)
        msg = multipart([TEXT, attachment(
            [b"Content-Disposition: attachment; filename=\"t.zip\""],
            zip_of([("run.exe", b"MZ" + b"\0" * 200)]))])
        send(p, msg)
        got = p.wait_for_delivered(1)[0]
        self.assertIn(b"t.zip/run.exe", got.raw)
        # the walk ran in postern-archive: stdin, stdout, stderr and its
        # socket are all it holds, under a seccomp filter, no privileges
        # to gain
        helpers = harness.child_pids(p.pid, b"postern-archive")
        self.assertGreaterEqual(len(helpers), 1)
        for h in helpers:
            self.assertEqual(sorted(int(fd) for fd in
                                    os.listdir("/proc/%d/fd" % h)),
                             [0, 1, 2, 3])
            with open("/proc/%d/status" % h) as f:
                status = f.read()
            self.assertRegex(status, r"\nSeccomp:\s+2\n")
            self.assertRegex(status, r"\nNoNewPrivs:\s+1\n")


class Metrics(PosternTestCase):
    def test_counters_move(self):
        mport = harness.free_port()
        p = self.postern({"filters": [POLICY],
                          "metrics": {"enabled": True, "port": mport}})
        before = prom.scrape(mport)
        for a in ("strip", "reject", "quarantine"):
            self.assertEqual(before.get("postern_attachments_actions_total",
                                        action=a), 0)
        send(p, multipart([TEXT, attachment(
            [b"Content-Disposition: attachment; filename=\"x.exe\""],
            b"z"), attachment(
            [b"Content-Disposition: attachment; filename=\"y.zip\""],
            zip_of([("y.scr", b"w")]))]))
        send(p, multipart([TEXT, attachment(
            [b"Content-Disposition: attachment; filename=\"r.vbs\""],
            b"z")]), final=554)
        p.wait_for_delivered(1)
        m = prom.scrape(mport)
        self.assertEqual(m.get("postern_attachments_actions_total",
                               action="strip"), 2)
        self.assertEqual(m.get("postern_attachments_actions_total",
                               action="reject"), 1)
        self.assertEqual(m.get("postern_attachments_scans_total",
                               kind="archive"), 1)
        self.assertGreaterEqual(m.get("postern_attachments_files_total"), 6)


class Deadline(PosternTestCase):
    def test_deadline_applies_failure_mode(self):
        # a scan that decompresses 60 MB (well over 10 ms anywhere) against
        # a 10 ms deadline: the chain entry's failure mode answers, the
        # scan is told to stop, and its late result is dropped
        policy = dict(POLICY, deadline=0.01,
                      archives={"max_bytes": 1 << 30, "max_ratio": 1000000})
        p = self.postern({"filters": [policy]})
        msg = multipart([TEXT, attachment(
            [b"Content-Disposition: attachment; filename=\"z.zip\""],
            zip_of([("zeros", b"\0" * (60 << 20))]))])
        r = send(p, msg, final=451)
        self.assertTrue(r.text.startswith("4.3.0 "), r.text)
        p.wait_for_log("event=filter_fail filter=attachments phase=message "
                       "why=\"deadline of 10 ms passed\" mode=tempfail")
        # the session goes on; a plain message needs no scan at all
        send(p, b"Subject: plain\r\n\r\nbegin 644 x.txt\r\n")
        self.assertEqual(len(p.wait_for_delivered(1)), 1)


class SignedAndEncrypted(PosternTestCase):
    def signed_msg(self):
        inner = multipart([TEXT, attachment(
            [b"Content-Disposition: attachment; filename=\"s.exe\""],
            b"q" * 40)], boundary=b"=_signed_inner", top=False)
        return multipart([inner, part(
            [b"Content-Type: application/pkcs7-signature; name=smime.p7s",
             b"Content-Transfer-Encoding: base64"], b64(b"\x30\x82sig"))],
            subtype=b"signed; protocol=\"application/pkcs7-signature\"")

    def test_signed_policies(self):
        base = {"module": "attachments",
                "rules": [{"name": "exe", "extensions": ["exe"],
                           "action": "strip"}]}
        # default: stripped anyway
        p = self.postern({"filters": [base]})
        d = (send(p, self.signed_msg()), p.wait_for_delivered(1)[0])[1]
        self.assertIn(b"\"s.exe\" removed by the attachment policy", d.body)
        p.stop()
        # signed = "reject": the whole message is refused
        shutil.rmtree(os.path.join(self.tmp, "mail"), ignore_errors=True)
        p = self.postern({"filters": [dict(base, signed="reject")]},
                         name="p2")
        r = send(p, self.signed_msg(), final=554)
        self.assertIn("and it is signed", r.text)
        p.stop()
        # signed = "pass" on the rule: delivered as sent
        rule = dict(base["rules"][0], signed="pass")
        p = self.postern({"filters": [dict(base, rules=[rule])]}, name="p3")
        msg = self.signed_msg()
        send(p, msg)
        d = p.wait_for_delivered(1)[0]
        self.assertEqual(d.body, msg)

    def test_encrypted_message(self):
        msg = multipart([
            part([b"Content-Type: application/pgp-encrypted"],
                 b"Version: 1\r\n"),
            part([b"Content-Type: application/octet-stream"],
                 b"-----BEGIN PGP MESSAGE-----\r\nhQEMA\r\n"
                 b"-----END PGP MESSAGE-----\r\n"),
        ], subtype=b"encrypted; protocol=\"application/pgp-encrypted\"")
        base = {"module": "attachments",
                "rules": [{"name": "exe", "extensions": ["exe"],
                           "action": "strip"}]}
        p = self.postern({"filters": [base]})
        send(p, msg)
        self.assertEqual(p.wait_for_delivered(1)[0].body, msg)
        p.stop()
        p = self.postern({"filters": [dict(base, encrypted="reject")]},
                         name="p2")
        r = send(p, msg, final=554)
        self.assertIn("encrypted content", r.text)


class CheckConfig(PosternTestCase):
    def check(self, filters_text):
        path = os.path.join(self.tmp, "bad.conf")
        with open(path, "w") as f:
            f.write('listeners = ({ address = "127.0.0.1"; port = 2525; });\n'
                    'filters = (\n' + filters_text + '\n);\n')
        out = subprocess.run([POSTERN_BIN, "check-config", path],
                             capture_output=True, timeout=30)
        self.assertNotEqual(out.returncode, 0)
        return out.stderr.decode()

    def test_errors_with_lines(self):
        err = self.check(
            '{ module = "attachments";\n'                       # line 3
            '  archives = { formats = ["zip", "arj"]; };\n'     # 4
            '  colour = "blue";\n'                              # 5
            '  rules = (\n'
            '    { name = "a"; extensions = ["exe"]; action = "burn"; },\n'
            '    { name = "b"; regex = "([a-z"; action = "strip"; },\n'
            '    { name = "c"; action = "strip"; },\n'          # 9
            '    { name = "d"; glob = "*.js"; action = "strip"; size = 1; }\n'
            '  );\n'
            '}')
        self.assertIn('bad.conf:4: ', err)
        self.assertIn('unknown archive format "arj"', err)
        self.assertRegex(err, r"bad.conf:5: .*unknown key 'colour'|"
                         r"bad.conf:5: .*colour")
        self.assertRegex(err, r'bad.conf:7: .*unknown action "burn"')
        self.assertRegex(err, r'bad.conf:8: .*regex "\(\[a-z" does not '
                         r'compile')
        self.assertRegex(err, r"bad.conf:9: .*a rule needs a condition")
        self.assertRegex(err, r"bad.conf:10: .*unknown rule key 'size'")

    def test_memory_must_hold_a_nested_archive(self):
        err = self.check(
            '{ module = "attachments";\n'                       # line 3
            '  archives = { memory = 33554432;\n'               # 4
            '               nested_max = 67108864; };\n'
            '  rules = ({ extensions = ["exe"]; action = "strip"; });\n'
            '}')
        self.assertRegex(err, r"bad.conf:4: .*archives.memory \(33554432\) "
                         r"must exceed nested_max \(67108864\) by 16 MiB")

    def test_settings_too_large_for_the_helper(self):
        # the helper configures itself from the settings written out: a
        # policy beyond what it takes (1 MiB) is refused here, not at the
        # first archive
        exts = ", ".join('"e%06d"' % i for i in range(110000))
        err = self.check(
            '{ module = "attachments";\n'                       # line 3
            '  rules = ({ extensions = [' + exts + '];\n'
            '             action = "strip"; });\n'
            '}')
        self.assertRegex(err, r"bad.conf:3: .*the module's settings take "
                         r"\d+ octets written out, more than the 1048576 "
                         r"its archive helper takes")

    def test_helper_must_be_an_executable(self):
        err = self.check(
            '{ module = "attachments";\n'                       # line 3
            '  helper = "/nonexistent/postern-archive";\n'      # 4
            '  rules = ({ extensions = ["exe"]; action = "strip"; });\n'
            '}')
        self.assertRegex(err, r"bad.conf:4: .*helper /nonexistent/"
                         r"postern-archive is not an executable file: No "
                         r"such file or directory")


if __name__ == "__main__":
    unittest.main()
