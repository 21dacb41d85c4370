"""test_operations_doc.py - the configuration in docs/OPERATIONS.md is
what the tools accept: its haproxy.cfg passes `haproxy -c`, and the
postern configs of the HAProxy section and of the two recipes pass
`postern check-config` (with their /etc and /var paths moved into a
temporary directory holding the files they name). (The recipes are run
end to end by test_recipes.py, postern behind haproxy by test_proxy.py.)"""

import os
import re
import shutil
import subprocess
import tempfile
import unittest

import harness
from test_auth import crypt_hash
from test_tls import make_certs

SRC = os.environ.get("POSTERN_SRC",
                     os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                  "..", ".."))
DOC = os.path.join(SRC, "docs", "OPERATIONS.md")


def blocks(after):
    """The fenced code blocks of the section whose heading starts with
    `after`, in order."""
    text = open(DOC).read()
    i = text.index("\n## " + after)
    j = text.find("\n## ", i + 1)
    return re.findall(r"```[a-z]*\n(.*?)```", text[i:j if j > 0 else None],
                      re.S)


class OperationsDoc(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pst-opsdoc-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_haproxy_cfg(self):
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.assertTrue(os.path.exists(haproxy), "haproxy: run tools/setup")
        cfg = [b for b in blocks("Behind HAProxy") if "frontend" in b]
        self.assertEqual(len(cfg), 1)
        path = os.path.join(self.tmp, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(cfg[0])
        r = subprocess.run([haproxy, "-c", "-f", path], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def check_recipe(self, section):
        conf = [b for b in blocks(section) if "listeners" in b][0]
        etc = os.path.join(self.tmp, "etc")
        os.makedirs(etc)
        certs = make_certs()
        self.addCleanup(shutil.rmtree, certs, True)
        for name in re.findall(r"/etc/postern/([\w.]+)", conf):
            path = os.path.join(etc, name)
            if name.endswith(".pem"):
                shutil.copy(os.path.join(certs, "a.pem"), path)
            elif name.endswith(".key"):
                shutil.copy(os.path.join(certs, "a.key"), path)
            elif name == "passwd":
                with open(path, "w") as f:
                    f.write("app:%s\n" % crypt_hash("pw", "$6$"))
                os.chmod(path, 0o640)
            else:
                with open(path, "w") as f:
                    f.write("user@example.org\n" if name == "recipients"
                            else "app@app1.example.com app\n")
        conf = conf.replace("/etc/postern", etc).replace(
            "/var/spool/postern", os.path.join(self.tmp, "spool"))
        path = os.path.join(self.tmp, "postern.conf")
        with open(path, "w") as f:
            f.write(conf)
        r = subprocess.run([harness.POSTERN_BIN, "check-config", path],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_haproxy_postern_config(self):
        self.check_recipe("Behind HAProxy")

    def test_attachment_recipe_config(self):
        self.check_recipe("Recipe: an attachment policy")

    def test_smarthost_recipe_config(self):
        self.check_recipe("Recipe: an application relay")


if __name__ == "__main__":
    unittest.main()
