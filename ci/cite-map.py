#!/usr/bin/env python3
"""Rewrite citations of documents outside the repository into docs/ citations.

Code comments used to cite `behaviour.md §N.N`, `DECISIONS Fix|Keep|Add N`,
`design.md "Shape"` and README sections; those documents are not in a clone
of the repository. This script rewrites every such citation, in place, in the
files given, into the `docs/<page>.md#<anchor>` that now describes the same
behaviour (the tables below), so that tests/docs_links.rs can check them.

    ci/cite-map.py $(git ls-files 'src/*.rs' 'control/*.rs' 'benches/*.rs' 'tests/*.rs')
    ci/cite-map.py --check FILES...   # exit 1 and list what would change
    ci/cite-map.py --self-test        # the examples in SELF_TEST

A citation cluster such as `(behaviour.md §2.4, DECISIONS Keep 2, Add 6, 10)`
becomes `(docs/commands.md#backend, docs/tls-and-proxy-protocol.md#...)`: each
id is mapped, duplicates are dropped, and a bare page is dropped when an
anchor of the same page is cited beside it. Clusters may continue over a
comment line break (`//!`, `///`, `//`). Citations of the AMQP 0-9-1 or
PROXY protocol specifications (`spec §4.2.3`, `AMQP 0-9-1 §1.4.2`) are not
touched. It changes nothing else, and fails loudly on an id it has no
mapping for rather than guessing.
"""

import re
import sys

# behaviour.md (the C++ original's reference) section -> docs citation.
BEHAVIOUR = {
    "1": "flags.md",
    "1.1": "flags.md#flags",
    "1.2": "commands.md#amqpprox_ctl",
    "2": "commands.md",
    "2.1": "commands.md#sending-a-command",
    "2.2": "commands.md#help",
    "2.3": "commands.md#auth-and-limit",
    "2.4": "commands.md#backend",
    "2.5": "commands.md#conn",
    "2.6": "commands.md#datacenter",
    "2.7": "commands.md#exit",
    "2.8": "commands.md#farm",
    "2.9": "commands.md#auth-and-limit",
    "2.10": "commands.md#listen",
    "2.11": "commands.md#log",
    "2.12": "commands.md#map",
    "2.13": "commands.md#maphostname",
    "2.14": "commands.md#session",
    "2.15": "commands.md#stat",
    "2.16": "tls-and-proxy-protocol.md#tls-settings",
    "2.17": "commands.md#vhost",
    "3": "routing.md",
    "3.1": "routing.md#backends-farms-and-mappings",
    "3.2": "routing.md#datacenter-affinity",
    "3.3": "routing.md#round-robin",
    "3.4": "routing.md#direct-backend-mapping",
    "3.5": "routing.md#connecting-and-failover",
    "3.6": "routing.md#name-resolution",
    "4": "sessions.md",
    "4.1": "sessions.md#accept",
    "4.2": "sessions.md#client-handshake",
    "4.3": "sessions.md#broker-handshake",
    "4.4": "sessions.md#pass-through",
    "4.5": "sessions.md#refusals",
    "4.6": "sessions.md#session-end",
    "4.7": "sessions.md#operator-actions",
    "5": "statistics.md",
    "5.1": "statistics.md#what-a-session-counts",
    "5.2": "statistics.md#aggregation",
    "5.3": "statistics.md#stat-listen-json",
    "5.4": "statistics.md#stat-listen-human",
    "5.5": "statistics.md#statsd",
    "6": "tls-and-proxy-protocol.md",
    "6.1": "tls-and-proxy-protocol.md#tls-contexts",
    "6.2": "tls-and-proxy-protocol.md#tls-to-brokers-egress",
    "6.3": "tls-and-proxy-protocol.md#proxy-protocol-toward-brokers",
    "7": "commands.md#auth-and-limit",
    "8": "commands.md#auth-and-limit",
    "9": "logging.md",
    "10": "architecture.md",
    "14": "differences.md",
    "14.1": "sessions.md#broker-handshake",
    "14.2": "routing.md#connecting-and-failover",
    "14.3": "commands.md#exit",
    "14.4": "commands.md#listen",
    "14.5": "logging.md#lines-operators-grep-for",
    "14.6": "commands.md#conn",
    "14.7": "routing.md#transparent",
    "14.8": "sessions.md#accept",
}

# DECISIONS.md (what this project keeps, fixes and adds) -> docs citation.
DECISIONS = {
    ("Keep", "1"): "flags.md#flags",
    ("Keep", "2"): "commands.md#sending-a-command",
    ("Keep", "3"): "sessions.md#client-handshake",
    ("Keep", "4"): "sessions.md#broker-handshake",
    ("Keep", "5"): "statistics.md",
    ("Keep", "6"): "commands.md#auth-and-limit",
    ("Keep", "7"): "logging.md#lines-operators-grep-for",
    ("Fix", "1"): "routing.md#round-robin",
    ("Fix", "2"): "sessions.md#refusals",
    ("Fix", "3"): "sessions.md#timeouts",
    ("Fix", "4"): "routing.md#connecting-and-failover",
    ("Fix", "5"): "sessions.md#client-handshake",
    ("Fix", "6"): "statistics.md#removal-causes",
    ("Fix", "7"): "statistics.md#what-a-session-counts",
    ("Fix", "8"): "sessions.md#operator-actions",
    ("Fix", "9"): "commands.md#replies-and-errors",
    ("Fix", "10"): "commands.md#maphostname",
    ("Fix", "11"): "logging.md#credentials",
    ("Fix", "12"): "tls-and-proxy-protocol.md#tls-to-brokers-egress",
    ("Fix", "13"): "tls-and-proxy-protocol.md#proxy-protocol-toward-brokers",
    ("Fix", "14"): "commands.md#auth-and-limit",
    ("Fix", "15"): "commands.md#amqpprox_ctl",
    ("Fix", "16"): "commands.md#replies-and-errors",
    ("Add", "1"): "architecture.md#threads-and-what-crosses-between-them",
    ("Add", "2"): "architecture.md#threads-and-what-crosses-between-them",
    ("Add", "3"): "commands.md#config",
    ("Add", "4"): "sessions.md#graceful-drain",
    ("Add", "5"): "statistics.md#prometheus",
    ("Add", "6"): "tls-and-proxy-protocol.md#proxy-protocol-from-a-load-balancer",
    ("Add", "7"): "commands.md#auth-and-limit",
    ("Add", "8"): "logging.md#tracing",
    ("Add", "9"): "tls-and-proxy-protocol.md#ipv6",
    ("Add", "10"): "commands.md#json-output",
    ("Add", "11"): "architecture.md#where-a-new-protocol-goes",
    ("Add", "12"): "architecture.md#tests-and-benchmarks",
}

# Whole phrases cited by name rather than by number.
NAMED = [
    (re.compile(r'design\.md "Shape"'), "architecture.md#threads-and-what-crosses-between-them"),
    (re.compile(r'README(?:\'s)? "How a session goes"'), "routing.md#handshake-modes"),
    (re.compile(r'the README\'s "Architecture" section'), "architecture.md"),
]

# Citations that name no document, where the context shows it was
# behaviour.md: exact text -> replacement.
LITERAL = {
    "goes in clear (§6.2)": "goes in clear (docs/tls-and-proxy-protocol.md#proxy-protocol-toward-brokers)",
    "migration recipe of behaviour.md §4.7": "migration recipe of docs/sessions.md#moving-a-vhost-to-another-cluster",
    "; `UNPAUSE` added by DECISIONS Fix 8)": "; `UNPAUSE` is this project's addition)",
}

# Comments are wrapped at this width; a line the rewrite made longer is
# re-wrapped with the same comment prefix.
WIDTH = 80
# A line that is only a comment: its marker (indent and `//`, `///` or
# `//!`), then the text after one space.
COMMENT_LINE = re.compile(r"^([ \t]*//[/!]?)( ?)(.*)$")
BULLET = re.compile(r"^(?:[*-]|\d+\.)[ \t]+")
ADJACENT_DUPLICATE = re.compile(r"(docs/[\w./#-]+)(?:, \1(?![\w#-]))+")

# A separator inside a cluster: spaces, or a comment line break.
SEP = r"(?:[ \t]*\n[ \t]*//[/!]?[ \t]*|[ \t]+)"
SECTION = r"§[ \t]?\d+(?:\.\d+)*(?:[ \t]?-[ \t]?§?\d+(?:\.\d+)*)?"
KIND = r"(?:Fix|Keep|Add)"
# One item: a section, `Fix N`, or a bare number continuing the last kind.
ITEM = rf"(?:(?:behaviour(?:\.md|[ \t]spec){SEP})?{SECTION}|(?:DECISIONS{SEP})?{KIND}{SEP}\d+|\d+)"
JOIN = rf"(?:[,;]?{SEP}(?:and{SEP})?|[,;])"
START = rf"(?:behaviour(?:\.md|[ \t]spec){SEP}{SECTION}|DECISIONS{SEP}{KIND}{SEP}\d+)"
CLUSTER = re.compile(rf"{START}(?:{JOIN}(?:{ITEM})(?![\w.]))*")


class Unmapped(Exception):
    pass


def expand_sections(text):
    """`§3.2-3.5` -> ['3.2', '3.3', '3.4', '3.5']; `§4.7` -> ['4.7']."""
    m = re.fullmatch(r"§\s?([\d.]+)(?:\s?-\s?§?([\d.]+))?", text.strip())
    first, last = m.group(1), m.group(2)
    if not last:
        return [first]
    a, b = first.split("."), last.split(".")
    if len(a) == len(b) == 2 and a[0] == b[0]:
        return [f"{a[0]}.{n}" for n in range(int(a[1]), int(b[1]) + 1)]
    return [first, last]


def cluster_targets(cluster):
    """The docs citations of one cluster, in order, deduplicated."""
    body = re.sub(SEP, " ", cluster)
    targets = []
    kind = None
    for token in re.finditer(rf"§\s?\d+(?:\.\d+)*(?:\s?-\s?§?\d+(?:\.\d+)*)?|{KIND}\s\d+|\b\d+\b", body):
        t = token.group(0)
        if t.startswith("§"):
            kind = None
            for section in expand_sections(t):
                if section not in BEHAVIOUR:
                    raise Unmapped(f"behaviour.md §{section} in {cluster!r}")
                targets.append(BEHAVIOUR[section])
        else:
            parts = t.split()
            if len(parts) == 2:
                kind, number = parts
            else:
                number = parts[0]
                if kind is None:
                    raise Unmapped(f"a bare number {number} in {cluster!r}")
            if (kind, number) not in DECISIONS:
                raise Unmapped(f"DECISIONS {kind} {number} in {cluster!r}")
            targets.append(DECISIONS[(kind, number)])
    out = []
    for t in targets:
        if t not in out:
            out.append(t)
    anchored_pages = {t.split("#")[0] for t in out if "#" in t}
    return [t for t in out if "#" in t or t not in anchored_pages]


def rewrite_span(text):
    """Rewrites the citations in one line or one joined comment paragraph."""
    for old, new in LITERAL.items():
        text = text.replace(old, new)
    for pattern, target in NAMED:
        text = pattern.sub(f"docs/{target}", text)

    def replace(m):
        return ", ".join(f"docs/{t}" for t in cluster_targets(m.group(0)))

    text = CLUSTER.sub(replace, text)
    return ADJACENT_DUPLICATE.sub(r"\1", text)


def paragraphs(lines):
    """Groups lines into comment paragraphs that may be re-wrapped, and lines
    kept as they are: yields (marker, bullet, lines), marker None for a line
    kept as it is (code, a blank comment line, a fenced or indented block)."""
    fence = False
    block = None
    for line in lines:
        m = COMMENT_LINE.match(line)
        text = m.group(3) if m else ""
        is_fence = bool(m) and text.lstrip().startswith("```")
        if is_fence:
            fence = not fence
        prose = bool(m) and not fence and not is_fence and text.strip() != ""
        bullet = BULLET.match(text) if prose else None
        if prose and block and block[0] == m.group(1) and not bullet:
            hang = " " * len(block[1])
            if text.startswith(hang) and not text[len(hang):].startswith(" "):
                block[2].append(line)
                continue
        if block:
            yield block
            block = None
        if prose and not text.startswith(" "):
            block = (m.group(1), bullet.group(0) if bullet else "", [line])
        else:
            yield (None, "", [line])
    if block:
        yield block


def fill(marker, bullet, words):
    """Words filled into comment lines of at most WIDTH columns (a longer
    word stands alone on its line)."""
    lines = []
    current = marker + " " + bullet
    start = len(current)
    for word in words:
        if len(current) > start and len(current) + 1 + len(word) > WIDTH:
            lines.append(current)
            current = marker + " " + " " * len(bullet)
            start = len(current)
        current += ("" if len(current) == start else " ") + word
    lines.append(current)
    return lines


def rewrite(text):
    """Rewrites every citation in a file's text; a comment paragraph that
    changed is re-filled to WIDTH, everything else keeps its bytes."""
    out = []
    for marker, bullet, block in paragraphs(text.split("\n")):
        if marker is None:
            out.extend(rewrite_span(line) for line in block)
            continue
        joined = " ".join(COMMENT_LINE.match(line).group(3).strip() for line in block)
        body = joined[len(bullet):]
        new = rewrite_span(body)
        if new == body:
            out.extend(block)
        else:
            out.extend(fill(marker, bullet, new.split()))
    return "\n".join(out)


SELF_TEST = [
    # (input, expected output)
    ("//! (behaviour.md §2.4, DECISIONS Keep 2, Add 6, 10). Owns\n",
     "//! (docs/commands.md#backend, docs/commands.md#sending-a-command,\n"
     "//! docs/tls-and-proxy-protocol.md#proxy-protocol-from-a-load-balancer,\n"
     "//! docs/commands.md#json-output). Owns\n"),
    ("/// A cluster that spans lines (behaviour.md\n/// §4.2): version 0-9.\n",
     "/// A cluster that spans lines (docs/sessions.md#client-handshake): version 0-9.\n"),
    ("//! routing (behaviour.md §3.2-3.5).\n",
     "//! routing (docs/routing.md#datacenter-affinity, docs/routing.md#round-robin,\n"
     "//! docs/routing.md#direct-backend-mapping,\n"
     "//! docs/routing.md#connecting-and-failover).\n"),
    ("//! stats (behaviour.md §5, §5.2; DECISIONS Fix 6, 7).\n",
     "//! stats (docs/statistics.md#aggregation, docs/statistics.md#removal-causes,\n"
     "//! docs/statistics.md#what-a-session-counts).\n"),
    ("//! (design.md \"Shape\", DECISIONS Add 1, 2).\n",
     "//! (docs/architecture.md#threads-and-what-crosses-between-them).\n"),
    ("    // AMQP 0-9-1 §4.2.3 and spec §1.4.2 stay.\n",
     "    // AMQP 0-9-1 §4.2.3 and spec §1.4.2 stay.\n"),
    ("//! * a bullet (DECISIONS Fix 8) with a hanging\n//!   indent that is kept.\n//!\n//! Next.\n",
     "//! * a bullet (docs/sessions.md#operator-actions) with a hanging indent that is\n"
     "//!   kept.\n//!\n//! Next.\n"),
]


def self_test():
    failures = 0
    for given, expected in SELF_TEST:
        got = rewrite(given)
        if got != expected:
            failures += 1
            print(f"FAIL\n--- given\n{given}--- expected\n{expected}--- got\n{got}")
        if rewrite(got) != got:
            failures += 1
            print(f"FAIL: not idempotent on\n{got}")
    try:
        rewrite("// DECISIONS Fix 99\n")
        failures += 1
        print("FAIL: an unknown id was not refused")
    except Unmapped:
        pass
    print("self-test:", "ok" if not failures else f"{failures} failed")
    return 1 if failures else 0


def main(argv):
    if argv == ["--self-test"]:
        return self_test()
    check = "--check" in argv
    files = [a for a in argv if a != "--check"]
    if not files:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    changed = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            old = f.read()
        try:
            new = rewrite(old)
        except Unmapped as e:
            print(f"{path}: no docs mapping for {e}", file=sys.stderr)
            return 1
        if new != old:
            changed.append(path)
            if not check:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(new)
    for path in changed:
        print(("would rewrite " if check else "rewrote ") + path)
    leftover = [
        p for p in files
        if re.search(r"behaviour\.md|behaviour spec|DECISIONS|design\.md", open(p, encoding="utf-8").read())
    ] if not check else []
    for path in leftover:
        print(f"{path}: still cites a document outside the repository", file=sys.stderr)
    return 1 if (check and changed) or leftover else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
