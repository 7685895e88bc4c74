#!/usr/bin/env python3
"""Regenerate the reference policy and request mix used by bench/eval.

The outputs (reference-policy.json, requests.jsonl) are committed so the
benchmark needs no Python; run this only to change them. Deterministic.
"""
import json
import random

VIP = [str(5000000 + 7 * i) for i in range(1000)]

policy = {
    "service": "order",
    "default": "v1",
    "rules": [
        {"name": "testers", "route": "v2", "tag": "beta",
         "when": {"attr": "header:x-gray", "op": "eq", "value": "1"}},
        {"name": "cookie-optin", "route": "v2",
         "when": {"attr": "cookie:gray", "op": "eq", "value": "on"}},
        {"name": "vip-users", "route": "v2", "tag": "vip",
         "when": {"attr": "param:uid", "op": "in", "value": VIP}},
        {"name": "uid-mod", "route": "v2",
         "when": {"attr": "param:uid", "op": "mod", "divisor": 100, "lt": 3}},
        {"name": "office", "route": "v2",
         "when": {"attr": "ip", "op": "cidr",
                  "value": ["10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32"]}},
        {"name": "mobile-5x", "route": "v3",
         "when": {"attr": "header:user-agent", "op": "regex",
                  "value": "(iPhone|Android).*AppVersion/5\\."}},
        {"name": "lane-beta", "route": "v2",
         "when": {"attr": "tag", "op": "eq", "value": "beta"}},
        {"name": "eu-pro", "route": "v2",
         "when": {"all": [{"attr": "header:x-region", "op": "in",
                           "value": ["eu-west", "eu-central"]},
                          {"attr": "cookie:plan", "op": "eq", "value": "pro"}]}},
        {"name": "api-v2", "route": "v2",
         "when": {"attr": "path", "op": "prefix", "value": "/api/v2/"}},
        {"name": "ramp", "route": "v2",
         "when": {"attr": "cookie:uid", "op": "percent", "from": 0, "to": 10}},
    ],
}

rng = random.Random(20261128)
UAS = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile AppVersion/5.2.1",
    "Mozilla/5.0 (Linux; Android 14) Mobile AppVersion/4.9.0",
    "curl/7.88.1",
]
PATHS = ["/api/v1/orders", "/api/v1/orders/42", "/api/v2/orders", "/static/app.js", "/"]
REGIONS = ["us-east", "us-west", "eu-west", "eu-central", "ap-south"]


def request():
    uid = str(rng.randrange(1000000, 9999999))
    if rng.random() < 0.05:
        uid = rng.choice(VIP)
    r = {
        "method": "GET" if rng.random() < 0.8 else "POST",
        "host": "shop.example.com",
        "path": rng.choice(PATHS) if rng.random() < 0.2 else "/api/v1/orders",
        "ip": "203.0.%d.%d" % (rng.randrange(256), rng.randrange(1, 255)),
        "headers": [["User-Agent", rng.choice(UAS[:1] * 6 + UAS)],
                    ["Accept", "application/json"],
                    ["X-Region", rng.choice(REGIONS)]],
        "cookies": [["session", "%016x" % rng.getrandbits(64)], ["uid", uid]],
        "params": [["uid", uid], ["page", str(rng.randrange(1, 20))]],
    }
    x = rng.random()
    if x < 0.02:
        r["headers"].append(["X-Gray", "1"])
    elif x < 0.04:
        r["cookies"].append(["gray", "on"])
    elif x < 0.07:
        r["ip"] = "10.%d.%d.%d" % (rng.randrange(256), rng.randrange(256), rng.randrange(1, 255))
    elif x < 0.08:
        r["ip"] = "2001:db8::%x" % rng.randrange(1, 65535)
    elif x < 0.10:
        r["tag"] = "beta"
    elif x < 0.14:
        r["cookies"].append(["plan", "pro"])
    return r


with open("reference-policy.json", "w") as f:
    json.dump(policy, f, indent=1)
    f.write("\n")
with open("requests.jsonl", "w") as f:
    for _ in range(2000):
        f.write(json.dumps(request(), separators=(",", ":")) + "\n")
