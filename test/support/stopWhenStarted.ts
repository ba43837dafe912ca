// Stopping a host process the moment it starts, to cut something at an exact step.
// The scan is synchronous, so nothing gets between seeing and stopping; run it in a
// worker (stopWhenStartedInWorker) when this thread must keep serving, for example
// a proxy the provider's connection goes through.
import * as fs from "node:fs";
import * as path from "node:path";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";

/**
 * Scan /proc for a process whose command line contains pattern, and SIGSTOP it:
 * it is frozen before it can do anything, at the latest a few milliseconds after
 * it started. Returns its pid, or undefined after timeoutMs.
 */
export function stopWhenStarted(pattern: string, timeoutMs: number, skipPid = process.pid): number | undefined {
    for (const until = Date.now() + timeoutMs; Date.now() < until;) {
        for (const e of fs.readdirSync("/proc")) {
            if (!/^\d+$/.test(e) || Number(e) === skipPid) continue;
            let cmd: string;
            try {
                cmd = fs.readFileSync(`/proc/${e}/cmdline`, "latin1");
            } catch {
                continue;
            }
            if (cmd.replace(/\0/g, " ").includes(pattern)) {
                try {
                    process.kill(Number(e), "SIGSTOP");
                    return Number(e);
                } catch {
                    /* gone */
                }
            }
        }
    }
    return undefined;
}

/** stopWhenStarted in a worker thread: this thread's event loop keeps running meanwhile. */
export function stopWhenStartedInWorker(pattern: string, timeoutMs: number): Promise<number | undefined> {
    const worker = new Worker(path.join(__dirname, "stopWhenStarted.js"), { workerData: { pattern, timeoutMs, skipPid: process.pid } });
    return new Promise((resolve, reject) => {
        worker.once("message", (pid: number | null) => resolve(pid ?? undefined));
        worker.once("error", reject);
    });
}

if (!isMainThread && parentPort && (workerData as { pattern?: unknown } | null)?.pattern !== undefined) {
    const { pattern, timeoutMs, skipPid } = workerData as { pattern: string; timeoutMs: number; skipPid: number };
    parentPort.postMessage(stopWhenStarted(pattern, timeoutMs, skipPid) ?? null);
}
