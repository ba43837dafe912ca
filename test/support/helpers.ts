// Small helpers every suite used to keep its own copy of.
import * as assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import { loadLab, qemuImgInfo, sleep, virshOk, type LabInfo, type TestDomain } from "./lab";

export const MiB = 1024 * 1024;

/** Awaits `p`, which must fail with a message matching `re`; returns the message. */
export async function expectCallError(p: Promise<unknown>, re: RegExp): Promise<string> {
    try {
        await p;
    } catch (e) {
        assert.ok(e instanceof Error, `rejected with a non-Error: ${String(e)}`);
        assert.match(e.message, re);
        return e.message;
    }
    assert.fail(`expected an error matching ${re}`);
}

/** At most `n` of the functions it is given run at once; `peak()` tells how many did. */
export function limiter(n: number) {
    let active = 0,
        peak = 0;
    const waiting: Array<() => void> = [];
    const run = async <T>(fn: () => Promise<T>): Promise<T> => {
        while (active >= n) await new Promise<void>((r) => waiting.push(r));
        active++;
        peak = Math.max(peak, active);
        try {
            return await fn();
        } finally {
            active--;
            waiting.shift()?.();
        }
    };
    return Object.assign(run, { peak: () => peak });
}

/** The lab's SSH endpoint as a connection input, with the host key pinned. */
export function sshConnection(lab: LabInfo = loadLab()) {
    return {
        host: lab.host,
        port: lab.port,
        user: lab.user,
        privateKey: fs.readFileSync(lab.privateKeyPath, "utf8"),
        hostKey: lab.hostKey,
    };
}

// Names are compared exactly: no trimming.
const nonEmptyLines = (out: string) => out.split("\n").filter((l) => l !== "");

/** What libvirt records, in its own order. */
export async function snapshotNames(domain: string): Promise<string[]> {
    return nonEmptyLines(await virshOk(["snapshot-list", "--domain", domain, "--name"]));
}
export async function checkpointNames(domain: string): Promise<string[]> {
    return nonEmptyLines(await virshOk(["checkpoint-list", "--domain", domain, "--name"]));
}

/** The internal snapshots the qcow2 image itself holds, whatever libvirt records. */
export async function qcow2Snapshots(disk: string): Promise<string[]> {
    return ((await qemuImgInfo(disk)).snapshots ?? []).map((s) => s.name);
}

/** `virsh domstate`: "running", "paused", "shut off". */
export async function domstate(domain: string): Promise<string> {
    return (await virshOk(["domstate", "--domain", domain])).trim();
}

export async function shutOff(dom: TestDomain): Promise<void> {
    if ((await domstate(dom.name)) !== "shut off") await virshOk(["destroy", "--domain", dom.name]);
}

/** How the provider names the lab host in messages when a resource names no connection (the stack default). */
export function defaultTarget(lab: LabInfo = loadLab()): string {
    return lab.local ? `local virsh (${lab.libvirtUri})` : `${lab.user}@${lab.host}:${lab.port} (${lab.libvirtUri})`;
}

/** A connection input that names the same host as the stack default: `{}` here, the SSH endpoint for a host of its own. */
export function sameHostConnection(lab: LabInfo = loadLab()): Record<string, unknown> {
    return lab.local ? {} : sshConnection(lab);
}

/** Text as a RegExp source that matches it literally. */
export function re(text: string): string {
    return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** The host's own answer, not the provider's: `<externalSnapshot/>` in `virsh capabilities` (libvirt 9.9 and newer). */
export async function hostHasExternalSnapshot(): Promise<boolean> {
    return /<externalSnapshot\s*\/>/.test(await virshOk(["capabilities"]));
}

/**
 * The creates' XML on the lab host now (provider/host/hostShell.ts): each provider connection's private
 * folder in /tmp, and the files in them, with their modification times.
 */
/** Until a create's XML file (provider/host/hostShell.ts) newer than `since` is on the lab host: the create is about to reach libvirt. */
export async function waitForXmlFile(lab: Pick<LabInfo, "rootDir">, since: number, timeoutMs: number, over: () => boolean): Promise<void> {
    for (const until = Date.now() + timeoutMs; Date.now() < until && !over(); await sleep(2))
        if (hostXmlFiles(lab).files.some((f) => f.mtimeMs >= since - 1000)) return;
    if (!over()) throw new Error("no create's XML file appeared on the lab host");
}

export function hostXmlFiles(lab: Pick<LabInfo, "rootDir"> = loadLab()): {
    folders: string[];
    files: Array<{ path: string; mtimeMs: number }>;
} {
    const tmp = `${lab.rootDir ?? ""}/tmp`;
    const folders = fs
        .readdirSync(tmp)
        .filter((f) => f.startsWith("libvirt-snapshots-xml."))
        .map((f) => `${tmp}/${f}`);
    const files: Array<{ path: string; mtimeMs: number }> = [];
    for (const d of folders) {
        try {
            // Beside them, the sh's own "o" and "e" (each answer's stdout and stderr).
            for (const f of fs.readdirSync(d).filter((x) => x.startsWith("xml."))) {
                try {
                    files.push({ path: `${d}/${f}`, mtimeMs: fs.statSync(`${d}/${f}`).mtimeMs });
                } catch {
                    /* removed meanwhile */
                }
            }
        } catch {
            /* removed meanwhile */
        }
    }
    return { folders, files };
}

/** The PID of a domain's qemu process on this machine (a revert of a running domain starts a new one); undefined if none. */
export function qemuPid(domain: string): number | undefined {
    try {
        const pid = Number(
            execFileSync("pgrep", ["-f", `guest=${domain},`], { encoding: "utf8" })
                .trim()
                .split("\n")[0],
        );
        return pid > 0 ? pid : undefined;
    } catch {
        return undefined; // pgrep exits 1 when nothing matches
    }
}
