// Virsh sessions: read-only queries, the deletes and the creates, in long-lived `virsh` shells.
//
// Starting virsh costs 20-30 ms of CPU on the host (loading libvirt, opening the
// connection to libvirtd) before it does anything; a read-only query itself takes
// 1-5 ms. So read-only queries run in long-lived `virsh` shells, as few per host
// as will do: queries asked at once are sent to one shell together (pipelined,
// up to PIPELINE; virsh runs them in order, each framed by its own markers), so
// they cost one round trip and no second shell. A write holds a shell alone.
// For a query, a session's answer is used only when
// it is an unambiguous success (its stdout is then byte for byte what the process
// would have printed); every failure runs again as its own process (exec), which
// gives the authoritative text and exit code.
//
// Writes. A write can't run twice, so a write in a session is answered by the
// session, success or failure, and never re-run (bench/RESULTS.md, "Writes in
// the shell", has the measurements). Its exit status: the shell has no $?, but
// virsh prints every failure of a command as lines starting with "error: " on
// stderr (virsh's own and libvirt's); a success prints none, except the notice
// "error: Reconnected to the hypervisor" when the shell's libvirt connection had
// dropped and virsh reconnected before running it. So such a line between the
// markers, other than that notice, is exit code 1. A command that did
// not parse ran nothing (virsh parses a whole line first) and goes to exec. A
// session that ends or loses step after the line was sent leaves the outcome
// unknown: a connection-failed error, as a cut exec channel gives, and the
// caller finds the outcome as it does after exec (the snapshot engine reads back). A
// timeout kills the shell, as exec kills its process. Only the writes in
// SESSION_WRITES go there: the deletes, whose arguments are plain names, and
// the creates in XML_WRITES, whose XML (built by xml.ts, as for a process)
// can't come on stdin, the shell's command stream: hostShell.ts writes it to a
// private file on the host, the command reads that path, and the file is
// removed. Where no file can be written, the create runs as a process with its
// XML on stdin. The comma syntax of --diskspec/--memspec stays a process. A write never queues for long
// (a block commit can last minutes): it takes an idle session, or starts one
// within the budget, or waits up to SESSION_WRITE_WAIT_MS for one to free, else runs as a
// process; queries wait no longer than that behind sessions that writes hold.
//
// The protocol. virsh reads its shell input with readline, which echoes the
// prompt and the line to stdout, so each request is one line that brackets the
// command with markers only virsh's own output can contain:
//     echo --err --xml 'S<id><' ; echo --xml 'S<id><' ; COMMAND ; echo --xml 'E<id><' ; echo --err --xml 'E<id><'
//     echo --xml 'P<id><' ; echo --err --xml 'P<id><'
// `echo --xml` prints `S<id>&lt;`, which the echoed input (`'S<id><'`) never
// contains; `--err` prints `error: S<id>&lt;` on stderr. <id> is a random
// nonce per session plus a counter, so no snapshot name or description can
// forge a marker. The second line always parses: when the first doesn't (virsh
// parses the whole line before running any of it, so then nothing ran), only
// the P markers come back, and the command goes to exec for the real error.
//
// Quoting. An argument reaches the command through virsh's own tokenizer (the
// same for the shell and for `virsh 'a ; b'`), whose single quotes work like a
// POSIX shell's, so shellQuote is the quoting here too. readline binds control
// characters and, in the C locale, bytes above 0x7f to editing commands, so a
// command with any argument outside printable ASCII never goes to a session.
import { randomBytes } from "node:crypto";
import { LibvirtError } from "../errors";
import { SESSION_WRITE_WAIT_MS, SHELL_IDLE_CLOSE_MS, SHELL_RETRY_MS, SHELL_START_TIMEOUT_MS } from "../timing";
import { lostError, shellQuote, timeoutError, type ExecResult, type HostProcess, type Transport } from "./transport";
import { publishSessionAnswer, publishSessionLine, publishSessionStart } from "./diagnostics";
import { hostShellFor } from "./hostShell";

/** Commands that only read. Nothing else ever runs in a session. */
const SESSION_COMMANDS = new Set([
    "dumpxml",
    "domstate",
    "dominfo",
    "domuuid",
    "domname",
    "domid",
    "domjobinfo",
    "version",
    "domcapabilities",
    "capabilities",
    "snapshot-dumpxml",
    "snapshot-info",
    "snapshot-list",
    "snapshot-parent",
    "checkpoint-dumpxml",
    "checkpoint-info",
    "checkpoint-list",
    "checkpoint-parent",
]);
/** Writes a session carries: their arguments are names, no XML on stdin, no escaped syntax. */
const SESSION_WRITES = new Set(["snapshot-delete", "checkpoint-delete"]);
/** Writes a session carries with their XML in a file on the host (`--xmlfile /dev/stdin` becomes its path). */
const XML_WRITES = new Set(["snapshot-create", "checkpoint-create"]);
/** Arguments whose own syntax needs escaping (commas), or XML on stdin: never in a session. */
const PROCESS_ONLY_ARGS = new Set(["--diskspec", "--memspec", "/dev/stdin"]);
/**
 * Sessions per connection, over every virsh invocation (URI, sudo) on it. Each
 * holds one of the 8 SSH channels the transport opens (sshd allows 10); with the
 * shell that writes the creates' XML files (hostShell.ts), at least 4 are left for
 * commands that run as processes, however many URIs share the host. Queries
 * start a second shell only when PIPELINE of them wait on the first, so most
 * hosts see one or two.
 */
const MAX_SESSIONS = 3;
/** Every printable ASCII character, round-tripped when a session starts. */
const PRINTABLE = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i)).join("");

/**
 * What a session may do with a command: answer a query, carry a write, or nothing (exec runs it).
 * `xmlFile`: its `--xmlfile /dev/stdin` will read a file on the host instead.
 */
function sessionUse(args: readonly string[], xmlFile = false): "read" | "write" | undefined {
    if (args.length === 0 || !args.every((a) => /^[\x20-\x7e]*$/.test(a) && !PROCESS_ONLY_ARGS.has(a))) return undefined;
    if (xmlFile) return XML_WRITES.has(args[0]!) ? "write" : undefined;
    if (SESSION_COMMANDS.has(args[0]!)) return "read";
    if (SESSION_WRITES.has(args[0]!)) return "write";
    return undefined;
}

/** Where a command reads its XML on stdin (the index of `/dev/stdin` after `--xmlfile`), else -1. */
function xmlFileAt(args: readonly string[]): number {
    const at = args.indexOf("/dev/stdin");
    return at > 0 && args[at - 1] === "--xmlfile" && args.indexOf("/dev/stdin", at + 1) < 0 ? at : -1;
}

/** virsh prints a command's failure as "error: " lines on stderr. */
const FAILED = /^error: /m;
/**
 * ...and one notice that is no failure: the first command after libvirtd dropped the shell's
 * connection reconnects, runs, and says so on stderr (measured on 9.0).
 */
const RECONNECTED = /^error: Reconnected to the hypervisor\n/gm;
/** libvirtd went away under the shell: virsh says so asynchronously, on stderr. */
const CONNECTION_LOST =
    /Cannot (recv|write) data|End of file while reading|client socket is closed|no valid connection|not connected|Disconnected from/i;

/**
 * The session can't answer. `sent`: the command line was written, so a write
 * may have run; otherwise nothing ran and the caller runs it as a process.
 */
class NoAnswer extends Error {
    constructor(
        message: string,
        readonly sent?: boolean,
    ) {
        super(message);
    }
}

interface Pending {
    id: string;
    timer: NodeJS.Timeout;
    resolve(r: { stdout: string; stderr: string }): void;
    reject(e: Error): void;
}

class VirshSession {
    private out: Buffer = Buffer.alloc(0);
    private err: Buffer = Buffer.alloc(0);
    private readonly nonce = randomBytes(12).toString("hex");
    private seq = 0;
    private waiter?: () => void;
    /** Commands sent and not answered yet, in the order virsh runs them. */
    private readonly pending: Pending[] = [];
    closed = false;

    /** `transport` and `argv`: where the session runs and what started it, for what it publishes (diagnostics.ts). */
    private constructor(
        private readonly proc: HostProcess,
        private readonly transport: Transport,
        private readonly argv: readonly string[],
    ) {
        proc.onStdout((d) => {
            this.out = this.out.length ? Buffer.concat([this.out, d]) : d;
            this.pump();
        });
        proc.onStderr((d) => {
            this.err = this.err.length ? Buffer.concat([this.err, d]) : d;
            this.pump();
        });
        proc.onClose(() => {
            this.closed = true;
            this.pump();
        });
    }

    /** Start virsh's shell and prove that a line of every printable character comes back intact. */
    static async start(transport: Transport, argv: readonly string[]): Promise<VirshSession> {
        const proc = await transport.spawn(argv);
        const session = new VirshSession(proc, transport, argv);
        try {
            proc.busy(true);
            // Nothing is written before the prompt: a connection that asked for credentials would read our input.
            await session.until(() => /virsh [#>] /.test(session.out.toString("latin1")), Date.now() + SHELL_START_TIMEOUT_MS);
            session.out = Buffer.alloc(0);
            const r = await session.exchange(["echo", PRINTABLE], SHELL_START_TIMEOUT_MS);
            if (r.stdout !== `${PRINTABLE}\n` || r.stderr !== "") throw new NoAnswer("virsh's shell did not echo a test line back intact");
            publishSessionStart(transport, argv);
            return session;
        } catch (e) {
            session.close();
            throw e;
        } finally {
            proc.busy(false);
        }
    }

    private until(done: () => boolean, deadline: number): Promise<void> {
        return new Promise((resolve, reject) => {
            const check = () => {
                if (done()) {
                    finish();
                    resolve();
                } else if (this.closed) {
                    finish();
                    reject(new NoAnswer("virsh's shell ended"));
                }
            };
            const timer = setTimeout(
                () => {
                    finish();
                    this.close();
                    reject(new NoAnswer("virsh's shell did not answer"));
                },
                Math.max(0, deadline - Date.now()),
            );
            const finish = () => {
                clearTimeout(timer);
                this.waiter = undefined;
            };
            this.waiter = check;
            check();
        });
    }

    /**
     * One command, sent at once even while earlier ones run (virsh runs them in order, and each is framed by its
     * own markers). Resolves with its stdout and stderr when it ran; rejects with NoAnswer when it didn't parse
     * (sent: false, nothing ran) or the session broke (sent: true; the session is then closed), or with the exec
     * path's timeout error (the session is closed, as exec kills its process).
     */
    exchange(args: readonly string[], timeoutMs: number, onTimeout?: () => Error): Promise<{ stdout: string; stderr: string }> {
        if (this.closed) return Promise.reject(new NoAnswer("virsh's shell ended"));
        const id = `${this.nonce}x${++this.seq}`;
        const arg = (p: string) => shellQuote(`${p}${id}<`);
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                this.close(onTimeout?.() ?? new NoAnswer("virsh's shell did not answer", true), entry);
            }, timeoutMs);
            const entry: Pending = { id, timer, resolve, reject };
            this.pending.push(entry);
            this.proc.busy(true);
            const line =
                `echo --err --xml ${arg("S")} ; echo --xml ${arg("S")} ; ${args.map(shellQuote).join(" ")} ; ` +
                `echo --xml ${arg("E")} ; echo --err --xml ${arg("E")}\necho --xml ${arg("P")} ; echo --err --xml ${arg("P")}\n`;
            publishSessionLine(this.transport, this.argv, args, line);
            this.proc.write(line);
        });
    }

    /** Answer the commands whose output is complete, oldest first. */
    private pump(): void {
        this.waiter?.();
        while (this.pending.length) {
            const head = this.pending[0]!;
            const out = (p: string) => Buffer.from(`${p}${head.id}&lt;\n`);
            const err = (p: string) => Buffer.from(`error: ${p}${head.id}&lt;\n`);
            const o = this.out,
                e = this.err;
            const oP = o.indexOf(out("P")),
                eP = e.indexOf(err("P"));
            if (oP < 0 || eP < 0) {
                if (this.closed) this.close(new NoAnswer("virsh's shell ended", true));
                return;
            }
            this.pending.shift();
            clearTimeout(head.timer);
            if (!this.pending.length) this.proc.busy(false);
            const oS = o.indexOf(out("S")),
                oE = o.indexOf(out("E"), Math.max(oS, 0)),
                eS = e.indexOf(err("S")),
                eE = e.indexOf(err("E"), Math.max(eS, 0));
            this.out = o.subarray(oP + out("P").length);
            this.err = e.subarray(eP + err("P").length);
            const ran = [oS, oE, eS, eE].map((i) => i >= 0);
            if (ran.every((x) => x) && oS < oE && oE < oP && eS < eE && eE < eP) {
                head.resolve({
                    stdout: o.subarray(oS + out("S").length, oE).toString("utf8"),
                    stderr: e.subarray(eS + err("S").length, eE).toString("utf8"),
                });
            } else if (!ran.some((x) => x)) {
                // Nothing ran: the caller may run it as a process, whatever it is.
                head.reject(new NoAnswer("virsh's shell did not parse the command", false));
            } else {
                head.reject(new NoAnswer("virsh's shell answered out of order", true));
                this.close(new NoAnswer("virsh's shell answered out of order", true)); // out of step: never reuse it
                return;
            }
        }
    }

    /** End the shell; what it had not answered yet fails with `error` (`first`, a timed-out command, with its own). */
    close(error: Error = new NoAnswer("virsh's shell ended", true), first?: Pending): void {
        if (!this.closed) {
            this.closed = true;
            this.proc.close();
        }
        for (const p of this.pending.splice(0)) {
            clearTimeout(p.timer);
            p.reject(p === first || !first ? error : new NoAnswer("virsh's shell ended", true));
        }
        this.proc.busy(false);
        this.waiter?.();
    }
}

/** What every pool on one transport shares: the count of live sessions, capped by MAX_SESSIONS. */
class SessionBudget {
    live = 0;
    readonly pools = new Set<SessionPool>();
    close(): void {
        for (const p of this.pools) p.close();
    }
    /** Free a place held by another pool's idle session. */
    evictIdle(except: SessionPool): boolean {
        for (const p of this.pools) if (p !== except && p.closeOneIdle()) return true;
        return false;
    }
}

/** Queries sent to one session before they wait for its answers. */
const PIPELINE = 8;

/** A live session, and what holds it: queries (pipelined) or one write. */
interface Held {
    session: VirshSession;
    readers: number;
    writer: boolean;
}

/** Sessions for one transport and one virsh invocation (URI, sudo). */
class SessionPool {
    private readonly held: Held[] = [];
    /** A session being started for queries: the others wait for it rather than start their own. */
    private starting?: Promise<Held | undefined>;
    private queue: Array<() => void> = [];
    private disabledUntil = 0;
    private idleTimer?: NodeJS.Timeout;

    constructor(
        private readonly transport: Transport,
        private readonly argv: readonly string[],
        private readonly budget: SessionBudget,
    ) {
        budget.pools.add(this);
    }

    /**
     * The command's result from a session, or undefined when exec must run it. With `stdin`, only a create
     * whose XML a file on the host can carry (XML_WRITES) comes here.
     */
    async run(args: readonly string[], fullArgv: readonly string[], timeoutMs: number, stdin?: string): Promise<ExecResult | undefined> {
        const xmlAt = stdin === undefined ? -1 : xmlFileAt(args);
        if (stdin !== undefined && xmlAt < 0) return undefined;
        const use = sessionUse(
            args.map((a, i) => (i === xmlAt ? "/tmp/x" : a)),
            xmlAt >= 0,
        );
        if (Date.now() < this.disabledUntil || !use) return undefined;
        const write = use === "write";
        const h = write ? await this.forWrite() : await this.forRead();
        if (!h) return undefined;
        let keep = true;
        let file: string | undefined;
        try {
            if (stdin !== undefined) {
                file = await hostShellFor(this.transport).write(stdin);
                if (!file || !/^[\x20-\x7e]+$/.test(file)) return undefined;
                args = args.map((a, i) => (i === xmlAt ? file! : a));
            }
            const r = await h.session.exchange(args, timeoutMs, () =>
                timeoutError(fullArgv, timeoutMs, this.transport.description, this.transport.secrets),
            );
            r.stderr = r.stderr.replace(RECONNECTED, "");
            if (CONNECTION_LOST.test(r.stderr)) keep = false;
            if (write) {
                // Answered here, success or failure: a write never runs twice.
                publishSessionAnswer(this.transport, this.argv, args, true);
                return { code: FAILED.test(r.stderr) ? 1 : 0, signal: null, stdout: r.stdout, stderr: r.stderr };
            }
            // Only a clean success is answered here; every failure gets its authoritative text and exit code from exec.
            if (r.stderr !== "") return undefined;
            publishSessionAnswer(this.transport, this.argv, args, false);
            return { code: 0, signal: null, stdout: r.stdout, stderr: "" };
        } catch (e) {
            keep = !h.session.closed;
            if (e instanceof NoAnswer) {
                if (write && e.sent) throw lostError(fullArgv, this.transport.description, this.transport.secrets, this.transport.remote);
                return undefined;
            }
            throw e;
        } finally {
            if (file) hostShellFor(this.transport).remove(file);
            this.release(h, write, keep);
        }
    }

    /**
     * A session for a query: an idle one, or one answering other queries (the query is pipelined behind
     * theirs), or a new one within the budget; else wait for one of ours, or up to SESSION_WRITE_WAIT_MS for one
     * that writes hold to free (then exec runs it). Never one a write holds.
     */
    private async forRead(): Promise<Held | undefined> {
        let deadline: number | undefined;
        for (;;) {
            this.prune();
            const shared = this.held.filter((h) => !h.writer && h.readers < PIPELINE).sort((x, y) => x.readers - y.readers)[0];
            if (shared) {
                shared.readers++;
                return shared;
            }
            if (this.starting) {
                if (!(await this.starting)) return undefined;
                continue;
            }
            if (this.budget.live < MAX_SESSIONS || this.budget.evictIdle(this)) {
                this.starting = this.start().finally(() => (this.starting = undefined));
                const h = await this.starting;
                if (!h) return undefined;
                continue;
            }
            // Every place is taken: wait for one of ours that queries hold; behind writes only a little (one may last minutes).
            const left = this.held.some((h) => !h.writer) ? Infinity : (deadline ??= Date.now() + SESSION_WRITE_WAIT_MS) - Date.now();
            if (left <= 0) return undefined;
            await new Promise<void>((resolve) => {
                const timer = left === Infinity ? undefined : setTimeout(resolve, left);
                this.queue.push(() => {
                    clearTimeout(timer);
                    resolve();
                });
            });
        }
    }

    /**
     * A session for a write, alone: an idle one, or a new one within the budget, or one that frees within
     * SESSION_WRITE_WAIT_MS; else undefined (the write runs as a process). Never a long wait: a write may last minutes.
     */
    private async forWrite(): Promise<Held | undefined> {
        for (const until = Date.now() + SESSION_WRITE_WAIT_MS; ;) {
            this.prune();
            let h = this.held.find((x) => !x.writer && x.readers === 0);
            if (!h && (this.budget.live < MAX_SESSIONS || this.budget.evictIdle(this))) h = await this.start();
            if (h && !h.writer && !h.readers) {
                h.writer = true;
                return h;
            }
            // Taken while it started, or every place is held: wait a little for one to free.
            const left = until - Date.now();
            if (left <= 0 || Date.now() < this.disabledUntil) return undefined;
            await new Promise<void>((resolve) => {
                const timer = setTimeout(resolve, left);
                this.queue.push(() => {
                    clearTimeout(timer);
                    resolve();
                });
            });
        }
    }

    private async start(): Promise<Held | undefined> {
        this.budget.live++;
        try {
            const h: Held = { session: await VirshSession.start(this.transport, this.argv), readers: 0, writer: false };
            this.held.push(h);
            return h;
        } catch (e) {
            this.budget.live--;
            if (e instanceof LibvirtError) throw e; // the host is unreachable: exec would say the same
            // virsh's shell doesn't work here (no virsh, sudo needs a tty, credentials asked, too slow to start...).
            this.disabledUntil = Date.now() + SHELL_RETRY_MS;
            for (const w of this.queue.splice(0)) w();
            return undefined;
        }
    }

    /** Forget sessions that ended (the connection dropped, virsh was killed). */
    private prune(): void {
        for (let i = this.held.length - 1; i >= 0; i--) {
            const h = this.held[i]!;
            if (h.session.closed && !h.readers && !h.writer) {
                this.held.splice(i, 1);
                this.budget.live--;
            }
        }
    }

    private release(h: Held, write: boolean, keep: boolean): void {
        if (write) h.writer = false;
        else h.readers--;
        if (!keep) h.session.close();
        this.prune();
        for (const w of this.queue.splice(0)) w();
        if (this.held.some((x) => !x.writer && !x.readers)) {
            clearTimeout(this.idleTimer);
            this.idleTimer = setTimeout(() => this.close(), SHELL_IDLE_CLOSE_MS);
            this.idleTimer.unref();
        }
    }

    /** Close one idle session, giving its place to another pool. */
    closeOneIdle(): boolean {
        const h = this.held.find((x) => !x.writer && !x.readers);
        if (!h) return false;
        h.session.close();
        this.prune();
        return true;
    }

    /** Close the idle sessions. */
    close(): void {
        clearTimeout(this.idleTimer);
        for (const h of this.held.filter((x) => !x.writer && !x.readers)) h.session.close();
        this.prune();
    }
}

export function sessionsFor(transport: Transport, argv: readonly string[]): SessionPool {
    let budget = transport.attached.get("virsh-sessions") as SessionBudget | undefined;
    if (!budget) {
        budget = new SessionBudget();
        transport.attached.set("virsh-sessions", budget);
    }
    const key = `virsh-sessions ${JSON.stringify(argv)}`;
    let p = transport.attached.get(key) as SessionPool | undefined;
    if (!p) {
        p = new SessionPool(transport, argv, budget);
        transport.attached.set(key, p);
    }
    return p;
}
