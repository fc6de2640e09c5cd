// Scaling example: one replica of a stateless web service. Every page and
// API answer names the instance that served it (os.hostname()), so you can
// watch tako's load balancer spread requests: scaling-web-1, -2, -3, -1 ...
//
// Routes
//   GET  /                 page with this instance's hostname, requests, uptime, memory
//   GET  /health           {status, hostname, uptime, requests, timestamp}
//   GET  /api/instance     {hostname, uptime, requests, memory, timestamp}
//   GET  /cart?user=ID     the user's cart
//   POST /cart/items?user=ID  {"item": "..."} adds an item
//
// Carts live in Redis when REDIS_URL is set (stateless replicas: any replica
// sees every cart). CART_STORE=memory keeps them in this process instead, to
// show why that breaks behind a round-robin load balancer.
'use strict';

const express = require('express');
const os = require('os');

const port = Number(process.env.PORT || 3000);
// The name shown: $HOSTNAME when set (the local test below sets it), else the
// kernel's. Under tako each replica has its own UTS namespace, so both are
// scaling-web-N; os_hostname in /api/instance shows the kernel's alone.
//   PORT=3001 HOSTNAME=instance-1 node index.js
const hostname = () => process.env.HOSTNAME || os.hostname();
const startedAt = Date.now();
let requests = 0;

const app = express();
app.disable('x-powered-by');
app.use(express.json({ limit: '16kb' }));

// Count every request but the load balancer's health checks.
app.use((req, res, next) => {
  if (req.path !== '/health') requests++;
  res.set('X-Instance', hostname());
  next();
});

function uptimeSeconds() {
  return Math.floor((Date.now() - startedAt) / 1000);
}

function formatBytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

app.get('/', (req, res) => {
  const host = escapeHtml(hostname());
  const mem = process.memoryUsage();
  res.type('html').send(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="3">
<link rel="icon" href="data:,">
<title>${host}</title>
<style>
 body{font-family:system-ui,sans-serif;background:#0f172a;color:#e2e8f0;margin:0;
      display:flex;flex-direction:column;align-items:center;justify-content:center;min-height:95vh}
 h1{font-size:4.5rem;margin:.15em 0;color:#38bdf8} small{color:#94a3b8}
 table{font-size:1.2rem;margin:1em} td{padding:.2em 1em}
 pre{background:#1e293b;padding:1em 1.5em;border-radius:8px;line-height:1.3}
</style></head>
<body>
<small>this page was served by</small>
<h1 id="hostname">${host}</h1>
<table>
 <tr><td>requests handled</td><td id="requests">${requests}</td></tr>
 <tr><td>uptime</td><td id="uptime">${uptimeSeconds()} s</td></tr>
 <tr><td>memory (RSS)</td><td id="memory">${formatBytes(mem.rss)}</td></tr>
 <tr><td>node</td><td>${escapeHtml(process.version)}</td></tr>
</table>
<pre>
                 your browser
                      |
              tako load balancer   (round_robin)
        +-------------+-------------+
        |             |             |
  scaling-web-1  scaling-web-2  scaling-web-3
</pre>
<small>this page refreshes every 3 s: watch the hostname change</small>
</body></html>
`);
});

app.get('/health', (req, res) => {
  res.json({
    status: 'healthy',
    hostname: hostname(),
    uptime: uptimeSeconds(),
    requests,
    timestamp: new Date().toISOString(),
  });
});

app.get('/api/instance', (req, res) => {
  const m = process.memoryUsage();
  res.json({
    hostname: hostname(),
    os_hostname: os.hostname(),
    uptime: uptimeSeconds(),
    requests,
    memory: { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal },
    timestamp: new Date().toISOString(),
  });
});

// ---- carts: stateless (Redis) or stateful (memory, the anti-pattern) ----

function memoryStore() {
  const carts = {}; // lives in this replica only
  return {
    kind: 'memory',
    async get(user) { return carts[user] || []; },
    async add(user, item) { (carts[user] = carts[user] || []).push(item); return carts[user]; },
  };
}

function redisStore(url) {
  const { createClient } = require('redis');
  const client = createClient({ url });
  client.on('error', (err) => console.error('redis:', err.message));
  const ready = client.connect();
  const key = (user) => `cart:${user}`;
  return {
    kind: 'redis',
    async get(user) { await ready; return client.lRange(key(user), 0, -1); },
    async add(user, item) {
      await ready;
      await client.rPush(key(user), item);
      return client.lRange(key(user), 0, -1);
    },
  };
}

const store = process.env.CART_STORE === 'memory' || !process.env.REDIS_URL
  ? memoryStore()
  : redisStore(process.env.REDIS_URL);

function userOf(req, res) {
  const user = String(req.query.user || '');
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(user)) {
    res.status(400).json({ error: 'query parameter user=ID is required ([A-Za-z0-9_-], at most 64)' });
    return null;
  }
  return user;
}

app.get('/cart', async (req, res) => {
  const user = userOf(req, res);
  if (!user) return;
  try {
    res.json({ user, items: await store.get(user), store: store.kind, hostname: hostname() });
  } catch (err) {
    res.status(503).json({ error: `cart store unavailable: ${err.message}` });
  }
});

app.post('/cart/items', async (req, res) => {
  const user = userOf(req, res);
  if (!user) return;
  const item = req.body && req.body.item;
  if (typeof item !== 'string' || !item || item.length > 200) {
    res.status(400).json({ error: 'body must be {"item": "<1 to 200 characters>"}' });
    return;
  }
  try {
    res.status(201).json({ user, items: await store.add(user, item), store: store.kind, hostname: hostname() });
  } catch (err) {
    res.status(503).json({ error: `cart store unavailable: ${err.message}` });
  }
});

const server = app.listen(port, () => {
  console.log(`${hostname()} listening on port ${port} (carts in ${store.kind})`);
});

// SIGTERM (tako stop, scale down, rolling update): finish in-flight requests, then exit.
process.on('SIGTERM', () => {
  console.log(`${hostname()} draining`);
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 8000).unref();
});
