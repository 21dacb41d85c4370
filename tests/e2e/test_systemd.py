"""test_systemd.py - contrib/postern.service: `systemd-analyze verify`
accepts it (with ExecStart pointing at the built binary, since the unit
names /usr/sbin/postern), and it says what docs/OPERATIONS.md promises:
Type=notify, ExecReload sending SIGHUP, the sandboxing and the one
capability. The notifications themselves are tested in test_drain.py
(READY, STOPPING) and test_reload.py (RELOADING, READY)."""

import configparser
import os
import shutil
import subprocess
import tempfile
import unittest

import harness

SRC = os.environ.get("POSTERN_SRC",
                     os.path.join(os.path.dirname(__file__), "..", ".."))
UNIT = os.path.join(SRC, "contrib", "postern.service")


class Unit(unittest.TestCase):

    def test_verify(self):
        tool = shutil.which("systemd-analyze")
        self.assertIsNotNone(tool, "systemd-analyze missing: run tools/setup")
        d = tempfile.mkdtemp(prefix="pst-unit-")
        self.addCleanup(shutil.rmtree, d, True)
        with open(UNIT) as f:
            text = f.read().replace("/usr/sbin/postern", harness.POSTERN_BIN)
        path = os.path.join(d, "postern.service")
        with open(path, "w") as f:
            f.write(text)
        r = subprocess.run([tool, "verify", path], capture_output=True,
                           text=True, timeout=60)
        out = (r.stdout + r.stderr).strip()
        self.assertEqual(r.returncode, 0, out)
        self.assertEqual([l for l in out.splitlines() if "postern" in l], [],
                         out)

    def test_settings(self):
        c = configparser.ConfigParser(strict=False, interpolation=None)
        c.optionxform = str
        c.read(UNIT)
        svc = c["Service"]
        self.assertEqual(svc["Type"], "notify")
        self.assertEqual(svc["ExecReload"], "/bin/kill -HUP $MAINPID")
        self.assertEqual(svc["ProtectSystem"], "strict")
        self.assertEqual(svc["NoNewPrivileges"], "yes")
        self.assertEqual(svc["PrivateTmp"], "yes")
        self.assertEqual(svc["CapabilityBoundingSet"], "CAP_NET_BIND_SERVICE")
        self.assertIn("/var/spool/postern", svc["ReadWritePaths"].split())
        self.assertIn("check-config", svc["ExecStartPre"])


if __name__ == "__main__":
    unittest.main()
