#!/usr/bin/env node
'use strict';
// Peer benchmark: the graylane reference policy (../reference-policy.json)
// evaluated by unleash-client (Node SDK) with local evaluation, fully offline.
//
//   cd bench/eval/unleash && npm ci && node bench.js [options]
//
// stdout: "name: value" lines only.  Notes go to stderr.
//
// Options (or environment variables):
//   --rounds=R   UNLEASH_BENCH_ROUNDS   timed rounds, median reported  (7)
//   --passes=K   UNLEASH_BENCH_PASSES   passes over all requests/round (5)
//   --warmup=W   UNLEASH_BENCH_WARMUP   untimed warm-up passes         (5)
//   --expected=F UNLEASH_BENCH_EXPECTED expected decisions (JSONL)  (../expected.jsonl)
//   --policy=F   --requests=F           inputs (../reference-policy.json, ../requests.jsonl)
//   --dump-toggles                      print the generated Unleash toggle JSON and exit
//
// See README.md for how each graylane rule maps onto Unleash.

const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

// ---------------------------------------------------------------------------
// Network guard: this benchmark must never open a socket.  The client is
// configured so that it does not try (refreshInterval 0, metrics disabled,
// bootstrap data, in-memory storage); this makes any regression loud instead
// of silently contacting something.
let connectAttempts = 0;
net.Socket.prototype.connect = function guardedConnect() {
  connectAttempts++;
  throw new Error('bench.js: network access is disabled in this benchmark');
};

const { Unleash, InMemStorageProvider, Strategy } = require('unleash-client');
const UNLEASH_VERSION = require('unleash-client/package.json').version;

// ---------------------------------------------------------------------------
// Options
function opt(name, envName, dflt) {
  const pfx = `--${name}=`;
  const arg = process.argv.find((a) => a.startsWith(pfx));
  if (arg) return arg.slice(pfx.length);
  if (envName && process.env[envName] !== undefined && process.env[envName] !== '') {
    return process.env[envName];
  }
  return dflt;
}
function intOpt(name, envName, dflt, min) {
  const v = Number(opt(name, envName, String(dflt)));
  if (!Number.isInteger(v) || v < min) {
    throw new Error(`--${name} must be an integer >= ${min}`);
  }
  return v;
}

const HERE = __dirname;
const POLICY_FILE = path.resolve(HERE, opt('policy', null, '../reference-policy.json'));
const REQUESTS_FILE = path.resolve(HERE, opt('requests', null, '../requests.jsonl'));
const EXPECTED_FILE = path.resolve(HERE, opt('expected', 'UNLEASH_BENCH_EXPECTED', '../expected.jsonl'));
const ROUNDS = intOpt('rounds', 'UNLEASH_BENCH_ROUNDS', 7, 1);
const PASSES = intOpt('passes', 'UNLEASH_BENCH_PASSES', 5, 1);
const WARMUP = intOpt('warmup', 'UNLEASH_BENCH_WARMUP', 5, 0);
const DUMP = process.argv.includes('--dump-toggles');

const note = (...a) => console.error('[unleash-bench]', ...a);

// ---------------------------------------------------------------------------
// Request -> Unleash context.
//
// Context field names used by the generated constraints:
//   remoteAddress        request ip (standard Unleash field)
//   userId               cookie "uid" (standard field; stickiness of the ramp)
//   properties.path      request path
//   properties.tag       request tag (absent if none)
//   properties["header.<lowercased name>"], ["cookie.<name>"], ["param.<name>"]
// Repeated names: the first occurrence wins.
function attrField(attr) {
  if (attr === 'ip') return 'remoteAddress';
  if (attr === 'path' || attr === 'tag') return attr;
  const i = attr.indexOf(':');
  if (i > 0) {
    const kind = attr.slice(0, i);
    const name = attr.slice(i + 1);
    if (kind === 'header') return `header.${name.toLowerCase()}`;
    if (kind === 'cookie' || kind === 'param') return `${kind}.${name}`;
  }
  throw new Error(`unsupported attribute "${attr}"`);
}

function buildContext(req) {
  const properties = { path: req.path };
  if (req.tag !== undefined && req.tag !== null) properties.tag = req.tag;
  const h = req.headers;
  for (let i = 0; i < h.length; i++) {
    const k = `header.${h[i][0].toLowerCase()}`;
    if (!(k in properties)) properties[k] = h[i][1];
  }
  const c = req.cookies;
  for (let i = 0; i < c.length; i++) {
    const k = `cookie.${c[i][0]}`;
    if (!(k in properties)) properties[k] = c[i][1];
  }
  const p = req.params;
  for (let i = 0; i < p.length; i++) {
    const k = `param.${p[i][0]}`;
    if (!(k in properties)) properties[k] = p[i][1];
  }
  const ctx = { remoteAddress: req.ip, properties };
  const uid = properties['cookie.uid'];
  if (uid !== undefined) ctx.userId = uid;
  return ctx;
}

// ---------------------------------------------------------------------------
// Custom strategy for graylane's `mod` op, which Unleash has no operator for:
// matches when the attribute is all ASCII digits and (value mod divisor) < lt.
// Parameters are strings, as the Unleash server delivers them.
class GraylaneModStrategy extends Strategy {
  constructor() {
    super('graylaneMod');
  }

  isEnabled(parameters, context) {
    const field = parameters.contextName;
    const raw = context[field] ?? context.properties?.[field];
    if (typeof raw !== 'string' || raw.length === 0) return false;
    const divisor = Number(parameters.divisor);
    const lt = Number(parameters.lt);
    if (!(divisor > 0)) return false;
    let r = 0;
    for (let i = 0; i < raw.length; i++) {
      const d = raw.charCodeAt(i) - 48;
      if (d < 0 || d > 9) return false;
      r = (r * 10 + d) % divisor; // exact for any length
    }
    return r < lt;
  }
}

// ---------------------------------------------------------------------------
// graylane policy -> Unleash feature toggle.
//
// One toggle named after the service.  Its strategies are the rules, in rule
// order; each carries a single strategy-level variant named after the rule's
// route.  UnleashClient.isFeatureEnabled walks the strategies with
// Array.prototype.some() and returns the variant of the first strategy that is
// enabled, so getVariant() gives graylane's first-match-wins routing.  No
// strategy enabled -> variant "disabled" -> the policy default.
const PERCENT_STICKY_GROUP = (service) => service; // same "service:" hash prefix as graylane

function flattenConds(when) {
  if (when.all) return when.all.flatMap(flattenConds);
  if (when.any || when.not) throw new Error('only "all" combinators can be expressed as Unleash constraints');
  return [when];
}

function translateRule(rule, service, approximations) {
  const constraints = [];
  let strategy = null; // at most one condition that needs a strategy of its own
  const needStrategy = (s) => {
    if (strategy) throw new Error(`rule "${rule.name}": more than one mod/percent condition`);
    strategy = s;
  };
  for (const c of flattenConds(rule.when)) {
    const contextName = attrField(c.attr);
    switch (c.op) {
      case 'eq':
        constraints.push({ contextName, operator: 'IN', values: [String(c.value)], caseInsensitive: false, inverted: false });
        break;
      case 'in':
        constraints.push({ contextName, operator: 'IN', values: c.value.map(String), caseInsensitive: false, inverted: false });
        break;
      case 'prefix':
        constraints.push({ contextName, operator: 'STR_STARTS_WITH', values: [String(c.value)], caseInsensitive: false, inverted: false });
        break;
      case 'cidr':
        // IN_CIDR handles IPv4 and IPv6.  (The built-in "remoteAddress"
        // strategy only parses IPv4 ranges, so it would miss 2001:db8::/32.)
        constraints.push({ contextName, operator: 'IN_CIDR', values: [].concat(c.value).map(String), caseInsensitive: false, inverted: false });
        break;
      case 'regex':
        // Unleash REGEX is RE2 (re2js), unanchored find(), like an unanchored
        // PCRE match for patterns without PCRE-only syntax.
        constraints.push({ contextName, operator: 'REGEX', value: String(c.value), caseInsensitive: false, inverted: false });
        break;
      case 'mod':
        needStrategy({ name: 'graylaneMod', parameters: { contextName, divisor: String(c.divisor), lt: String(c.lt) } });
        approximations.push(`${rule.name}: mod via custom strategy "graylaneMod" (no Unleash operator)`);
        break;
      case 'percent': {
        const from = Number(c.from);
        const to = Number(c.to);
        const stickiness = c.attr === 'cookie:uid' ? 'userId' : contextName;
        let rollout = to - from;
        if (from !== 0) {
          approximations.push(`${rule.name}: percent band [${from},${to}) shifted to [0,${rollout}) (Unleash rollouts start at 0)`);
        }
        if (!Number.isInteger(rollout)) {
          rollout = Math.round(rollout);
          approximations.push(`${rule.name}: percent width rounded to ${rollout}% (Unleash has 1% granularity)`);
        }
        approximations.push(`${rule.name}: percent via flexibleRollout ${rollout}% stickiness=${stickiness} groupId=${PERCENT_STICKY_GROUP(service)} ` +
          '(murmur3("order:"+id) % 100 < N, not graylane\'s % 10000 bucket: different sticky sets)');
        needStrategy({
          name: 'flexibleRollout',
          parameters: { rollout: String(rollout), stickiness, groupId: PERCENT_STICKY_GROUP(service) },
        });
        break;
      }
      default:
        throw new Error(`rule "${rule.name}": unsupported op "${c.op}"`);
    }
  }
  const s = strategy || { name: 'default', parameters: {} };
  return {
    name: s.name,
    parameters: s.parameters,
    constraints,
    variants: [{
      name: rule.route,
      weight: 1000,
      weightType: 'variable',
      stickiness: 'default',
      payload: { type: 'json', value: JSON.stringify({ rule: rule.name, tag: rule.tag ?? null }) },
    }],
  };
}

function translatePolicy(policy) {
  const approximations = [];
  const toggle = {
    name: policy.service,
    description: `graylane policy for service ${policy.service} (generated by bench.js)`,
    type: 'release',
    project: 'default',
    enabled: true,
    stale: false,
    impressionData: false,
    variants: [],
    strategies: policy.rules.map((r) => translateRule(r, policy.service, approximations)),
  };
  return { toggle, approximations };
}

// ---------------------------------------------------------------------------
function readJsonl(file) {
  return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l));
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function startClient(toggle) {
  return new Promise((resolve, reject) => {
    const unleash = new Unleash({
      url: 'http://127.0.0.1:9/api', // never contacted: refreshInterval 0 disables fetching
      appName: 'graylane-bench',
      instanceId: 'graylane-bench',
      refreshInterval: 0,
      disableMetrics: true,
      metricsInterval: 0,
      storageProvider: new InMemStorageProvider(),
      bootstrap: { data: [toggle] },
      strategies: [new GraylaneModStrategy()],
    });
    const timer = setTimeout(() => reject(new Error('unleash client did not become ready')), 10_000);
    unleash.on('error', (e) => note('unleash error:', e && e.message ? e.message : e));
    unleash.on('warn', (m) => note('unleash warn:', m));
    unleash.once('ready', () => {
      clearTimeout(timer);
      resolve(unleash);
    });
  });
}

async function main() {
  const policy = JSON.parse(fs.readFileSync(POLICY_FILE, 'utf8'));
  const { toggle, approximations } = translatePolicy(policy);
  if (DUMP) {
    process.stdout.write(`${JSON.stringify({ version: 2, features: [toggle] }, null, 1)}\n`);
    return;
  }
  const requests = readJsonl(REQUESTS_FILE);
  const N = requests.length;
  if (N === 0) throw new Error('no requests');
  const service = policy.service;
  const dflt = policy.default;
  const ruleKind = new Map(policy.rules.map((r) => [r.name, flattenConds(r.when).some((c) => c.op === 'percent')]));
  const firstPercent = policy.rules.findIndex((r) => ruleKind.get(r.name));

  note(`unleash-client ${UNLEASH_VERSION}, node ${process.version}, ${N} requests, ${policy.rules.length} rules`);
  for (const a of approximations) note('approximation:', a);

  const unleash = await startClient(toggle);

  const decide = (ctx) => {
    const v = unleash.getVariant(service, ctx);
    return v.enabled ? v.name : dflt;
  };

  // ---- correctness pass -----------------------------------------------------
  const contexts = requests.map(buildContext);
  const got = new Array(N);
  const gotRule = new Array(N);
  const counts = {};
  for (let i = 0; i < N; i++) {
    const v = unleash.getVariant(service, contexts[i]);
    got[i] = v.enabled ? v.name : dflt;
    gotRule[i] = v.enabled ? JSON.parse(v.payload.value).rule : null;
    counts[got[i]] = (counts[got[i]] || 0) + 1;
  }
  note('decisions:', JSON.stringify(counts));

  if (fs.existsSync(EXPECTED_FILE)) {
    const exp = readJsonl(EXPECTED_FILE);
    if (exp.length !== N) throw new Error(`${path.basename(EXPECTED_FILE)} has ${exp.length} lines, requests has ${N}`);
    let agree = 0;
    let nonPct = 0;
    let nonPctAgree = 0;
    const mism = [];
    for (let i = 0; i < N; i++) {
      const want = exp[i].version;
      const ok = want === got[i];
      if (ok) agree++;
      else if (mism.length < 10) mism.push(`#${i}: expected ${want}${exp[i].rule ? ` (${exp[i].rule})` : ''}, unleash ${got[i]} (${gotRule[i] || 'default'})`);
      // A percent rule "decided" a request if evaluation reached it, i.e. no
      // earlier rule matched (per Unleash, or per graylane if it names the rule).
      const uIdx = gotRule[i] ? policy.rules.findIndex((r) => r.name === gotRule[i]) : policy.rules.length;
      const reachedPct = firstPercent >= 0 && uIdx >= firstPercent;
      const expPct = exp[i].rule !== undefined && ruleKind.get(exp[i].rule) === true;
      if (!reachedPct && !expPct) {
        nonPct++;
        if (ok) nonPctAgree++;
      }
    }
    for (const m of mism) note('mismatch', m);
    console.log(`unleash_agreement_pct: ${((100 * agree) / N).toFixed(2)}`);
    console.log(`unleash_agreement_nonpercent_pct: ${nonPct ? ((100 * nonPctAgree) / nonPct).toFixed(2) : 'n/a'}`);
    note(`agreement ${agree}/${N}; on ${nonPct} requests not decided by a percent rule: ${nonPctAgree}/${nonPct}`);
  } else {
    note(`no ${path.basename(EXPECTED_FILE)}: agreement check skipped`);
  }

  // ---- timing ---------------------------------------------------------------
  // Headline: request -> context -> getVariant -> version, per decision (the
  // context build is part of deciding; graylane also does its own attribute
  // lookup).  Secondary: getVariant alone on prebuilt contexts.
  const expectedSum = got.reduce((s, v) => s + v.length + v.charCodeAt(v.length - 1), 0);
  const passFull = () => {
    let sum = 0;
    for (let i = 0; i < N; i++) {
      const v = decide(buildContext(requests[i]));
      sum += v.length + v.charCodeAt(v.length - 1);
    }
    return sum;
  };
  const passCtx = () => {
    let sum = 0;
    for (let i = 0; i < N; i++) {
      const v = decide(contexts[i]);
      sum += v.length + v.charCodeAt(v.length - 1);
    }
    return sum;
  };
  const timeRounds = (pass) => {
    for (let w = 0; w < WARMUP; w++) {
      if (pass() !== expectedSum) throw new Error('decisions changed during warm-up');
    }
    const per = [];
    for (let r = 0; r < ROUNDS; r++) {
      let check = 0;
      const t0 = process.hrtime.bigint();
      for (let k = 0; k < PASSES; k++) check += pass();
      const t1 = process.hrtime.bigint();
      if (check !== expectedSum * PASSES) throw new Error('decisions changed during timing');
      per.push(Number(t1 - t0) / (PASSES * N));
    }
    return per;
  };

  const t0 = Date.now();
  const full = timeRounds(passFull);
  const ctxOnly = timeRounds(passCtx);
  note(`rounds=${ROUNDS} passes=${PASSES} warmup=${WARMUP}; per-round ns/decision full: ${full.map((x) => x.toFixed(0)).join(' ')}`);
  note(`per-round ns/decision prebuilt context: ${ctxOnly.map((x) => x.toFixed(0)).join(' ')}; timing took ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  console.log(`unleash_ns_per_decision: ${Math.round(median(full))}`);
  console.log(`unleash_ns_per_decision_prebuilt_ctx: ${Math.round(median(ctxOnly))}`);

  unleash.destroy();
  if (connectAttempts) throw new Error(`${connectAttempts} network connect attempts`);
}

main().catch((e) => {
  console.error('[unleash-bench] error:', e && e.stack ? e.stack : e);
  process.exit(1);
});
