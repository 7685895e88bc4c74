#!/usr/bin/env python3
"""Recreate the generated (large) data-driven cases, deterministically.

    python3 tests/data/gen_big_cases.py

Writes, relative to this script's directory:
  rules/op-in-large-hit/            `in` with 2,000 values, a hit
  rules/op-in-large-miss/           the same list, a miss
  policy/invalid/limit-rules/       1,001 rules        (GRAY_RULES_MAX 1000)
  policy/invalid/limit-conditions/  10,010 conditions  (GRAY_CONDITIONS_MAX 10000)
  policy/invalid/limit-values/      `in` with 10,001 values (GRAY_VALUES_MAX 10000)
  policy/invalid/limit-file-size/   a valid policy padded with whitespace to
                                    1 MiB + 1 byte     (GRAY_POLICY_FILE_MAX)
Every other case is written by hand. Re-run cmake after adding directories.
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
FILE_MAX = 1024 * 1024


def write(rel, name, text):
    d = os.path.join(HERE, rel)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "w", newline="\n") as f:
        f.write(text)


def dump(obj):
    return json.dumps(obj, separators=(", ", ": ")) + "\n"


def in_large():
    values = ["member-%04d" % i for i in range(2000)]
    policy = ('{"service": "order", "default": "v1", "rules": [\n'
              ' {"name": "members", "route": "v2",\n'
              '  "when": {"attr": "cookie:member", "op": "in", "value": [\n'
              + ",\n".join('   "%s"' % v for v in values)
              + "]}}]}\n")
    for case, member, expected in (
            ("op-in-large-hit", "member-1777",
             {"version": "v2", "tag": None, "rule": "members"}),
            ("op-in-large-miss", "member-2000",
             {"version": "v1", "tag": None, "rule": None})):
        rel = os.path.join("rules", case)
        write(rel, "policy.json", policy)
        write(rel, "request.json", dump({"request": {"cookies": [["member", member]]}}))
        write(rel, "expected.json", dump(expected))


def invalid(case, doc, error):
    rel = os.path.join("policy", "invalid", case)
    write(rel, "input", doc)
    write(rel, "error", error + "\n")


def limit_rules():
    rules = ",\n".join(' {"name": "r%04d", "route": "v2", "when": '
                       '{"attr": "param:uid", "op": "eq", "value": "%d"}}' % (i, i)
                       for i in range(1001))
    doc = '{"service": "order", "default": "v1", "rules": [\n' + rules + "]}\n"
    invalid("limit-rules", doc, "rules: has 1001 rules, more than the limit of 1000")


def limit_conditions():
    # 10 rules of any[1000 conditions]: 1,001 condition nodes each. The limit
    # counts the whole policy, so rule 9 fails: 9 * 1001 nodes before it, its
    # `any` is node 9010, and any[990] is node 10001.
    leaf = '{"attr": "tag", "op": "exists"}'
    rules = ",\n".join(' {"name": "r%d", "route": "v2", "when": {"any": [%s]}}'
                       % (r, ", ".join([leaf] * 1000)) for r in range(10))
    doc = '{"service": "order", "default": "v1", "rules": [\n' + rules + "]}\n"
    invalid("limit-conditions", doc,
            "rules[9].when.any[990]: policy has more than the limit of 10000 conditions")


def limit_values():
    values = ", ".join('"v%05d"' % i for i in range(10001))
    doc = ('{"service": "order", "default": "v1", "rules": [\n'
           ' {"name": "many", "route": "v2", "when": {"attr": "param:uid", "op": "in", '
           '"value": [' + values + "]}}]}\n")
    invalid("limit-values", doc,
            "rules[0].when.value: has 10001 values, more than the limit of 10000")


def limit_file_size():
    head = ('{"service": "order", "default": "v1", "rules": [\n'
            ' {"name": "r", "route": "v2", "when": {"attr": "tag", "op": "eq", "value": "beta"}}]')
    tail = "}\n"
    size = FILE_MAX + 1
    pad = size - len(head) - len(tail)
    # Whitespace between the last member and the closing brace: valid JSON,
    # just too big. Newlines every 64 bytes keep the file viewable.
    padding = "".join("\n" if i % 64 == 63 else " " for i in range(pad))
    doc = head + padding + tail
    assert len(doc.encode()) == size
    invalid("limit-file-size", doc,
            "input is %d bytes, over the limit of %d bytes" % (size, FILE_MAX))


if __name__ == "__main__":
    in_large()
    limit_rules()
    limit_conditions()
    limit_values()
    limit_file_size()
