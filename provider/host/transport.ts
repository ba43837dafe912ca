// Transports run an argument vector on the libvirt host: locally with
// execve (no shell at all), or over SSH, where the protocol carries one command
// string that the remote shell splits again. shellQuote below is the only place
// where arguments become a string.
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { Client, ConnectConfig, ClientChannel } from "ssh2";
import { Connection, DEFAULTS, describeTarget, poolKeyOf, secretsOf, type Proxy } from "../connection";
import { LibvirtError, redact } from "../errors";
import {
    CHANNEL_OPEN_ATTEMPTS,
    CHANNEL_OPEN_BACKOFF,
    DIAL_BACKOFF,
    SPAWN_CHANNEL_WAIT_MS,
    SSH_KEEPALIVE_COUNT_MAX,
    SSH_KEEPALIVE_MS,
} from "../timing";
import { publishChannel, publishExec, publishHandshake, publishSpawn } from "./diagnostics";
import { verifyHostKey, type Verdict } from "./hostkeys";

export interface ExecResult {
    code: number | null;
    signal?: string | null;
    stdout: string;
    stderr: string;
}

export interface ExecOptions {
    timeoutMs: number;
    stdin?: string;
}

export interface Transport {
    exec(argv: readonly string[], opts: ExecOptions): Promise<ExecResult>;
    /**
     * Start a long-lived process on the host and talk to it through its
     * standard streams (virsh's shell, see virsh.ts). Rejects with a
     * LibvirtError only when the host can't be reached at all (the same error
     * exec would give); any other failure is a plain Error, after which
     * callers use exec instead.
     */
    spawn(argv: readonly string[]): Promise<HostProcess>;
    /** Per-transport state of the layers above (virsh sessions), closed with the transport. */
    readonly attached: Map<string, { close(): void }>;
    /** Strings that must never appear in errors or logs. */
    readonly secrets: readonly string[];
    readonly description: string;
    /** Over SSH (a lost connection) rather than on this machine (a killed process). */
    readonly remote: boolean;
}

/** A process started by Transport.spawn. */
export interface HostProcess {
    write(text: string): void;
    onStdout(fn: (chunk: Buffer) => void): void;
    onStderr(fn: (chunk: Buffer) => void): void;
    /** Called once, when the process or its channel is gone. */
    onClose(fn: () => void): void;
    /** Whether a pending exchange keeps this Node process alive (an idle one must not). */
    busy(on: boolean): void;
    close(): void;
}

/** Quote one argument for a POSIX shell: single quotes, with ' written as '\''. */
export function shellQuote(arg: string): string {
    if (arg.includes("\u0000")) throw new LibvirtError("invalid", "an argument contains a NUL byte, which no command line can carry");
    if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(arg)) return arg;
    return `'${arg.replace(/'/g, `'\\''`)}'`;
}

export function commandLine(argv: readonly string[]): string {
    return argv.map(shellQuote).join(" ");
}

/** A command whose connection (or shell) went away before it answered: it may or may not have run. */
export function lostError(argv: readonly string[], where: string, secrets: readonly string[], remote: boolean): LibvirtError {
    return new LibvirtError(
        "connection-failed",
        remote
            ? `the SSH connection to ${where} was lost while the command ran; whether it took effect is unknown`
            : `virsh on the ${where} ended while the command ran; whether it took effect is unknown`,
        { command: redact(commandLine(argv), secrets) },
    );
}

export function timeoutError(argv: readonly string[], ms: number, where: string, secrets: readonly string[]): LibvirtError {
    return new LibvirtError(
        "timeout",
        `timed out after ${Math.round(ms / 1000)} s on ${where}; the command may still be running there, ` +
            `so check the domain before retrying`,
        { command: redact(commandLine(argv), secrets) },
    );
}

/** The command waited its whole timeout for one of the connection's channels, and never started. */
function noChannelError(argv: readonly string[], ms: number, where: string, secrets: readonly string[]): LibvirtError {
    return new LibvirtError(
        "timeout",
        `no SSH channel to ${where} became free within ${Math.round(ms / 1000)} s ` +
            `(a connection opens at most ${MAX_CHANNELS}); the command did not run`,
        { command: redact(commandLine(argv), secrets) },
    );
}

// ---- local ---------------------------------------------------------------

export class LocalTransport implements Transport {
    readonly secrets: readonly string[] = [];
    readonly description = "local host";
    readonly remote = false;
    readonly attached = new Map<string, { close(): void }>();

    spawn(argv: readonly string[]): Promise<HostProcess> {
        if (argv.some((a) => a.includes("\u0000"))) return Promise.reject(new Error("an argument contains a NUL byte"));
        publishSpawn(this, argv);
        return new Promise((resolve, reject) => {
            const child = spawn(argv[0]!, argv.slice(1), { stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, LC_ALL: "C" } });
            const streams = [child.stdin!, child.stdout!, child.stderr!] as unknown as Array<{ ref?(): void; unref?(): void }>;
            let closed = false;
            const closers: Array<() => void> = [];
            const gone = () => {
                if (!closed) {
                    closed = true;
                    for (const f of closers) f();
                }
            };
            child.on("close", gone);
            child.stdin!.on("error", () => undefined); // EPIPE after the process died: "close" reports it
            child.once("error", (e) => {
                gone();
                reject(new Error(`cannot run ${argv[0]} on the local host: ${e.message}`));
            });
            child.once("spawn", () =>
                resolve({
                    write: (text) => {
                        if (!closed) child.stdin!.write(text);
                    },
                    onStdout: (fn) => {
                        child.stdout!.on("data", fn);
                    },
                    onStderr: (fn) => {
                        child.stderr!.on("data", fn);
                    },
                    onClose: (fn) => {
                        if (closed) fn();
                        else closers.push(fn);
                    },
                    busy: (on) => {
                        if (on) {
                            child.ref();
                            for (const s of streams) s.ref?.();
                        } else {
                            child.unref();
                            for (const s of streams) s.unref?.();
                        }
                    },
                    close: () => {
                        if (!closed) child.kill("SIGKILL");
                    },
                }),
            );
        });
    }

    exec(argv: readonly string[], opts: ExecOptions): Promise<ExecResult> {
        if (argv.some((a) => a.includes("\u0000"))) {
            return Promise.reject(new LibvirtError("invalid", "an argument contains a NUL byte, which no command line can carry"));
        }
        // Node's stdio pipes are socket pairs, and open("/dev/stdin") fails on a
        // socket (ENXIO). A private temporary file as fd 0 opens like a pipe would.
        let stdinFile: { dir: string; fd: number } | undefined;
        if (opts.stdin !== undefined) {
            const dir = fs.mkdtempSync(path.join(os.tmpdir(), "libvirt-snapshots-"));
            const file = path.join(dir, "stdin");
            fs.writeFileSync(file, opts.stdin, { mode: 0o600 });
            stdinFile = { dir, fd: fs.openSync(file, "r") };
        }
        publishExec(this, argv, opts.stdin);
        const cleanup = () => {
            if (!stdinFile) return;
            try {
                fs.closeSync(stdinFile.fd);
            } catch {
                /* already closed */
            }
            fs.rmSync(stdinFile.dir, { recursive: true, force: true });
        };
        return new Promise((resolve, reject) => {
            const child = spawn(argv[0]!, argv.slice(1), {
                stdio: [stdinFile ? stdinFile.fd : "ignore", "pipe", "pipe"],
                env: { ...process.env, LC_ALL: "C" },
            });
            const out: Buffer[] = [],
                err: Buffer[] = [];
            let timedOut = false;
            const timer = setTimeout(() => {
                timedOut = true;
                child.kill("SIGKILL");
            }, opts.timeoutMs);
            child.stdout!.on("data", (d: Buffer) => out.push(d));
            child.stderr!.on("data", (d: Buffer) => err.push(d));
            child.on("error", (e) => {
                clearTimeout(timer);
                cleanup();
                reject(
                    new LibvirtError("connection-failed", `cannot run ${argv[0]} on the local host: ${e.message}`, {
                        command: commandLine(argv),
                    }),
                );
            });
            child.on("close", (code, signal) => {
                clearTimeout(timer);
                cleanup();
                if (timedOut) return reject(timeoutError(argv, opts.timeoutMs, this.description, []));
                resolve({ code, signal, stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(err).toString("utf8") });
            });
        });
    }
}

// ---- SSH -----------------------------------------------------------------

// sshd's MaxSessions defaults to 10 channels per connection; stay under it.
const MAX_CHANNELS = 8;
/**
 * Long-lived processes (virsh's shells, the host shell) may hold at most half of them, so commands always have
 * channels of their own: a shell that something failed to close costs its place, never every later command.
 */
const LONG_LIVED_MAX = MAX_CHANNELS / 2;

type Settings = Proxy;

function authConfig(s: Settings, agentDefault: string | undefined): Partial<ConnectConfig> {
    const cfg: Partial<ConnectConfig> = { username: s.user ?? DEFAULTS.user };
    if (s.password !== undefined) cfg.password = s.password;
    if (s.privateKey !== undefined) {
        cfg.privateKey = s.privateKey;
        if (s.privateKeyPassword !== undefined) cfg.passphrase = s.privateKeyPassword;
    }
    const agent = s.agentSocketPath ?? agentDefault;
    if (agent) cfg.agent = agent;
    return cfg;
}

class OpenFailure extends Error {}

class DialFailure extends Error {
    constructor(
        message: string,
        readonly retryable: boolean,
        readonly kind: "host-key" | "connection-failed",
    ) {
        super(message);
    }
}

function dialFailureOf(e: Error & { level?: string }, s: Settings, port: number): DialFailure {
    const who = `${s.user ?? DEFAULTS.user}@${s.host}:${port}`;
    if (/passphrase|Encrypted private|Cannot parse privateKey|Malformed|Unsupported key/i.test(e.message)) {
        return new DialFailure(
            `cannot use connection.privateKey for ${who}: ${e.message}. Check privateKeyPassword, ` +
                `and that privateKey holds the key's text, not its path.`,
            false,
            "connection-failed",
        );
    }
    if (e.level === "client-authentication") {
        // A wrong key or password will be wrong again: don't hammer the server.
        return new DialFailure(
            `SSH authentication failed for ${who}: the server refused every method offered ` +
                `(password, privateKey, agent). Check connection.user and the credentials; an agent needs the key loaded (ssh-add).`,
            false,
            "connection-failed",
        );
    }
    return new DialFailure(`cannot connect to ${s.host}:${port}: ${e.message}`, true, "connection-failed");
}

/** Open one authenticated SSH client, checking the host key first. */
function dialOnce(s: Settings, sock: NodeJS.ReadableStream | undefined, onReady: () => void): Promise<Client> {
    return new Promise((resolve, reject) => {
        // Loaded on first use: ssh2 and its dependencies cost ~4 MB of RSS that a local-only provider doesn't need.
        const { Client: SshClient } = require("ssh2") as typeof import("ssh2");
        const client = new SshClient();
        let verdict: Verdict | undefined;
        const port = s.port ?? DEFAULTS.port;
        const timeoutMs = (s.perDialTimeout ?? DEFAULTS.perDialTimeout) * 1000;
        let settled = false;
        const fail = (e: DialFailure) => {
            if (!settled) {
                settled = true;
                client.end();
                reject(e);
            }
        };
        client.on("ready", () => {
            settled = true;
            onReady();
            resolve(client);
        });
        client.on("error", (e: Error & { level?: string }) => {
            if (verdict && !verdict.ok) return fail(new DialFailure(verdict.message, false, "host-key"));
            fail(dialFailureOf(e, s, port));
        });
        client.on("close", () =>
            fail(new DialFailure(`connection to ${s.host}:${port} closed during the handshake`, true, "connection-failed")),
        );
        const agentDefault = s.agentSocketPath ?? process.env.SSH_AUTH_SOCK;
        const agentUsable =
            !!agentDefault &&
            (() => {
                try {
                    fs.statSync(agentDefault);
                    return true;
                } catch {
                    return false;
                }
            })();
        try {
            client.connect({
                host: s.host,
                port,
                sock: sock as ConnectConfig["sock"],
                readyTimeout: timeoutMs,
                keepaliveInterval: SSH_KEEPALIVE_MS,
                keepaliveCountMax: SSH_KEEPALIVE_COUNT_MAX,
                ...authConfig(s, agentUsable ? agentDefault : undefined),
                hostVerifier: (key: Buffer) => {
                    verdict = verifyHostKey(
                        {
                            host: s.host,
                            port,
                            hostKey: s.hostKey,
                            knownHostsPath: s.knownHostsPath,
                            insecureIgnoreHostKey: s.insecureIgnoreHostKey,
                        },
                        key,
                    );
                    return verdict.ok;
                },
            });
            // Without TCP_NODELAY every command paid ~40 ms: sshd sends a command's
            // replies as several small segments, Nagle holds the later ones until
            // the first is acknowledged, and the client delays that ACK (bench/RESULTS.md).
            // On a tunnelled connection the socket is a channel and this is a no-op.
            client.setNoDelay(true);
        } catch (e) {
            // ssh2 parses the key synchronously: a wrong passphrase lands here.
            fail(dialFailureOf(e as Error, s, port));
        }
    });
}

async function dialWithRetries(s: Settings, sock: () => Promise<NodeJS.ReadableStream | undefined>, onReady: () => void): Promise<Client> {
    const limit = s.dialErrorLimit ?? DEFAULTS.dialErrorLimit;
    let last: DialFailure | undefined;
    for (let attempt = 1; attempt <= limit; attempt++) {
        try {
            return await dialOnce(s, await sock(), onReady);
        } catch (e) {
            last = e instanceof DialFailure ? e : new DialFailure((e as Error).message, true, "connection-failed");
            if (!last.retryable) break;
            if (attempt < limit) await new Promise((r) => setTimeout(r, DIAL_BACKOFF(attempt - 1)));
        }
    }
    const tries = last?.retryable ? ` (gave up after ${limit} attempt${limit === 1 ? "" : "s"}, dialErrorLimit)` : "";
    throw new LibvirtError(last?.kind ?? "connection-failed", `${last?.message ?? "cannot connect"}${tries}`);
}

export class SshTransport implements Transport {
    readonly secrets: readonly string[];
    readonly description: string;
    readonly remote = true;
    private client?: Promise<Client>;
    private proxyClient?: Client;
    private active = 0;
    private longLived = 0;
    private waiters: Array<() => void> = [];
    readonly attached = new Map<string, { close(): void }>();

    constructor(private readonly conn: Connection & { host: string }) {
        this.secrets = secretsOf(conn);
        this.description = describeTarget(conn);
    }

    /** Tell subscribers that a handshake with `s` (the target or its jump host) completed. */
    private handshook(s: Settings): () => void {
        return () => publishHandshake(this, `${s.user ?? DEFAULTS.user}@${s.host}:${s.port ?? DEFAULTS.port}`);
    }

    private connect(): Promise<Client> {
        if (!this.client) {
            const p = (async () => {
                let sock: () => Promise<NodeJS.ReadableStream | undefined> = async () => undefined;
                if (this.conn.proxy) {
                    const proxy = await dialWithRetries(this.conn.proxy, async () => undefined, this.handshook(this.conn.proxy));
                    this.proxyClient = proxy;
                    proxy.on("close", () => this.dropped());
                    const port = this.conn.port ?? DEFAULTS.port;
                    sock = () =>
                        new Promise((res, rej) =>
                            proxy.forwardOut("127.0.0.1", 0, this.conn.host, port, (err, stream) =>
                                err
                                    ? rej(
                                          new DialFailure(
                                              `the jump host ${this.conn.proxy!.host} cannot reach ` +
                                                  `${this.conn.host}:${port}: ${err.message}`,
                                              true,
                                              "connection-failed",
                                          ),
                                      )
                                    : res(stream),
                            ),
                        );
                }
                const client = await dialWithRetries(this.conn, sock, this.handshook(this.conn));
                client.on("close", () => this.dropped());
                client.on("error", () => this.dropped());
                return client;
            })();
            this.client = p;
            p.catch(() => {
                if (this.client === p) this.client = undefined;
            });
        }
        return this.client;
    }

    private dropped() {
        this.client = undefined;
        this.proxyClient?.end();
        this.proxyClient = undefined;
    }

    /** A channel of the connection's MAX_CHANNELS, or undefined when none freed by `deadline`. */
    private async slot(deadline: number): Promise<(() => void) | undefined> {
        while (this.active >= MAX_CHANNELS) {
            const left = deadline - Date.now();
            if (left <= 0) return undefined;
            await new Promise<void>((resolve) => {
                const wake = () => {
                    clearTimeout(timer);
                    resolve();
                };
                const timer = setTimeout(() => {
                    this.waiters = this.waiters.filter((w) => w !== wake);
                    resolve();
                }, left);
                this.waiters.push(wake);
            });
        }
        this.active++;
        return () => {
            this.active--;
            this.waiters.shift()?.();
        };
    }

    async exec(argv: readonly string[], opts: ExecOptions): Promise<ExecResult> {
        const line = commandLine(argv);
        const started = Date.now();
        // The wait for a channel is part of the command's time: a call never waits longer than its own timeout.
        const release = await this.slot(started + opts.timeoutMs);
        if (!release) throw noChannelError(argv, opts.timeoutMs, this.description, this.secrets);
        try {
            return await this.execRetryingOpen(line, argv, opts, started + opts.timeoutMs);
        } finally {
            release();
        }
    }

    /**
     * Nothing has run until the channel is open, so a failure to open is safe
     * to retry: sshd refuses channels for a moment while closed sessions wind
     * down ("open failed" near MaxSessions), and a pooled connection may have
     * dropped, in which case we reconnect once.
     */
    private async execRetryingOpen(line: string, argv: readonly string[], opts: ExecOptions, deadline: number): Promise<ExecResult> {
        let reconnected = false;
        for (let attempt = 0; ; attempt++) {
            const client = await this.connect();
            try {
                return await this.runOn(client, line, argv, { ...opts, timeoutMs: deadline - Date.now() }, opts.timeoutMs);
            } catch (e) {
                if (!(e instanceof OpenFailure)) throw e;
                const alive = this.client !== undefined && !(client as unknown as { _sock?: { destroyed?: boolean } })._sock?.destroyed;
                const backoff = CHANNEL_OPEN_BACKOFF(attempt);
                const refused = /open failed|Channel open failure/i.test(e.message);
                if (alive && refused && attempt < CHANNEL_OPEN_ATTEMPTS && Date.now() + backoff < deadline) {
                    await new Promise((r) => setTimeout(r, backoff));
                    continue;
                }
                if (!alive && !reconnected) {
                    reconnected = true;
                    this.dropped();
                    continue;
                }
                throw new LibvirtError("connection-failed", `cannot start a command on ${this.description}: ${e.message}`, {
                    command: redact(line, this.secrets),
                });
            }
        }
    }

    /** `shownMs`: the timeout the caller asked for, which the error names (`opts.timeoutMs` is what is left of it). */
    private runOn(client: Client, line: string, argv: readonly string[], opts: ExecOptions, shownMs: number): Promise<ExecResult> {
        return new Promise((resolve, reject) => {
            const opened = (err: Error | undefined, ch: ClientChannel) => {
                if (err) return reject(new OpenFailure(err.message));
                // The channel is open and the command went with its exec request: now it has been sent.
                publishChannel(this);
                publishExec(this, argv, opts.stdin);
                // Listeners go on at once: a quick command's output and exit status may already be on their way.
                const out: Buffer[] = [],
                    errs: Buffer[] = [];
                let code: number | null = null,
                    signal: string | null = null,
                    done = false;
                const timer = setTimeout(
                    () => {
                        if (done) return;
                        done = true;
                        try {
                            ch.signal("KILL");
                        } catch {
                            /* not every server honours signals */
                        }
                        ch.close();
                        reject(timeoutError(argv, shownMs, this.description, this.secrets));
                    },
                    Math.max(0, opts.timeoutMs),
                );
                ch.on("data", (d: Buffer) => out.push(d));
                ch.stderr.on("data", (d: Buffer) => errs.push(d));
                ch.on("exit", (c: number | null, sig?: string) => {
                    code = c;
                    signal = sig ?? null;
                });
                const lost = () => lostError(argv, this.description, this.secrets, true);
                // A connection that dies abruptly may never close its channels: fail them when the connection goes.
                const onConnectionGone = () => {
                    if (!done) {
                        done = true;
                        clearTimeout(timer);
                        reject(lost());
                    }
                };
                client.once("close", onConnectionGone);
                ch.on("close", () => {
                    clearTimeout(timer);
                    client.removeListener("close", onConnectionGone);
                    if (done) return;
                    done = true;
                    if (code === null && signal === null) return reject(lost());
                    resolve({ code, signal, stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(errs).toString("utf8") });
                });
                ch.end(opts.stdin ?? "");
            };
            try {
                client.exec(line, opened);
            } catch (e) {
                reject(new OpenFailure((e as Error).message));
            }
        });
    }

    /**
     * A long-lived command on its own channel. The channel holds one of the
     * connection's slots until it closes. Errors reaching the host come from
     * connect() and are the ones exec would throw; anything else is a plain Error.
     */
    async spawn(argv: readonly string[]): Promise<HostProcess> {
        const line = commandLine(argv);
        if (this.longLived >= LONG_LIVED_MAX) {
            throw new Error(`${LONG_LIVED_MAX} long-lived processes already hold channels on ${this.description}`);
        }
        this.longLived++;
        const release = await this.slot(Date.now() + SPAWN_CHANNEL_WAIT_MS);
        if (!release) {
            this.longLived--;
            throw new Error(`no SSH channel to ${this.description} became free within ${SPAWN_CHANNEL_WAIT_MS / 1000} s`);
        }
        let released = false;
        const free = () => {
            if (!released) {
                released = true;
                this.longLived--;
                release();
            }
        };
        try {
            for (let attempt = 0; ; attempt++) {
                const client = await this.connect();
                let ch: ClientChannel;
                try {
                    ch = await new Promise<ClientChannel>((resolve, reject) => {
                        try {
                            client.exec(line, (err, c) => (err ? reject(new OpenFailure(err.message)) : resolve(c)));
                        } catch (e) {
                            reject(new OpenFailure((e as Error).message));
                        }
                    });
                } catch (e) {
                    if (
                        e instanceof OpenFailure &&
                        /open failed|Channel open failure/i.test(e.message) &&
                        attempt < CHANNEL_OPEN_ATTEMPTS
                    ) {
                        await new Promise((r) => setTimeout(r, CHANNEL_OPEN_BACKOFF(attempt)));
                        continue;
                    }
                    throw new Error(`cannot start a command on ${this.description}: ${(e as Error).message}`);
                }
                publishChannel(this);
                publishSpawn(this, argv);
                let closed = false;
                const closers: Array<() => void> = [];
                const gone = () => {
                    if (!closed) {
                        closed = true;
                        client.removeListener("close", gone);
                        free();
                        for (const f of closers) f();
                    }
                };
                ch.on("close", gone);
                ch.on("error", gone);
                // A connection that dies abruptly may never close its channels (see runOn): the shell is gone with it.
                client.once("close", gone);
                return {
                    write: (text) => {
                        if (!closed) ch.write(text);
                    },
                    onStdout: (fn) => {
                        ch.on("data", fn);
                    },
                    onStderr: (fn) => {
                        ch.stderr.on("data", fn);
                    },
                    onClose: (fn) => {
                        if (closed) fn();
                        else closers.push(fn);
                    },
                    busy: () => undefined, // the pooled connection decides whether the process stays alive, as for exec
                    close: () => {
                        if (!closed) {
                            try {
                                ch.signal("KILL");
                            } catch {
                                /* not every server honours signals */
                            }
                            ch.close();
                        }
                    },
                };
            }
        } catch (e) {
            free();
            throw e;
        }
    }

    close(): void {
        for (const a of this.attached.values()) a.close();
        this.attached.clear();
        void this.client?.then(
            (c) => c.end(),
            () => undefined,
        );
        this.dropped();
    }
}

// One connection per distinct target per provider process, shared by every resource.
const pool = new Map<string, SshTransport>();
const local = new LocalTransport();

export function transportFor(conn: Connection): Transport {
    if (!conn.host) return local;
    const key = poolKeyOf(conn);
    let t = pool.get(key);
    if (!t) {
        t = new SshTransport(conn as Connection & { host: string });
        pool.set(key, t);
    }
    return t;
}

export function closeAllTransports(): void {
    for (const t of pool.values()) t.close();
    pool.clear();
    for (const a of local.attached.values()) a.close();
    local.attached.clear();
}
