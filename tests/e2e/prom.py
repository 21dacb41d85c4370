"""prom.py - scrape postern's metrics endpoint and parse what it serves,
strictly.

scrape(port) fetches /metrics, checks the Content-Type, checks the text
against the exposition format (version 0.0.4) line by line - every family
has one HELP and one TYPE before its samples, sample names belong to their
family, counters are named *_total and never negative, no series appears
twice, histogram buckets are cumulative with +Inf equal to _count - and
parses it again with Prometheus' own Python parser
(prometheus_client.parser, Debian's python3-prometheus-client), which must
find the same typed families. Returns a Metrics object.
"""

import math
import re
import sys
import urllib.error
import urllib.request

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:         # a Python other than Debian's runs the tests
    sys.path.append("/usr/lib/python3/dist-packages")
    from prometheus_client.parser import text_string_to_metric_families

NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def http_get(port, path, host="127.0.0.1", timeout=10):
    """(status, headers, body text) of GET http://host:port/path."""
    try:
        with urllib.request.urlopen("http://%s:%d%s" % (host, port, path),
                                    timeout=timeout) as r:
            return r.status, r.headers, r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode("utf-8")


def _labels(text, line):
    if not text:
        return ()
    inner = text[1:-1]
    out = []
    pos = 0
    while pos < len(inner):
        m = LABEL_RE.match(inner, pos)
        if not m:
            raise AssertionError("bad labels in %r" % line)
        out.append((m.group(1), m.group(2)))
        pos = m.end()
        if pos < len(inner):
            if inner[pos] != ",":
                raise AssertionError("bad labels in %r" % line)
            pos += 1
    names = [k for k, _ in out]
    if len(set(names)) != len(names):
        raise AssertionError("repeated label in %r" % line)
    return tuple(sorted(out))


class Metrics:
    """Parsed samples: values[(sample name, labels tuple)] = float;
    types[family] = type."""

    def __init__(self, text):
        self.text = text
        self.values = {}
        self.types = {}

    def get(self, name, **labels):
        """The value of one sample (0 when absent)."""
        return self.values.get((name, tuple(sorted(labels.items()))), 0.0)

    def has(self, name, **labels):
        return (name, tuple(sorted(labels.items()))) in self.values

    def series(self, name):
        """{labels dict as a sorted tuple: value} of every sample so
        named."""
        return {k[1]: v for k, v in self.values.items() if k[0] == name}


def parse_strict(text):
    m = Metrics(text)
    helps = set()
    family = None
    ftype = None
    if not text.endswith("\n"):
        raise AssertionError("exposition does not end with a newline")
    for line in text.split("\n")[:-1]:
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            if name in helps:
                raise AssertionError("second HELP for %s" % name)
            if not NAME_RE.match(name):
                raise AssertionError("bad metric name %r" % name)
            helps.add(name)
            family, ftype = name, None
            continue
        if line.startswith("# TYPE "):
            parts = line.split(" ")
            if len(parts) != 4 or parts[2] != family or parts[2] in m.types:
                raise AssertionError("TYPE without its HELP or repeated: %r"
                                     % line)
            if parts[3] not in ("counter", "gauge", "histogram"):
                raise AssertionError("unexpected type %r" % line)
            ftype = parts[3]
            m.types[family] = ftype
            if ftype == "counter" and not family.endswith("_total"):
                raise AssertionError("counter %s not named *_total" % family)
            continue
        if line.startswith("#") or line == "":
            raise AssertionError("unexpected line %r" % line)
        s = SAMPLE_RE.match(line)
        if not s or ftype is None:
            raise AssertionError("bad sample line %r" % line)
        name, labels, value = s.group(1), _labels(s.group(2), line), \
            float(s.group(3))
        allowed = ([family + x for x in ("_bucket", "_sum", "_count")]
                   if ftype == "histogram" else [family])
        if name not in allowed:
            raise AssertionError("sample %s outside its family %s"
                                 % (name, family))
        if math.isnan(value) or (ftype == "counter" and value < 0):
            raise AssertionError("bad value in %r" % line)
        key = (name, labels)
        if key in m.values:
            raise AssertionError("series twice: %r" % line)
        m.values[key] = value
    _check_histograms(m)
    return m


def _check_histograms(m):
    for fam, t in m.types.items():
        if t != "histogram":
            continue
        groups = {}
        for (name, labels), v in m.values.items():
            if name == fam + "_bucket":
                rest = tuple(x for x in labels if x[0] != "le")
                le = dict(labels)["le"]
                groups.setdefault(rest, []).append(
                    (math.inf if le == "+Inf" else float(le), v))
        for rest, buckets in groups.items():
            order = [le for le, _ in buckets]
            if order != sorted(order) or order[-1] != math.inf:
                raise AssertionError("%s buckets out of order" % fam)
            counts = [v for _, v in buckets]
            if counts != sorted(counts):
                raise AssertionError("%s buckets not cumulative: %r"
                                     % (fam, counts))
            if m.values.get((fam + "_count", rest)) != counts[-1]:
                raise AssertionError("%s: +Inf bucket differs from _count"
                                     % fam)
            if (fam + "_sum", rest) not in m.values:
                raise AssertionError("%s: no _sum" % fam)


def check_with_prometheus_client(m):
    """Prometheus' parser reads the same families, each with its type (a
    sample outside a declared family would come back untyped)."""
    fams = {}
    for f in text_string_to_metric_families(m.text):
        if f.type == "untyped" or f.name in fams:
            raise AssertionError("prometheus_client: untyped or repeated "
                                 "family %s" % f.name)
        fams[f.name] = f
    want = {(n[:-len("_total")] if t == "counter" else n): t
            for n, t in m.types.items()}
    got = {n: f.type for n, f in fams.items()}
    if got != want:
        raise AssertionError("prometheus_client families differ:\n%r\n%r"
                             % (got, want))
    nsamples = sum(len(f.samples) for f in fams.values())
    if nsamples != len(m.values):
        raise AssertionError("prometheus_client read %d samples, we %d"
                             % (nsamples, len(m.values)))


def scrape(port, host="127.0.0.1"):
    status, headers, body = http_get(port, "/metrics", host)
    if status != 200:
        raise AssertionError("GET /metrics: %d %r" % (status, body[:200]))
    if headers.get("Content-Type") != CONTENT_TYPE:
        raise AssertionError("GET /metrics Content-Type %r"
                             % headers.get("Content-Type"))
    m = parse_strict(body)
    check_with_prometheus_client(m)
    return m
