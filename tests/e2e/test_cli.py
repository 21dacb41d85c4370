"""The postern command's usage: `postern --help`, `postern -h` and every
subcommand's -h/--help print the usage on stdout and exit 0 with nothing
on stderr; a usage error prints the same text on stderr and exits 2."""

import subprocess
import unittest

import harness

QUEUE = ["list [--json]", "show ID [--json]", "flush", "delete ID|all",
         "hold ID", "release ID"]


def run(*args):
    p = subprocess.run([harness.POSTERN_BIN, *args], capture_output=True,
                       timeout=30)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


class Help(unittest.TestCase):
    def assert_usage(self, text, wants):
        lines = text.splitlines()
        self.assertTrue(lines and lines[0].startswith("usage: postern "),
                        text)
        for w in wants:
            self.assertIn(w, text)
        return lines

    def test_whole_command(self):
        for flag in ("--help", "-h"):
            code, out, err = run(flag)
            self.assertEqual((code, err), (0, ""), flag)
            lines = self.assert_usage(out, [
                "postern -c FILE", "postern -n -c FILE",
                "postern check-config FILE", "postern inspect [--json] FILE"]
                + ["postern queue [-c FILE | -s SOCKET] " + q for q in QUEUE])
            self.assertEqual(len(lines), 10)
        # -h after the options of a run is still a request for help
        code, out, err = run("-c", "/nonexistent.conf", "--help")
        self.assertEqual((code, err), (0, ""))
        self.assertIn("postern -c FILE", out)

    def test_subcommands(self):
        cases = {
            "check-config": ["postern check-config FILE"],
            "inspect": ["postern inspect [--json] FILE"],
            "queue": ["postern queue [-c FILE | -s SOCKET] " + q
                      for q in QUEUE],
        }
        for sub, wants in cases.items():
            for args in ([sub, "--help"], [sub, "-h"]):
                code, out, err = run(*args)
                self.assertEqual((code, err), (0, ""), args)
                lines = self.assert_usage(out, wants)
                self.assertEqual(len(lines), len(wants), out)
        # anywhere among the subcommand's arguments
        for args in (["queue", "list", "--help"],
                     ["queue", "-s", "/nonexistent.sock", "show", "X", "-h"],
                     ["inspect", "--json", "-h"]):
            code, out, err = run(*args)
            self.assertEqual((code, err), (0, ""), args)
            self.assertTrue(out.startswith("usage: postern " + args[0]))

    def test_usage_errors(self):
        for args, want in ((["bogus"], "postern -c FILE"),
                           ([], "postern -c FILE"),
                           (["check-config"], "postern check-config FILE"),
                           (["inspect", "--bogus", "x"],
                            "postern inspect [--json] FILE"),
                           (["queue", "frobnicate"], "postern queue"),
                           (["queue", "flush", "--json"], "postern queue")):
            code, out, err = run(*args)
            self.assertEqual((code, out), (2, ""), args)
            self.assertTrue(err.startswith("usage: ") and want in err,
                            (args, err))


if __name__ == "__main__":
    unittest.main()
