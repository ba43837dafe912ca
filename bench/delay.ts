// The lab's delay proxy (scripts/lab/delay-proxy.cjs) as the benchmark uses it: in its own
// process, so that its timers are not held up by the benchmark's own work, in front of the
// benchmark's sshd, so that everything that crosses it is still counted in that sshd's log.
import * as childProcess from "node:child_process";
import * as net from "node:net";
import * as path from "node:path";
import { repoRoot } from "../test/support/lab";
import { median, now } from "./measure";

export interface DelayProxy {
    port: number;
    pid: number;
    rttMs: number;
    stop(): Promise<void>;
}

/** Starts the proxy on a free loopback port, forwarding to targetHost:targetPort with rttMs of round trip. */
export async function startDelayProxy(targetHost: string, targetPort: number, rttMs: number): Promise<DelayProxy> {
    const script = path.join(repoRoot(), "scripts", "lab", "delay-proxy.cjs");
    const args = [script, "--target", `${targetHost}:${targetPort}`, "--rtt-ms", String(rttMs), "--max-seconds", "7200"];
    // --exit-on-stdin-close: the proxy goes when the benchmark does, however it ends.
    const proc = childProcess.spawn(process.execPath, [...args, "--exit-on-stdin-close"], { stdio: ["pipe", "pipe", "pipe"] });
    let stderr = "";
    proc.stderr.on("data", (d: Buffer) => (stderr += d.toString("utf8")));
    const gone = new Promise<void>((r) => proc.once("exit", () => r()));
    const port = await new Promise<number>((resolve, reject) => {
        let out = "";
        const timer = setTimeout(() => reject(new Error(`the delay proxy did not start within 10 s: ${stderr.trim()}`)), 10_000);
        proc.stdout.on("data", (d: Buffer) => {
            out += d.toString("utf8");
            const m = /^listening (\d+)$/m.exec(out);
            if (m) {
                clearTimeout(timer);
                resolve(Number(m[1]));
            }
        });
        proc.once("exit", (code) => {
            clearTimeout(timer);
            reject(new Error(`the delay proxy exited (${code}) before listening: ${stderr.trim()}`));
        });
    });
    const stop = async () => {
        if (proc.exitCode !== null || proc.signalCode !== null) return;
        proc.kill("SIGTERM");
        await Promise.race([gone, new Promise((r) => setTimeout(r, 5000))]);
        if (proc.exitCode === null && proc.signalCode === null) {
            proc.kill("SIGKILL");
            await gone;
        }
    };
    return { port, pid: proc.pid!, rttMs, stop };
}

/** Median time (ms) of a one-byte ping-pong on a fresh connection to port, over n exchanges. */
async function pingPong(port: number, n: number): Promise<number[]> {
    const sock = net.connect(port, "127.0.0.1");
    sock.setNoDelay(true);
    await new Promise<void>((res, rej) => {
        sock.once("connect", res);
        sock.once("error", rej);
    });
    const times: number[] = [];
    try {
        for (let i = 0; i < n; i++) {
            const t0 = now();
            await new Promise<void>((res) => {
                sock.once("data", () => res());
                sock.write("x");
            });
            times.push(now() - t0);
        }
    } finally {
        sock.destroy();
    }
    return times;
}

/**
 * What a round trip through the proxy really costs on this machine, against the same
 * exchange without it: a loopback echo server, pinged directly and through a proxy with
 * the same settings, interleaved. The proxy's timers fire late on a loaded machine, so
 * this is at least the nominal RTT.
 */
export async function measureProxyRtt(rttMs: number, rounds = 20): Promise<{ direct: number; proxied: number }> {
    const echo = net.createServer((s) => {
        s.setNoDelay(true);
        s.on("data", (d) => s.write(d));
        s.on("error", () => {});
    });
    await new Promise<void>((r) => echo.listen(0, "127.0.0.1", () => r()));
    const echoPort = (echo.address() as net.AddressInfo).port;
    const proxy = await startDelayProxy("127.0.0.1", echoPort, rttMs);
    try {
        const direct: number[] = [],
            proxied: number[] = [];
        for (let i = 0; i < rounds; i++) {
            direct.push(...(await pingPong(echoPort, 3)));
            proxied.push(...(await pingPong(proxy.port, 3)));
        }
        return { direct: median(direct), proxied: median(proxied) };
    } finally {
        await proxy.stop();
        await new Promise<void>((r) => echo.close(() => r()));
    }
}
