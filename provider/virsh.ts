// The virsh runner: callers hand it virsh's arguments as a vector; it adds the
// URI, LC_ALL=C and sudo, runs it through a transport, and turns failures into
// typed errors. A busy domain is retried with backoff within a time limit.
import { Connection, DEFAULTS, describeTarget } from "./connection";
import { LibvirtError, classifyStderr, redact } from "./errors";
import { commandLine, transportFor, type Transport } from "./transport";

export const DEFAULT_TIMEOUT_SECONDS = 300;

export interface RunOptions {
    /** Text for virsh's standard input (used with `--xmlfile /dev/stdin`). */
    stdin?: string;
    timeoutMs?: number;
    /** How long to keep retrying while another job holds the domain. 0 disables. */
    busyRetryMs?: number;
}

export interface LibvirtVersion {
    /** e.g. "9.0.0" */
    libvirt: string;
    /** major*1e6 + minor*1e3 + micro, as libvirt encodes it */
    number: number;
    hypervisor: string;
}

export function versionNumber(v: string): number {
    const [a = 0, b = 0, c = 0] = v.split(".").map((x) => parseInt(x, 10) || 0);
    return a * 1_000_000 + b * 1_000 + c;
}

/** Counts every virsh invocation, for tests and the benchmark. */
export const virshStats = { invocations: 0 };

// The host's version and capabilities don't change under a running provider.
const versionCache = new Map<string, Promise<LibvirtVersion>>();

export class Virsh {
    readonly transport: Transport;
    readonly uri: string;
    readonly where: string;
    private readonly defaultTimeoutMs: number;

    constructor(readonly connection: Connection, timeoutSeconds?: number) {
        this.transport = transportFor(connection);
        this.uri = connection.libvirtUri ?? DEFAULTS.libvirtUri;
        this.where = describeTarget(connection);
        this.defaultTimeoutMs = (timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS) * 1000;
    }

    argv(args: readonly string[]): string[] {
        // env sets the locale on the far side too, so error texts can be matched.
        return ["env", "LC_ALL=C", ...(this.connection.sudo ? ["sudo", "-n"] : []), "virsh", "-c", this.uri, ...args];
    }

    /** Run and return stdout; throw a typed error on failure. */
    async run(args: readonly string[], opts: RunOptions = {}): Promise<string> {
        const timeoutMs = opts.timeoutMs ?? this.defaultTimeoutMs;
        const deadline = Date.now() + Math.min(opts.busyRetryMs ?? timeoutMs, timeoutMs);
        for (let attempt = 0; ; attempt++) {
            try {
                return await this.once(args, opts.stdin, timeoutMs);
            } catch (e) {
                if (!(e instanceof LibvirtError) || e.kind !== "domain-busy") throw e;
                const wait = Math.min(100 * 2 ** attempt, 2000) * (0.5 + Math.random() / 2);
                if (Date.now() + wait > deadline) throw e;
                await new Promise((r) => setTimeout(r, wait));
            }
        }
    }

    private async once(args: readonly string[], stdin: string | undefined, timeoutMs: number): Promise<string> {
        const argv = this.argv(args);
        virshStats.invocations++;
        const r = await this.transport.exec(argv, { timeoutMs, stdin });
        if (r.code === 0) return r.stdout;
        const stderr = redact(r.stderr.replace(/^error: /gm, "").trim(), this.transport.secrets);
        let kind = classifyStderr(stderr);
        if (this.connection.sudo && /sudo: (a password is required|.*not allowed|a terminal is required)/.test(r.stderr)) kind = "connection-failed";
        if (r.code === 127 && kind === "failed") kind = "connection-failed";
        const first = stderr.split("\n").find((l) => l.trim()) ?? `virsh exited with code ${r.code}${r.signal ? ` (signal ${r.signal})` : ""}`;
        throw new LibvirtError(kind, `${first} [on ${this.where}]`, {
            command: redact(commandLine(argv), this.transport.secrets), exitCode: r.code, stderr,
        });
    }

    /** libvirt and hypervisor versions of the host, cached per target. */
    version(): Promise<LibvirtVersion> {
        const key = `${this.where}`;
        let p = versionCache.get(key);
        if (!p) {
            p = this.run(["version"], { timeoutMs: 60_000 }).then(parseVersion);
            versionCache.set(key, p);
            p.catch(() => versionCache.delete(key));
        }
        return p;
    }
}

export function parseVersion(out: string): LibvirtVersion {
    // "Using library: libvirt 9.0.0" / "Running hypervisor: QEMU 7.2.0"
    const lib = /Using library: libvirt ([\d.]+)/.exec(out)?.[1] ?? /Running against daemon: ([\d.]+)/.exec(out)?.[1] ?? "0.0.0";
    const daemon = /Running against daemon: ([\d.]+)/.exec(out)?.[1];
    const hyp = /Running hypervisor: (.+)/.exec(out)?.[1]?.trim() ?? "unknown";
    // The daemon's version is what decides features; the client library may differ.
    const v = daemon ?? lib;
    return { libvirt: v, number: versionNumber(v), hypervisor: hyp };
}
