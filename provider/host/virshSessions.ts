// Virsh sessions: read-only queries, and the deletes, in long-lived `virsh` shells.
//
// Starting virsh costs 20-30 ms of CPU on the host (loading libvirt, opening the
// connection to libvirtd) before it does anything; a read-only query itself takes
// 1-5 ms. So read-only queries run in long-lived `virsh` shells, a few per host,
// one command at a time each. For a query, a session's answer is used only when
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
// caller finds the outcome as it does after exec (moments.ts reads back). A
// timeout kills the shell, as exec kills its process. Only the writes in
// SESSION_WRITES go there: the deletes, whose arguments are plain names. What
// takes XML on stdin (the shell's stdin is the command stream) or the comma
// syntax of --diskspec/--memspec stays a process. A write never queues for a
// busy session (a block commit can last minutes): it takes an idle one, or
// starts one within the budget, or runs as a process; and queries never queue
// behind sessions that writes hold.
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
import { lostError, shellQuote, timeoutError, type ExecResult, type HostProcess, type Transport } from "./transport";

/**
 * Counts every virsh command, for tests and the benchmark: invocations in all;
 * of those, how many ran in a shared session, and how many sessions were started.
 */
export const virshStats = { invocations: 0, sessionCommands: 0, sessionsStarted: 0, sessionWrites: 0 };

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
/** Arguments whose own syntax needs escaping (commas), or XML on stdin: never in a session. */
const PROCESS_ONLY_ARGS = new Set(["--diskspec", "--memspec", "/dev/stdin"]);
/**
 * Sessions per connection, over every virsh invocation (URI, sudo) on it. Each
 * holds one of the 8 SSH channels the transport opens (sshd allows 10), leaving
 * 5 for commands that change something, however many URIs share the host.
 */
const MAX_SESSIONS = 3;
const START_TIMEOUT_MS = 15_000;
const IDLE_CLOSE_MS = 30_000;
/** After a session failed to start, how long to use processes only before trying again. */
const RETRY_SESSIONS_MS = 60_000;
/** Every printable ASCII character, round-tripped when a session starts. */
const PRINTABLE = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i)).join("");

/** What a session may do with a command: answer a query, carry a write, or nothing (exec runs it). */
function sessionUse(args: readonly string[]): "read" | "write" | undefined {
    if (args.length === 0 || !args.every((a) => /^[\x20-\x7e]*$/.test(a) && !PROCESS_ONLY_ARGS.has(a))) return undefined;
    if (SESSION_COMMANDS.has(args[0]!)) return "read";
    if (SESSION_WRITES.has(args[0]!)) return "write";
    return undefined;
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

class VirshSession {
    private out: Buffer = Buffer.alloc(0);
    private err: Buffer = Buffer.alloc(0);
    private readonly nonce = randomBytes(12).toString("hex");
    private seq = 0;
    private waiter?: () => void;
    closed = false;

    private constructor(private readonly proc: HostProcess) {
        proc.onStdout((d) => {
            this.out = this.out.length ? Buffer.concat([this.out, d]) : d;
            this.waiter?.();
        });
        proc.onStderr((d) => {
            this.err = this.err.length ? Buffer.concat([this.err, d]) : d;
            this.waiter?.();
        });
        proc.onClose(() => {
            this.closed = true;
            this.waiter?.();
        });
    }

    /** Start virsh's shell and prove that a line of every printable character comes back intact. */
    static async start(transport: Transport, argv: readonly string[]): Promise<VirshSession> {
        const proc = await transport.spawn(argv);
        const session = new VirshSession(proc);
        try {
            proc.busy(true);
            // Nothing is written before the prompt: a connection that asked for credentials would read our input.
            await session.until(() => /virsh [#>] /.test(session.out.toString("latin1")), Date.now() + START_TIMEOUT_MS);
            const r = await session.exchange(["echo", PRINTABLE], START_TIMEOUT_MS);
            if (r.stdout !== `${PRINTABLE}\n` || r.stderr !== "") throw new NoAnswer("virsh's shell did not echo a test line back intact");
            virshStats.sessionsStarted++;
            return session;
        } catch (e) {
            session.close();
            throw e;
        } finally {
            proc.busy(false);
        }
    }

    private until(done: () => boolean, deadline: number, onTimeout?: () => Error): Promise<void> {
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
                    reject(onTimeout?.() ?? new NoAnswer("virsh's shell did not answer"));
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
     * One command. Resolves with its stdout and stderr when it ran; rejects with
     * NoAnswer when it didn't parse or the session broke (the session is then
     * closed unless it is still in step), or with the exec path's timeout error.
     */
    async exchange(args: readonly string[], timeoutMs: number, onTimeout?: () => Error): Promise<{ stdout: string; stderr: string }> {
        if (this.closed) throw new NoAnswer("virsh's shell ended");
        try {
            return await this.exchangeSent(args, timeoutMs, onTimeout);
        } catch (e) {
            // From here on the line was sent: whatever ends the exchange, the command may have run.
            if (e instanceof NoAnswer && e.sent === undefined) throw new NoAnswer(e.message, true);
            throw e;
        }
    }

    private async exchangeSent(
        args: readonly string[],
        timeoutMs: number,
        onTimeout?: () => Error,
    ): Promise<{ stdout: string; stderr: string }> {
        const id = `${this.nonce}x${++this.seq}`;
        const arg = (p: string) => shellQuote(`${p}${id}<`);
        const out = (p: string) => Buffer.from(`${p}${id}&lt;\n`);
        const err = (p: string) => Buffer.from(`error: ${p}${id}&lt;\n`);
        this.proc.write(
            `echo --err --xml ${arg("S")} ; echo --xml ${arg("S")} ; ${args.map(shellQuote).join(" ")} ; ` +
                `echo --xml ${arg("E")} ; echo --err --xml ${arg("E")}\necho --xml ${arg("P")} ; echo --err --xml ${arg("P")}\n`,
        );
        await this.until(() => this.out.includes(out("P")) && this.err.includes(err("P")), Date.now() + timeoutMs, onTimeout);
        const o = this.out,
            e = this.err;
        const oP = o.indexOf(out("P")),
            eP = e.indexOf(err("P"));
        const oS = o.indexOf(out("S")),
            oE = o.indexOf(out("E"), Math.max(oS, 0)),
            eS = e.indexOf(err("S")),
            eE = e.indexOf(err("E"), Math.max(eS, 0));
        this.out = o.subarray(oP + out("P").length);
        this.err = e.subarray(eP + err("P").length);
        const ran = [oS, oE, eS, eE].map((i) => i >= 0);
        if (ran.every((x) => x) && oS < oE && oE < oP && eS < eE && eE < eP) {
            return {
                stdout: o.subarray(oS + out("S").length, oE).toString("utf8"),
                stderr: e.subarray(eS + err("S").length, eE).toString("utf8"),
            };
        }
        // Nothing ran: the caller may run it as a process, whatever it is.
        if (!ran.some((x) => x)) throw new NoAnswer("virsh's shell did not parse the command", false);
        this.close(); // out of step: never reuse it
        throw new NoAnswer("virsh's shell answered out of order");
    }

    close(): void {
        if (!this.closed) {
            this.closed = true;
            this.proc.close();
        }
        this.waiter?.();
    }

    busy(on: boolean): void {
        this.proc.busy(on);
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

/** Sessions for one transport and one virsh invocation (URI, sudo). */
class SessionPool {
    private idle: VirshSession[] = [];
    private live = 0;
    /** Sessions held by writes: queries don't wait for them. */
    private writing = 0;
    private queue: Array<(s: VirshSession | undefined) => void> = [];
    private disabledUntil = 0;
    private idleTimer?: NodeJS.Timeout;

    constructor(
        private readonly transport: Transport,
        private readonly argv: readonly string[],
        private readonly budget: SessionBudget,
    ) {
        budget.pools.add(this);
    }

    /** The command's result from a session, or undefined when exec must run it. */
    async run(args: readonly string[], fullArgv: readonly string[], timeoutMs: number): Promise<ExecResult | undefined> {
        const use = sessionUse(args);
        if (Date.now() < this.disabledUntil || !use) return undefined;
        const write = use === "write";
        const session = await this.acquire(!write);
        if (!session) return undefined;
        let keep = true;
        if (write) this.writing++;
        try {
            session.busy(true);
            const r = await session.exchange(args, timeoutMs, () =>
                timeoutError(fullArgv, timeoutMs, this.transport.description, this.transport.secrets),
            );
            r.stderr = r.stderr.replace(RECONNECTED, "");
            if (CONNECTION_LOST.test(r.stderr)) keep = false;
            if (write) {
                // Answered here, success or failure: a write never runs twice.
                virshStats.sessionWrites++;
                return { code: FAILED.test(r.stderr) ? 1 : 0, signal: null, stdout: r.stdout, stderr: r.stderr };
            }
            // Only a clean success is answered here; every failure gets its authoritative text and exit code from exec.
            if (r.stderr !== "") return undefined;
            virshStats.sessionCommands++;
            return { code: 0, signal: null, stdout: r.stdout, stderr: "" };
        } catch (e) {
            keep = !session.closed;
            if (e instanceof NoAnswer) {
                if (write && e.sent) throw lostError(fullArgv, this.transport.description, this.transport.secrets, this.transport.remote);
                return undefined;
            }
            throw e;
        } finally {
            if (write) this.writing--;
            session.busy(false);
            this.release(session, keep);
        }
    }

    /** An idle session, or a new one within the budget; `mayWait`: else wait for one of ours that a query holds. */
    private async acquire(mayWait: boolean): Promise<VirshSession | undefined> {
        for (let s = this.idle.pop(); s; s = this.idle.pop()) {
            if (!s.closed) return s;
            this.forget(); // ended while idle: the connection dropped or virsh was killed
        }
        if (this.budget.live < MAX_SESSIONS || this.budget.evictIdle(this)) {
            this.live++;
            this.budget.live++;
            try {
                return await VirshSession.start(this.transport, this.argv);
            } catch (e) {
                this.forget();
                if (e instanceof LibvirtError) throw e; // the host is unreachable: exec would say the same
                // virsh's shell doesn't work here (no virsh, sudo needs a tty, credentials asked, too slow to start...).
                this.disabledUntil = Date.now() + RETRY_SESSIONS_MS;
                for (const w of this.queue.splice(0)) w(undefined);
                return undefined;
            }
        }
        // Queries hold our own sessions: wait for one. Writes or other invocations hold every place: run as a process.
        if (mayWait && this.live - this.writing > 0) return new Promise((resolve) => this.queue.push(resolve));
        return undefined;
    }

    private forget(): void {
        this.live--;
        this.budget.live--;
    }

    /** Close one idle session, giving its place to another pool. */
    closeOneIdle(): boolean {
        const s = this.idle.pop();
        if (!s) return false;
        s.close();
        this.forget();
        return true;
    }

    private release(s: VirshSession, keep: boolean): void {
        if (!keep || s.closed) {
            s.close();
            this.forget();
            // A waiter takes the freed place with a new session.
            const w = this.queue.shift();
            if (w) void this.acquire(true).then(w, () => w(undefined));
            return;
        }
        const w = this.queue.shift();
        if (w) return w(s);
        this.idle.push(s);
        clearTimeout(this.idleTimer);
        this.idleTimer = setTimeout(() => this.close(), IDLE_CLOSE_MS);
        this.idleTimer.unref();
    }

    close(): void {
        clearTimeout(this.idleTimer);
        for (const s of this.idle.splice(0)) {
            s.close();
            this.forget();
        }
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
