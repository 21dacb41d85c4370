"""`postern check-config FILE`: exit 0 and "FILE: ok" on a valid file; exit 1
with every error on stderr, one "FILE:LINE: text" per line, on a broken one.
check-config only reads: it never creates the spool or anything else.
`postern -n -c FILE` prints the settings that differ from the defaults."""

import os
import re
import shutil
import subprocess
import tempfile
import unittest

import harness

SRC = os.environ.get("POSTERN_SRC",
                     os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                  "..", ".."))
BUNDLED = os.path.abspath(os.path.join(SRC, "conf", "postern.conf"))


class CheckConfigTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pst-check-config-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def run_check(self, *args):
        p = subprocess.run([harness.POSTERN_BIN, "check-config", *args],
                           cwd=self.tmp, capture_output=True, timeout=30)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def assert_error_lines(self, path, err):
        lines = err.splitlines()
        self.assertTrue(lines, "no errors printed")
        for line in lines:
            self.assertRegex(line, "^" + re.escape(path) + r":\d+: \S",
                             "error line without file:line")
        return lines

    def test_bundled_config_ok(self):
        code, out, err = self.run_check(BUNDLED)
        self.assertEqual(code, 0, err)
        self.assertEqual(out, BUNDLED + ": ok\n")
        self.assertEqual(err, "")
        # nothing was created in the working directory (var/spool, ...)
        self.assertEqual(os.listdir(self.tmp), [])

    def test_harness_default_config_ok(self):
        # the config every e2e test starts from must itself be valid
        path = self.write("h.conf", harness.render_libconfig(
            harness.default_config(self.tmp, 2525)))
        code, out, err = self.run_check(path)
        self.assertEqual(code, 0, err)
        self.assertEqual(out, path + ": ok\n")

    def test_every_error_reported(self):
        path = self.write("bad.conf", "\n".join([
            'hostname = "mx.example";',                              # 1
            'bogus = 1;',                                            # 2
            'limits = {',                                            # 3
            '    recipients = 0;',                                   # 4
            '    message_size = 50000000000;',                       # 5
            '};',                                                    # 6
            'relay = {',                                             # 7
            '    trusted_networks = [ "10.0.0.0/33", "::1/129",',    # 8
            '                         "fe80::zz/64" ];',             # 9
            '};',                                                    # 10
            'smtp = { bare_newline = "strip"; };',                   # 11
            'listeners = (',                                         # 12
            '    { address = "127.0.0.1"; port = 2525; },',          # 13
            '    { address = "127.0.0.1"; port = 2525; },',          # 14
            '    { address = "::1"; port = 465; tls = "implicit"; }',  # 15
            ');',                                                    # 16
            'delivery = { default_route = "carrier-pigeon"; };',     # 17
            '',
        ]))
        code, out, err = self.run_check(path)
        self.assertEqual(code, 1, out + err)
        self.assertEqual(out, "")
        lines = self.assert_error_lines(path, err)
        want = [
            ":2: unknown top-level key 'bogus'",
            ":4: limits.recipients: 0 is out of range 1..100000",
            ":5: limits.message_size: 50000000000 is out of range",
            ':8: relay.trusted_networks: bad CIDR "10.0.0.0/33": bad prefix '
            'length (0..32)',
            ':8: relay.trusted_networks: bad CIDR "::1/129": bad prefix '
            'length (0..128)',
            ':9: relay.trusted_networks: bad CIDR "fe80::zz/64"',
            ':11: smtp.bare_newline: "strip" is not one of "normalize", '
            '"reject"',
            ":14: listeners[1]: duplicate listener 127.0.0.1:2525",
            ':15: listeners[2]: tls = "implicit" needs tls.certificates',
            ':17: delivery.default_route: "carrier-pigeon": unknown kind',
        ]
        for w in want:
            self.assertTrue(any((path + w) in line for line in lines),
                            "missing %r in:\n%s" % (w, err))
        self.assertEqual(len(lines), len(want), err)

    def test_syntax_error_line(self):
        path = self.write("syntax.conf",
                          'limits = {\n    recipients = 5;\n    hops = ;\n};\n')
        code, out, err = self.run_check(path)
        self.assertEqual(code, 1)
        lines = self.assert_error_lines(path, err)
        self.assertEqual(len(lines), 1, err)
        self.assertRegex(lines[0], "^" + re.escape(path) + r":3: syntax error")

    def test_missing_file(self):
        path = os.path.join(self.tmp, "absent.conf")
        code, out, err = self.run_check(path)
        self.assertEqual(code, 1)
        self.assertEqual(err, path + ": cannot open: No such file or "
                              "directory\n")

    def test_print_changed(self):
        # postern -n -c FILE: only what differs from the defaults, in a form
        # that loads back
        p = subprocess.run([harness.POSTERN_BIN, "-n", "-c", BUNDLED],
                           cwd=self.tmp, capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.decode(),
                         'hostname = "postern.localhost";\n'
                         'user = "postern";\ngroup = "postern";\n')
        path = self.write("changed.conf",
                          'limits = { recipients = 7; };\n'
                          'listeners = ( { port = 2526; } );\n')
        p = subprocess.run([harness.POSTERN_BIN, "-n", "-c", path],
                           cwd=self.tmp, capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode()
        self.assertIn("limits = {\n    recipients = 7;\n};\n", out)
        self.assertIn('{ address = "127.0.0.1"; port = 2526; tls = "none"; '
                      'auth = false; auth_plaintext = false; '
                      'auth_required = false; }', out)
        again = self.write("again.conf", out)
        code, _, err = self.run_check(again)
        self.assertEqual(code, 0, err)
        bad = self.write("bad.conf", "limits = { hops = 0; };\n")
        p = subprocess.run([harness.POSTERN_BIN, "-n", "-c", bad],
                           cwd=self.tmp, capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stdout, b"")
        self.assert_error_lines(bad, p.stderr.decode())

    def test_print_hides_secrets(self):
        path = self.write("secret.conf",
                          'delivery = { routes = ( { domain = "x.test"; '
                          'route = "smtp:127.0.0.1:2500"; auth_user = "u"; '
                          'auth_password = "s3cret-pw"; } ); };\n')
        p = subprocess.run([harness.POSTERN_BIN, "-n", "-c", path],
                           cwd=self.tmp, capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode()
        self.assertNotIn("s3cret-pw", out)
        self.assertIn('auth_password = "(hidden)"', out)

    def test_usage(self):
        code, out, err = self.run_check()
        self.assertEqual(code, 2)
        self.assertIn("usage: postern check-config FILE", err)


if __name__ == "__main__":
    unittest.main()
