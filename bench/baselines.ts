// The references the provider is compared against: the same virsh commands run locally
// with execFile (baseline A) and through a fresh `ssh` process each (baseline B, what a
// local-exec or @pulumi/command user gets), and local virsh with the fan-out's and the
// refresh's parallelism.
import * as childProcess from "node:child_process";
import { randomBytes } from "node:crypto";
import { onHost, run, type TestDomain } from "../test/support/lab";
import { PARALLEL, URI, VIRSH, lab } from "./config";
import { now, pool, type Trio } from "./measure";
import type { State } from "./provider-server";
import type { SshEndpoint } from "./sshd";

/** One snapshot of the fan-out: which domain, which name. */
export interface SnapshotJob {
    dom: TestDomain;
    name: string;
}

/** virsh on the host itself, without SSH (for a host in its own root, through chroot). */
export async function virshLocalOk(args: readonly string[]): Promise<string> {
    const r = await run(...onHost(VIRSH, ["-c", URI, ...args], lab), { timeoutMs: 300_000 });
    if (r.code !== 0) throw new Error(`virsh ${args.join(" ")} failed (exit ${r.code}): ${r.stderr.trim()}`);
    return r.stdout;
}

/** Baseline A: the same virsh commands, run locally with execFile. */
export async function localTrio(domainUuid: string, name: string): Promise<Trio> {
    const t0 = now();
    await virshLocalOk(["snapshot-create-as", "--domain", domainUuid, "--name", name, "--atomic"]);
    const t1 = now();
    await virshLocalOk(["snapshot-dumpxml", "--domain", domainUuid, "--snapshotname", name]);
    const t2 = now();
    await virshLocalOk(["snapshot-delete", "--domain", domainUuid, "--snapshotname", name]);
    const t3 = now();
    return { create: t1 - t0, read: t2 - t1, del: t3 - t2, total: t3 - t0 };
}

/**
 * Baseline C, the floor: one long-lived local `virsh` shell (stdin a pipe), already
 * started and connected, that runs the same commands one line at a time. What is left
 * is libvirt's own work for each command, without any process start or connect.
 * Each command is followed by `echo --xml 'M<n><'`, whose output (`M<n>&lt;`) the
 * echoed input line never contains; anything on stderr before it is a failure.
 */
export class VirshShell {
    private out = "";
    private err = "";
    private seq = 0;
    private readonly tag = randomBytes(6).toString("hex");
    private waiter?: () => void;
    private constructor(private readonly proc: childProcess.ChildProcessWithoutNullStreams) {
        proc.stdout.setEncoding("utf8").on("data", (d: string) => {
            this.out += d;
            this.waiter?.();
        });
        proc.stderr.setEncoding("utf8").on("data", (d: string) => (this.err += d));
        proc.once("exit", () => this.waiter?.());
    }

    static async start(): Promise<VirshShell> {
        const [file, args] = onHost(VIRSH, ["-c", URI], lab);
        const sh = new VirshShell(childProcess.spawn(file, args, { env: { ...process.env, LC_ALL: "C" } }));
        await sh.run(["version", "--daemon"]); // connected and warm
        return sh;
    }

    /** Runs one command (an argument vector, quoted for virsh's tokenizer as for a POSIX shell). */
    run(argv: readonly string[]): Promise<string> {
        const marker = `M${this.tag}n${++this.seq}`;
        const start = this.out.length;
        this.err = "";
        this.proc.stdin.write(`${argv.map(q).join(" ")}\necho --xml '${marker}<'\n`);
        return new Promise((resolve, reject) => {
            this.waiter = () => {
                const at = this.out.indexOf(`${marker}&lt;`, start);
                if (at < 0 && this.proc.exitCode === null) return;
                this.waiter = undefined;
                if (at < 0 || this.err.trim()) reject(new Error(`virsh shell: ${argv.join(" ")} failed: ${this.err.trim() || "exited"}`));
                else resolve(this.out.slice(start, at));
            };
        });
    }

    async trio(domainUuid: string, name: string): Promise<Trio> {
        const t0 = now();
        await this.run(["snapshot-create-as", "--domain", domainUuid, "--name", name, "--atomic"]);
        const t1 = now();
        await this.run(["snapshot-dumpxml", "--domain", domainUuid, "--snapshotname", name]);
        const t2 = now();
        await this.run(["snapshot-delete", "--domain", domainUuid, "--snapshotname", name]);
        const t3 = now();
        return { create: t1 - t0, read: t2 - t1, del: t3 - t2, total: t3 - t0 };
    }

    close(): void {
        this.proc.stdin.end("quit\n");
    }
}

/** POSIX single quoting for the fresh-ssh baseline's command string. */
function q(a: string): string {
    return /^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`;
}

function sshArgv(sshd: SshEndpoint): string[] {
    return [
        "-F",
        "/dev/null",
        "-p",
        String(sshd.port),
        "-i",
        lab.privateKeyPath,
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        `UserKnownHostsFile=${sshd.knownHosts}`,
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        `root@${sshd.host}`,
    ];
}

/** One virsh command through a fresh system `ssh` process (sshArgs: its options and user@host), as a shell loop runs it. */
export async function sshVirshVia(sshArgs: readonly string[], uri: string, args: readonly string[]): Promise<void> {
    const line = ["env", "LC_ALL=C", "virsh", "-c", uri, ...args].map(q).join(" ");
    const r = await run("/usr/bin/ssh", [...sshArgs, "--", line], { timeoutMs: 300_000 });
    if (r.code !== 0) throw new Error(`ssh virsh ${args.join(" ")} failed (exit ${r.code}): ${r.stderr.trim()}`);
}

const sshVirsh = (sshd: SshEndpoint, args: readonly string[]) => sshVirshVia(sshArgv(sshd), URI, args);

/** Baseline B: the same commands through a fresh ssh process each (a local-exec / @pulumi/command user). */
export async function sshTrio(sshd: SshEndpoint, domainUuid: string, name: string): Promise<Trio> {
    const t0 = now();
    await sshVirsh(sshd, ["snapshot-create-as", "--domain", domainUuid, "--name", name, "--atomic"]);
    const t1 = now();
    await sshVirsh(sshd, ["snapshot-dumpxml", "--domain", domainUuid, "--snapshotname", name]);
    const t2 = now();
    await sshVirsh(sshd, ["snapshot-delete", "--domain", domainUuid, "--snapshotname", name]);
    const t3 = now();
    return { create: t1 - t0, read: t2 - t1, del: t3 - t2, total: t3 - t0 };
}

/**
 * The fan-out's ideal: each domain's creates one after another, domains in perfect
 * parallel, i.e. the longest per-domain sum of local creates run one at a time (ms).
 */
export async function idealFanoutMs(jobs: readonly SnapshotJob[]): Promise<number> {
    const localTimes = new Map<string, number>();
    for (const j of jobs) {
        const t0 = now();
        await virshLocalOk(["snapshot-create-as", "--domain", j.dom.uuid, "--name", j.name, "--atomic"]);
        localTimes.set(j.dom.uuid, (localTimes.get(j.dom.uuid) ?? 0) + now() - t0);
    }
    return Math.max(...localTimes.values());
}

/** What local virsh itself achieves with the fan-out's parallelism, one create at a time per domain (ms). */
export async function timedLocalFanout(jobs: readonly SnapshotJob[]): Promise<number> {
    const tails = new Map<string, Promise<unknown>>();
    const t0 = now();
    await pool(PARALLEL, jobs, (j) => {
        const prev = tails.get(j.dom.uuid) ?? Promise.resolve();
        const p = prev.then(() => virshLocalOk(["snapshot-create-as", "--domain", j.dom.uuid, "--name", j.name, "--atomic"]));
        tails.set(j.dom.uuid, p);
        return p;
    });
    return now() - t0;
}

/** The refresh's reads done with local virsh (snapshot-dumpxml), same parallelism (ms). */
export async function timedLocalReads(states: readonly State[]): Promise<number> {
    const t0 = now();
    await pool(PARALLEL, states, (s) =>
        virshLocalOk(["snapshot-dumpxml", "--domain", String(s.outs.domainUuid), "--snapshotname", String(s.outs.snapshotName)]),
    );
    return now() - t0;
}
