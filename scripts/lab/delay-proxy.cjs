#!/usr/bin/env node
// A TCP proxy that makes a lab host look far away: every chunk is forwarded after a fixed
// one-way delay of rtt/2, in each direction, in order. This kernel has no netem, so the
// delay lives in user space. Plain Node, no dependencies.
//
//   node scripts/lab/delay-proxy.cjs --target HOST:PORT [--listen 127.0.0.1:PORT] [--rtt-ms 25]
//        [--max-seconds 3600] [--exit-on-stdin-close]
//
// Prints "listening PORT" on stdout once it accepts connections (--listen port 0, the
// default, picks a free port). Exits on SIGTERM/SIGINT, after --max-seconds, and, with
// --exit-on-stdin-close, when its stdin closes (so it dies with the process that spawned it).
//
// In-process: const { startDelayProxy } = require("./delay-proxy.cjs");
//   const p = await startDelayProxy({ targetHost, targetPort, rttMs: 25 });  // p.port
//   await p.close();
//
// What it models: propagation delay per chunk, with unlimited bandwidth. What it does not:
// the TCP handshake itself (a client's connect() completes at once, so a fresh connection
// costs one round trip less than on a real link), loss or jitter.
//
// It only listens on loopback and only connects to loopback or the lab's own namespace
// address, so it can never carry traffic off this machine.
"use strict";
const net = require("node:net");

const ALLOWED_TARGETS = new Set(["10.213.13.2"]);
const HIGH_WATER = 4 * 1024 * 1024; // queued bytes per direction before the source is paused
const LOW_WATER = 1024 * 1024;

function isLoopback(host) {
    return host === "localhost" || host === "::1" || (net.isIPv4(host) && host.startsWith("127."));
}

function splitHostPort(s, what) {
    const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(String(s || ""));
    if (!m) throw new Error(`${what} must be HOST:PORT, got ${JSON.stringify(s)}`);
    const port = Number(m[2]);
    if (!(port >= 0 && port < 65536)) throw new Error(`${what}: bad port ${m[2]}`);
    return { host: m[1], port };
}

const now = () => Number(process.hrtime.bigint()) / 1e6; // monotonic ms

// One direction of one connection: chunks from `src` reach `dst` `delayMs` after they were
// read, strictly in the order they were read. Due times are non-decreasing, so one timer
// for the head of the queue is enough and nothing can overtake.
function pipeDelayed(src, dst, delayMs, onDone) {
    const queue = []; // { due, chunk } | { due, end: true } | { due, destroy: true }
    let queued = 0;
    let timer = null;
    let lastDue = 0;
    let finished = false;

    const finish = () => {
        if (finished) return;
        finished = true;
        onDone();
    };
    const schedule = () => {
        if (timer || queue.length === 0) return;
        timer = setTimeout(flush, Math.max(0, Math.ceil(queue[0].due - now())));
    };
    const flush = () => {
        timer = null;
        const t = now();
        while (queue.length && queue[0].due <= t) {
            const item = queue.shift();
            if (item.chunk) {
                queued -= item.chunk.length;
                if (!dst.destroyed) dst.write(item.chunk);
            } else if (item.end) {
                if (!dst.destroyed) dst.end();
                finish();
            } else {
                dst.destroy();
                finish();
            }
        }
        if (src.isPaused() && queued + dst.writableLength < LOW_WATER && !src.destroyed) src.resume();
        schedule();
    };
    const push = (item) => {
        item.due = Math.max(now() + delayMs, lastDue);
        lastDue = item.due;
        if (delayMs <= 0 && queue.length === 0) {
            queue.push(item);
            flush(); // rtt 0: forward at once, still in order
            return;
        }
        queue.push(item);
        schedule();
    };

    src.on("data", (chunk) => {
        queued += chunk.length;
        push({ chunk });
        if (queued + dst.writableLength > HIGH_WATER) src.pause();
    });
    dst.on("drain", () => {
        if (src.isPaused() && queued < LOW_WATER && !src.destroyed) src.resume();
    });
    src.on("end", () => push({ end: true }));
    // A reset or error on one side reaches the other side after the same delay.
    src.on("close", (hadError) => {
        if (hadError || !src.readableEnded) push({ destroy: true });
    });
    src.on("error", () => {});
    return {
        cancel() {
            if (timer) clearTimeout(timer);
            timer = null;
            queue.length = 0;
            finish();
        },
    };
}

/**
 * Start a delay proxy. Resolves to { host, port, close() } once it listens.
 * opts: targetHost, targetPort (required), listenHost ("127.0.0.1"), listenPort (0 = any free),
 * rttMs (25), maxSeconds (none; the timer does not keep the process alive).
 */
function startDelayProxy(opts) {
    const o = opts || {};
    const targetHost = o.targetHost;
    const targetPort = Number(o.targetPort);
    const listenHost = o.listenHost || "127.0.0.1";
    const listenPort = o.listenPort === undefined ? 0 : Number(o.listenPort);
    const rttMs = o.rttMs === undefined ? 25 : Number(o.rttMs);
    if (!isLoopback(targetHost) && !ALLOWED_TARGETS.has(targetHost)) {
        return Promise.reject(new Error(`target ${targetHost} refused: only loopback or ${[...ALLOWED_TARGETS].join(", ")}`));
    }
    if (!isLoopback(listenHost)) return Promise.reject(new Error(`listen address ${listenHost} refused: loopback only`));
    if (!(targetPort > 0 && targetPort < 65536)) return Promise.reject(new Error(`bad target port ${o.targetPort}`));
    if (!(rttMs >= 0 && rttMs < 60000)) return Promise.reject(new Error(`bad rttMs ${o.rttMs}`));
    const oneWay = rttMs / 2;
    const sockets = new Set();

    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
        const upstream = net.connect({ host: targetHost, port: targetPort, allowHalfOpen: true });
        sockets.add(client);
        sockets.add(upstream);
        client.setNoDelay(true);
        upstream.setNoDelay(true);
        let open = 2;
        const done = () => {
            if (--open === 0) {
                client.destroy();
                upstream.destroy();
            }
        };
        const up = pipeDelayed(client, upstream, oneWay, done);
        const down = pipeDelayed(upstream, client, oneWay, done);
        for (const s of [client, upstream]) {
            s.on("close", () => {
                sockets.delete(s);
                if (client.destroyed && upstream.destroyed) {
                    up.cancel();
                    down.cancel();
                }
            });
        }
        upstream.once("connect", () => client.resume());
    });

    return new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(listenPort, listenHost, () => {
            server.off("error", reject);
            let timer = null;
            let closing = null;
            const close = () => {
                if (!closing) {
                    if (timer) clearTimeout(timer);
                    closing = new Promise((res) => server.close(() => res()));
                    for (const s of sockets) s.destroy();
                }
                return closing;
            };
            if (o.maxSeconds !== undefined && Number(o.maxSeconds) > 0) {
                timer = setTimeout(close, Number(o.maxSeconds) * 1000);
                timer.unref();
            }
            resolve({ host: listenHost, port: server.address().port, close });
        });
    });
}

function parseArgs(argv) {
    const a = { listen: "127.0.0.1:0", rttMs: 25, maxSeconds: 3600, exitOnStdinClose: false };
    for (let i = 0; i < argv.length; i++) {
        const k = argv[i];
        const v = () => {
            if (i + 1 >= argv.length) throw new Error(`${k} needs a value`);
            return argv[++i];
        };
        if (k === "--listen") a.listen = v();
        else if (k === "--target") a.target = v();
        else if (k === "--rtt-ms") a.rttMs = Number(v());
        else if (k === "--max-seconds") a.maxSeconds = Number(v());
        else if (k === "--exit-on-stdin-close") a.exitOnStdinClose = true;
        else throw new Error(`unknown argument ${k}`);
    }
    if (!a.target) throw new Error("--target HOST:PORT is required");
    if (!(a.maxSeconds > 0)) throw new Error("--max-seconds must be > 0");
    return a;
}

async function main() {
    let a;
    try {
        a = parseArgs(process.argv.slice(2));
    } catch (e) {
        process.stderr.write(
            `delay-proxy: ${e.message}\n` +
                "usage: delay-proxy.cjs --target HOST:PORT [--listen 127.0.0.1:PORT] [--rtt-ms 25] [--max-seconds 3600] [--exit-on-stdin-close]\n",
        );
        process.exit(2);
    }
    const l = splitHostPort(a.listen, "--listen");
    const t = splitHostPort(a.target, "--target");
    let proxy;
    try {
        proxy = await startDelayProxy({ listenHost: l.host, listenPort: l.port, targetHost: t.host, targetPort: t.port, rttMs: a.rttMs });
    } catch (e) {
        process.stderr.write(`delay-proxy: ${e.message}\n`);
        process.exit(1);
    }
    const exit = () => proxy.close().then(() => process.exit(0));
    process.on("SIGTERM", exit);
    process.on("SIGINT", exit);
    setTimeout(exit, a.maxSeconds * 1000); // deliberately not unref'd: this is the CLI's deadline
    if (a.exitOnStdinClose) {
        process.stdin.on("end", exit);
        process.stdin.on("close", exit);
        process.stdin.on("error", exit);
        process.stdin.resume();
    }
    process.stdout.write(`listening ${proxy.port}\n`);
}

module.exports = { startDelayProxy };

if (require.main === module) main();
