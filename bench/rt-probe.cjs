#!/usr/bin/env node
// How many round trips the transport's two kinds of exchange cost through the lab's delay
// proxy, with nothing else in them: an SSH exec as provider/host/transport.ts drives it
// (ssh2's exec, then stdin and EOF), without and with stdin, and one line through a
// long-lived channel, as a virsh session exchanges it (here `cat`, which echoes the line).
// Each is timed directly and through the proxy, interleaved; the difference of the
// medians over the RTT is printed. The lab's own sshd (lab.json), the lab key.
//
//   node bench/rt-probe.cjs [rttMs, default 25] [rounds, default 40]
//
// bench/RESULTS.md ("Round trips over a slow link") uses it to check where roundTripsPerOp goes.
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const { performance } = require("node:perf_hooks");
const { Client } = require("ssh2");
const { startDelayProxy } = require("../scripts/lab/delay-proxy.cjs");

const lab = JSON.parse(fs.readFileSync(path.join(__dirname, "..", ".lab", "lab.json"), "utf8"));
const RTT = Number(process.argv[2] ?? 25);
const ROUNDS = Number(process.argv[3] ?? 40);
const now = () => performance.now();
const median = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function connect(port) {
    return new Promise((resolve, reject) => {
        const c = new Client();
        c.on("ready", () => resolve(c)).on("error", reject);
        c.connect({ host: "127.0.0.1", port, username: lab.user, privateKey: fs.readFileSync(lab.privateKeyPath) });
        c.setNoDelay(true); // as transport.ts does
    });
}

function exec(c, cmd, stdin) {
    return new Promise((resolve, reject) => {
        const t0 = now();
        c.exec(cmd, (err, ch) => {
            if (err) return reject(err);
            ch.on("data", () => {});
            ch.stderr.on("data", () => {});
            ch.on("close", () => resolve(now() - t0));
            ch.end(stdin);
        });
    });
}

function longLived(c) {
    return new Promise((resolve, reject) => c.exec("cat", (err, ch) => (err ? reject(err) : resolve(ch))));
}

function exchange(ch) {
    return new Promise((resolve) => {
        const t0 = now();
        ch.once("data", () => resolve(now() - t0));
        ch.write("x\n");
    });
}

async function main() {
    if (!(lab.host === "127.0.0.1")) throw new Error(`lab.json's first host is ${lab.host}, expected 127.0.0.1`);
    const proxy = await startDelayProxy({ targetHost: lab.host, targetPort: lab.port, rttMs: RTT });
    const near = await connect(lab.port),
        far = await connect(proxy.port);
    const lineNear = await longLived(near),
        lineFar = await longLived(far);
    const kinds = {
        "exec `true` (no stdin)": [(c) => exec(c, "true", ""), []],
        "exec `cat >/dev/null`, 2 kB on stdin": [(c) => exec(c, "cat >/dev/null", "x".repeat(2000)), []],
        "one line on a long-lived channel": [(c) => exchange(c === near ? lineNear : lineFar), []],
    };
    const t = Object.fromEntries(Object.keys(kinds).map((k) => [k, { near: [], far: [] }]));
    for (let i = 0; i < ROUNDS; i++) {
        for (const [k, [run]] of Object.entries(kinds)) {
            const pair = i % 2 ? ["far", "near"] : ["near", "far"];
            for (const p of pair) t[k][p].push(await run(p === "near" ? near : far));
        }
    }
    console.log(`through the delay proxy at ${RTT} ms, ${ROUNDS} rounds (medians)`);
    for (const k of Object.keys(kinds)) {
        const n = median(t[k].near),
            f = median(t[k].far);
        console.log(
            `  ${k.padEnd(40)} direct ${n.toFixed(1).padStart(7)} ms  proxied ${f.toFixed(1).padStart(7)} ms  round trips ${((f - n) / RTT).toFixed(2)}`,
        );
    }
    near.end();
    far.end();
    await proxy.close();
}

main().catch((e) => {
    console.error(`rt-probe: ${e.stack ?? e}`);
    process.exit(1);
});
