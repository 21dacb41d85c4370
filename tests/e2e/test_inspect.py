"""test_inspect - `postern inspect --json` against Python's email package.

Every message of the generated corpus (mime_corpus.py) is written to a
temporary directory and parsed twice: by `postern inspect --json` and by
email.message_from_bytes(policy=email.policy.default). For each part, in
depth-first order, the two must agree on the IMAP section number, whether
it is a container, content type, charset, filename, disposition, transfer
encoding, and for leaves the decoded size and SHA-256. Where the corpus
marks a malformed case as differing, the test checks the behaviour postern
chose instead (named per case below).
"""

import email
import email.policy
import hashlib
import json
import os
import subprocess
import tempfile
import unittest

import mime_corpus

BIN = os.environ.get("POSTERN_BIN", "postern")


def inspect(path, *extra):
    p = subprocess.run([BIN, "inspect", *extra, path], capture_output=True,
                       timeout=60)
    return p


def inspect_json(path):
    p = inspect(path, "--json")
    if p.returncode != 0:
        raise AssertionError("inspect failed (%d): %s" %
                             (p.returncode, p.stderr.decode(errors="replace")))
    return json.loads(p.stdout)


def py_parts(data):
    """The corpus message as Python's email sees it, numbered like postern."""
    m = email.message_from_bytes(data, policy=email.policy.default)
    out = []

    def visit(p, section, prefix):
        container = p.is_multipart()
        cte = p.get("content-transfer-encoding")
        ent = {
            "section": section,
            "container": container,
            "content_type": p.get_content_type(),
            "charset": p.get_content_charset(),
            "filename": p.get_filename(),
            "disposition": p.get_content_disposition(),
            "transfer_encoding": (str(cte).strip().lower() if cte is not None
                                  else "7bit"),
        }
        if not container:
            body = p.get_payload(decode=True) or b""
            ent["size"] = len(body)
            ent["sha256"] = hashlib.sha256(body).hexdigest()
        out.append(ent)
        if not container:
            return
        if p.get_content_maintype() == "message":
            inner = p.get_payload()[0]
            if inner.is_multipart():
                visit(inner, section + ".TEXT", section)
            else:
                visit(inner, section + ".1", section + ".1")
        else:
            for i, c in enumerate(p.get_payload(), 1):
                s = "%s.%d" % (prefix, i) if prefix else str(i)
                visit(c, s, s)

    if m.is_multipart() and m.get_content_maintype() == "multipart":
        visit(m, "TEXT", "")
    else:
        visit(m, "1", "1")
    return m, out


KEYS = ("section", "container", "content_type", "charset", "filename",
        "disposition", "transfer_encoding", "size", "sha256")


def pst_view(doc):
    return [{k: p[k] for k in KEYS if k in p} for p in doc["parts"]]


class InspectVsPython(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="pst-inspect-")
        cls.cases = {}
        for c in mime_corpus.cases():
            path = os.path.join(cls.tmp.name, c.name + ".eml")
            with open(path, "wb") as f:
                f.write(c.data)
            cls.cases[c.name] = (c, path)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_agrees_with_python(self):
        for name, (c, path) in self.cases.items():
            if c.differs:
                continue
            with self.subTest(case=name):
                doc = inspect_json(path)
                _, want = py_parts(c.data)
                got = pst_view(doc)
                self.assertEqual(len(got), len(want),
                                 "%s: parts\npostern %s\npython  %s" %
                                 (name, got, want))
                for g, w in zip(got, want):
                    self.assertEqual(g, w, "%s: part %s" % (name, w["section"]))

    def test_subject_agrees_with_python(self):
        # Unstructured fields: RFC 2047 decoding must match Python's.
        for name, (c, path) in self.cases.items():
            if c.differs:
                continue
            with self.subTest(case=name):
                doc = inspect_json(path)
                m = email.message_from_bytes(c.data,
                                             policy=email.policy.default)
                for h in doc["headers"]:
                    if h["name"].lower() == "subject":
                        self.assertEqual(h["value"], str(m["subject"]))

    def test_offsets(self):
        # Offsets point into the file: a leaf's body octets, decoded by
        # Python's own codecs, give the reported size and hash.
        import base64 as b64mod
        import quopri as qpmod
        for name, (c, path) in self.cases.items():
            with self.subTest(case=name):
                doc = inspect_json(path)
                self.assertEqual(doc["size"], len(c.data))
                for p in doc["parts"]:
                    self.assertLessEqual(p["header_offset"], p["body_offset"])
                    self.assertLessEqual(p["body_offset"], p["body_end"])
                    self.assertLessEqual(p["body_end"], len(c.data))
                    if p["container"] or p["flags"] or c.differs:
                        continue
                    raw = c.data[p["body_offset"]:p["body_end"]]
                    cte = p["transfer_encoding"]
                    if cte == "base64":
                        raw = b64mod.b64decode(b"".join(raw.split()))
                    elif cte == "quoted-printable":
                        raw = qpmod.decodestring(raw)
                    self.assertEqual(len(raw), p["size"], p["section"])
                    self.assertEqual(hashlib.sha256(raw).hexdigest(),
                                     p["sha256"], p["section"])

    def test_flags(self):
        want = {
            "missing_close_boundary": {"missing_close_boundary"},
            "no_start_boundary": {"missing_start_boundary"},
            "no_boundary_param": {"multipart_without_boundary"},
            "bad_base64": {"bad_base64"},
            "bad_base64_lone_sextet": {"bad_base64"},
            "header_8bit_nul": {"header_8bit", "header_nul"},
            "no_blank_line": {"missing_header_separator"},
            "no_blank_line_multipart": {"missing_header_separator"},
            "nested_same_boundary": {"missing_start_boundary"},
            "bad_content_type": {"bad_content_type"},
            "qp_malformed": {"bad_quoted_printable"},
            "depth_40": {"depth_limit"},
            "close_delimiter_in_preamble": {"missing_start_boundary"},
            "no_start_boundary_nested": {"missing_start_boundary"},
            "empty_subtype": {"bad_content_type"},
            "content_type_trailing_junk": {"bad_content_type"},
            "cte_trailing_junk": {"bad_transfer_encoding"},
        }
        for name, (c, path) in self.cases.items():
            with self.subTest(case=name):
                doc = inspect_json(path)
                self.assertEqual(set(doc["flags"]), want.get(name, set()))
                union = set()
                for p in doc["parts"]:
                    union |= set(p["flags"])
                self.assertEqual(union, set(doc["flags"]))

    def part(self, doc, section):
        for p in doc["parts"]:
            if p["section"] == section:
                return p
        self.fail("no part %s in %s" % (section, doc["parts"]))

    def test_differences(self):
        # The malformed cases where postern deliberately parts ways with
        # Python's email package; the reason is in mime_corpus.py.
        sha = lambda b: hashlib.sha256(b).hexdigest()
        names = {n for n, (c, _) in self.cases.items() if c.differs}
        self.assertEqual(names, {
            "bad_base64_lone_sextet", "qp_trailing_blanks", "obs_header_colon",
            "rfc2231_and_plain_filename", "depth_40",
            "close_delimiter_in_preamble", "no_start_boundary_nested",
            "delimiter_then_close", "empty_subtype", "cte_trailing_junk",
            "content_type_trailing_junk"})
        for name in names:
            # each named difference really is one
            c = self.cases[name][0]
            _, want = py_parts(c.data)
            self.assertNotEqual(pst_view(inspect_json(self.cases[name][1])),
                                want, name)

        doc = inspect_json(self.cases["close_delimiter_in_preamble"][1])
        p = self.part(doc, "1")
        self.assertEqual((p["container"], p["sha256"]),
                         (False, sha(b"preamble line")))
        self.assertEqual(doc["flags"], ["missing_start_boundary"])

        doc = inspect_json(self.cases["no_start_boundary_nested"][1])
        p = self.part(doc, "1")
        self.assertEqual((p["container"], p["content_type"], p["sha256"]),
                         (False, "multipart/alternative", sha(b"inner text")))

        doc = inspect_json(self.cases["delimiter_then_close"][1])
        self.assertEqual([p["section"] for p in doc["parts"]], ["TEXT", "1"])
        self.assertEqual(self.part(doc, "1")["sha256"], sha(b"one"))
        self.assertEqual(doc["flags"], [])

        doc = inspect_json(self.cases["empty_subtype"][1])
        p = self.part(doc, "1")
        self.assertEqual((p["content_type"], p["flags"]),
                         ("text/plain", ["bad_content_type"]))

        c, path = self.cases["content_type_trailing_junk"]
        doc = inspect_json(path)
        _, want = py_parts(c.data)
        want[0]["content_type"] = "multipart/mixed"
        self.assertEqual(pst_view(doc), want)
        self.assertEqual(doc["flags"], ["bad_content_type"])

        doc = inspect_json(self.cases["cte_trailing_junk"][1])
        p = self.part(doc, "1")
        self.assertEqual((p["transfer_encoding"], p["sha256"], p["flags"]),
                         ("base64", sha(b"abc"), ["bad_transfer_encoding"]))
        doc = inspect_json(self.cases["bad_base64_lone_sextet"][1])
        p = self.part(doc, "1")
        self.assertEqual((p["size"], p["sha256"]), (3, sha(b"abc")))
        self.assertIn("bad_base64", p["flags"])

        doc = inspect_json(self.cases["qp_trailing_blanks"][1])
        want = b"trailing\r\nsoftbreak\r\n"
        self.assertEqual((self.part(doc, "1")["size"],
                          self.part(doc, "1")["sha256"]),
                         (len(want), sha(want)))

        doc = inspect_json(self.cases["obs_header_colon"][1])
        self.assertEqual([(p["section"], p["content_type"], p["container"])
                          for p in doc["parts"]],
                         [("TEXT", "multipart/mixed", True),
                          ("1", "text/plain", False)])
        self.assertEqual(self.part(doc, "1")["sha256"], sha(b"x"))

        doc = inspect_json(self.cases["rfc2231_and_plain_filename"][1])
        self.assertEqual(self.part(doc, "1")["filename"], "新.pdf")

        doc = inspect_json(self.cases["depth_40"][1])
        self.assertEqual(len(doc["parts"]), 33)
        last = doc["parts"][-1]
        self.assertEqual((last["depth"], last["container"],
                          last["content_type"]), (32, False, "multipart/mixed"))
        self.assertEqual(last["flags"], ["depth_limit"])
        self.assertTrue(all(p["container"] for p in doc["parts"][:-1]))


class InspectVsPythonBuilt(unittest.TestCase):
    def test_python_built_messages(self):
        # Messages composed by Python's own email API: postern must agree
        # on every part and on the Subject, and find nothing to flag.
        with tempfile.TemporaryDirectory(prefix="pst-inspect-") as tmp:
            for c in mime_corpus.python_built():
                with self.subTest(case=c.name):
                    path = os.path.join(tmp, c.name + ".eml")
                    with open(path, "wb") as f:
                        f.write(c.data)
                    doc = inspect_json(path)
                    m, want = py_parts(c.data)
                    self.assertEqual(pst_view(doc), want)
                    self.assertEqual(doc["flags"], [])
                    subj = [h["value"] for h in doc["headers"]
                            if h["name"] == "Subject"]
                    self.assertEqual(subj, [str(m["subject"])])


class InspectCli(unittest.TestCase):
    def test_text_output(self):
        c = [c for c in mime_corpus.cases() if c.name == "qq_to_163"][0]
        with tempfile.NamedTemporaryFile(suffix=".eml") as f:
            f.write(c.data)
            f.flush()
            p = inspect(f.name)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode()
        self.assertIn('From: "1132803951" <1132803951@qq.com>', out)
        self.assertRegex(out, r"\n  TEXT +multipart/alternative 8bit "
                              r"\(container\)\n")
        self.assertRegex(out, r"\n    1 +text/plain charset=iso-8859-1 base64 "
                              r"171 octets sha256=[0-9a-f]{64}\n")
        self.assertIn("flags: none", out)

    def test_errors(self):
        p = inspect("/nonexistent/message.eml")
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"/nonexistent/message.eml", p.stderr)
        p = subprocess.run([BIN, "inspect"], capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"usage", p.stderr)
        p = subprocess.run([BIN, "inspect", "--bogus", "x"],
                           capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 2)

    def test_empty_file(self):
        with tempfile.NamedTemporaryFile(suffix=".eml") as f:
            doc = inspect_json(f.name)
        self.assertEqual(doc["size"], 0)
        self.assertEqual([(p["section"], p["size"]) for p in doc["parts"]],
                         [("1", 0)])
