// The one runner for every command on a libvirt host. Callers hand it an
// argument vector; it adds LC_ALL=C and sudo (and, for virsh, the URI), runs it
// through a transport (which does the quoting), strips secrets from what comes
// back, and turns virsh's failures into typed errors. A busy domain is retried
// with backoff within a time limit.
import { type Connection, DEFAULTS, describeTarget } from "../connection";
import { LibvirtError, classifyStderr, redact } from "../errors";
import { BUSY_BACKOFF, DEFAULT_TIMEOUT_SECONDS, READ_TIMEOUT_MS } from "../timing";
import { commandLine, transportFor, type ExecResult, type Transport } from "./transport";
import { hostShellFor } from "./hostShell";
import { sessionsFor } from "./virshSessions";

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

/** A host command's result, with the command line as it ran (secrets stripped) for error messages. */
export interface HostResult extends ExecResult {
    command: string;
}

// The host's version and capabilities don't change under a running provider.
const versionCache = new Map<string, Promise<LibvirtVersion>>();
const capsCache = new Map<string, Promise<HostCapabilities>>();

/** What `virsh capabilities` says the host's libvirt can do, beyond its version. */
export interface HostCapabilities {
    /**
     * `<externalSnapshot/>` in a guest's features: libvirt deletes external snapshots in every position and reverts to
     * them (9.9 and newer).
     */
    externalSnapshot: boolean;
}

export class Virsh {
    readonly transport: Transport;
    readonly uri: string;
    readonly where: string;
    private readonly defaultTimeoutMs: number;

    constructor(
        readonly connection: Connection,
        timeoutSeconds?: number,
    ) {
        this.transport = transportFor(connection);
        this.uri = connection.libvirtUri ?? DEFAULTS.libvirtUri;
        this.where = describeTarget(connection);
        this.defaultTimeoutMs = (timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS) * 1000;
    }

    /** Any command as it runs on the host: env sets the locale on the far side too, so error texts can be matched. */
    private hostArgv(argv: readonly string[]): string[] {
        return ["env", "LC_ALL=C", ...(this.connection.sudo ? ["sudo", "-n"] : []), ...argv];
    }

    argv(args: readonly string[]): string[] {
        return this.hostArgv(["virsh", "-c", this.uri, ...args]);
    }

    /** A read-only virsh query (it may be answered by a long-lived virsh shell). */
    query(args: readonly string[]): Promise<string> {
        return this.run(args, { timeoutMs: READ_TIMEOUT_MS });
    }

    /**
     * A command other than virsh on the libvirt host (rm, qemu-img), with the
     * same environment, sudo and quoting. Resolves whatever its exit code;
     * a lost connection or a timeout rejects, as for virsh. `asLoginUser` leaves
     * sudo out: for files only the login user's own commands touch (a private
     * folder whose XML a sudo'ed virsh reads), so no extra sudo rule is needed.
     * `readOnly` (with asLoginUser, no stdin): a command that only reads, which the
     * connection's long-lived sh runs when it can (hostShell.ts), else a process.
     */
    async host(
        argv: readonly string[],
        opts: { timeoutMs?: number; stdin?: string; asLoginUser?: boolean; readOnly?: boolean } = {},
    ): Promise<HostResult> {
        const full = opts.asLoginUser ? ["env", "LC_ALL=C", ...argv] : this.hostArgv(argv);
        const timeoutMs = opts.timeoutMs ?? READ_TIMEOUT_MS;
        const inShell =
            opts.readOnly && opts.asLoginUser && opts.stdin === undefined
                ? await hostShellFor(this.transport).run(full, timeoutMs)
                : undefined;
        const r = inShell ?? (await this.transport.exec(full, { timeoutMs, stdin: opts.stdin }));
        const secrets = this.transport.secrets;
        return { ...r, stderr: redact(r.stderr, secrets), command: redact(commandLine(full), secrets) };
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
                const wait = BUSY_BACKOFF(attempt);
                if (Date.now() + wait > deadline) throw e;
                await new Promise((r) => setTimeout(r, wait));
            }
        }
    }

    private async once(args: readonly string[], stdin: string | undefined, timeoutMs: number): Promise<string> {
        const argv = this.argv(args);
        const r =
            (await sessionsFor(this.transport, this.argv([])).run(args, argv, timeoutMs, stdin)) ??
            (await this.transport.exec(argv, { timeoutMs, stdin }));
        if (r.code === 0) return r.stdout;
        const stderr = redact(r.stderr.replace(/^error: /gm, "").trim(), this.transport.secrets);
        let kind = classifyStderr(stderr);
        if (this.connection.sudo && /sudo: (a password is required|.*not allowed|a terminal is required)/.test(r.stderr))
            kind = "connection-failed";
        if (r.code === 127 && kind === "failed") kind = "connection-failed";
        const first =
            stderr.split("\n").find((l) => l.trim()) ?? `virsh exited with code ${r.code}${r.signal ? ` (signal ${r.signal})` : ""}`;
        throw new LibvirtError(kind, `${first} [on ${this.where}]`, {
            command: redact(commandLine(argv), this.transport.secrets),
            exitCode: r.code,
            stderr,
        });
    }

    /** libvirt and hypervisor versions of the host, cached per target. */
    version(): Promise<LibvirtVersion> {
        return cached(versionCache, this.where, () => this.query(["version"]).then(parseVersion));
    }

    capabilities(): Promise<HostCapabilities> {
        return cached(capsCache, this.where, async () => ({
            externalSnapshot: /<externalSnapshot\s*\/>/.test(await this.query(["capabilities"])),
        }));
    }
}

/** One answer per host for the provider's life; a failed question is asked again. */
function cached<T>(cache: Map<string, Promise<T>>, key: string, ask: () => Promise<T>): Promise<T> {
    let p = cache.get(key);
    if (!p) {
        p = ask();
        cache.set(key, p);
        p.catch(() => cache.delete(key));
    }
    return p;
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
