// A long-lived `sh` on the libvirt host, one per connection, as the login user (never sudo). It does
// two things that would otherwise each cost an SSH channel, sshd's session and a process:
//
// - The creates' XML files. A virsh shell (virshSessions.ts) reads its commands on stdin, so a
//   command there can't take its XML on stdin too (`--xmlfile /dev/stdin`). The XML goes into a file
//   written here first (one round trip, no process). The files live in a private folder (mktemp -d:
//   0700, which a sudo'ed virsh still reads) that the `sh` made when it started and removes when it
//   ends, however it ends short of SIGKILL: a dropped connection (end of input, or SIGHUP) included.
//   Each file is removed once its command ran.
// - Read-only commands of the login user (df for the free space preview): asked here, they cost a
//   fork in a shell that already runs.
//
// Where the `sh` can't run (a restricted account), nothing is written and every command runs as its
// own process (exec), as before: a create with its XML on stdin.
//
// The protocol. Each request is one script, sent whole: its body in a group whose stdout and stderr go
// to two files in the folder, then `<marker>O status`, the stdout file, `<marker>E`, the stderr file,
// `<marker>Z`, each copied line by line with dash's builtins, so a request starts no process beyond
// its command (a fork and exec of coreutils costs about as much CPU as a small virsh command). The
// marker holds a random nonce and a counter that no command sees, so nothing a command prints can
// forge it. (Copied by lines, an answer's last line always ends in a newline and a NUL byte is lost:
// the commands asked here print text.) An XML file's text goes in a here-document whose quoted
// delimiter carries the nonce (nothing in it is expanded; a text holding that line is never sent
// this way), copied into the file by the same builtins. Commands are argument vectors, quoted by
// shellQuote as for exec.
import { randomBytes } from "node:crypto";
import { SHELL_EXIT_GRACE_MS, SHELL_IDLE_CLOSE_MS, SHELL_RETRY_MS, SHELL_START_TIMEOUT_MS, XML_FILE_TIMEOUT_MS } from "../timing";
import { commandLine, type ExecResult, type HostProcess, type Transport } from "./transport";
import { publishShellLine, type ShellOp } from "./diagnostics";

const TEMPLATE = "libvirt-snapshots-xml.XXXXXXXXXX";

interface Answer {
    status: number;
    stdout: string;
    stderr: string;
}

class HostShell {
    private out: Buffer = Buffer.alloc(0);
    private waiter?: () => void;
    private readonly nonce = randomBytes(12).toString("hex");
    private seq = 0;
    /** One script at a time: each waits for the one before. */
    private tail: Promise<unknown> = Promise.resolve();
    closed = false;

    /** `transport`: where the shell runs, for what it publishes (diagnostics.ts). */
    private constructor(
        private readonly proc: HostProcess,
        private readonly transport: Transport,
    ) {
        proc.onStdout((d) => {
            this.out = this.out.length ? Buffer.concat([this.out, d]) : d;
            this.waiter?.();
        });
        proc.onStderr(() => undefined);
        proc.onClose(() => {
            this.closed = true;
            this.waiter?.();
        });
    }

    static async start(transport: Transport): Promise<HostShell> {
        const shell = new HostShell(await transport.spawn(["env", "LC_ALL=C", "sh"]), transport);
        // The folder first, outside the framing (which needs it).
        const folder = `umask 077 && n=0 && d=$(mktemp -d -t ${TEMPLATE}) && trap 'rm -rf -- "$d"' EXIT && trap 'exit 1' HUP INT TERM PIPE`;
        if ((await shell.request(folder, SHELL_START_TIMEOUT_MS, "start"))?.status !== 0) {
            shell.close();
            throw new Error("sh did not answer on the libvirt host");
        }
        return shell;
    }

    /**
     * Run one script body; its status, stdout and stderr, or undefined when the shell broke or timed out
     * (it is then closed, never reused out of step), or when the time ran out while earlier scripts ran (nothing
     * was sent). The script that makes the folder (`op` "start") is not framed: its status alone. `op` and `argv`
     * (the command the body runs, if one) say what the script is for, to subscribers (diagnostics.ts).
     */
    request(body: string, timeoutMs: number, op: Exclude<ShellOp, "exit">, argv?: readonly string[]): Promise<Answer | undefined> {
        const framed = op !== "start";
        // The time spent queued behind earlier scripts counts: a call never waits longer than its own timeout.
        const deadline = Date.now() + timeoutMs;
        const run = async () => {
            if (this.closed || Date.now() >= deadline) return undefined;
            const marker = `M${this.nonce}x${++this.seq}`;
            this.proc.busy(true);
            try {
                // Only builtins frame the answer (dash's read and printf): no process per request beyond the command's own.
                const copy = (file: string) => `while IFS= read -r l || [ -n "$l" ]; do printf '%s\\n' "$l"; done <"$d/${file}"`;
                const status = (of: string) => `printf '%s %s\\n' ${marker}O "${of}"`;
                const script = framed
                    ? `{ ${body}\n} >"$d/o" 2>"$d/e"; s=$?; ${status("$s")}; ${copy("o")}; ` +
                      `printf '%s\\n' ${marker}E; ${copy("e")}; printf '%s\\n' ${marker}Z\n`
                    : `${body}\n${status("$?")}; printf '%s\\n' ${marker}E ${marker}Z\n`;
                publishShellLine(this.transport, op, argv, script);
                this.proc.write(script);
                return await this.answer(marker, deadline);
            } finally {
                this.proc.busy(false);
            }
        };
        const result = this.tail.then(run, run);
        this.tail = result.catch(() => undefined);
        return result;
    }

    /** The answer between the marker's lines: `<marker>O status`, stdout, `<marker>E`, stderr, `<marker>Z`. */
    private answer(marker: string, deadline: number): Promise<Answer | undefined> {
        return new Promise((resolve) => {
            const finish = (v: Answer | undefined) => {
                clearTimeout(timer);
                this.waiter = undefined;
                if (v === undefined) this.close();
                resolve(v);
            };
            const check = () => {
                const o = this.out.indexOf(`${marker}O `);
                const eol = o >= 0 ? this.out.indexOf("\n", o) : -1;
                const e = eol >= 0 ? this.out.indexOf(`${marker}E\n`, eol) : -1;
                const z = e >= 0 ? this.out.indexOf(`${marker}Z\n`, e) : -1;
                if (z >= 0) {
                    const status = Number(
                        this.out
                            .subarray(o + marker.length + 2, eol)
                            .toString("latin1")
                            .trim(),
                    );
                    const answer = {
                        status,
                        stdout: this.out.subarray(eol + 1, e).toString("utf8"),
                        stderr: this.out.subarray(e + marker.length + 2, z).toString("utf8"),
                    };
                    this.out = this.out.subarray(z + marker.length + 2);
                    return finish(Number.isInteger(status) ? answer : undefined);
                }
                if (this.closed) finish(undefined);
            };
            const timer = setTimeout(() => finish(undefined), Math.max(0, deadline - Date.now()));
            this.waiter = check;
            check();
        });
    }

    /** A new file holding `text`; undefined when it can't be written this way. */
    async write(text: string): Promise<string | undefined> {
        const delimiter = `XML${this.nonce}`;
        const body = text.endsWith("\n") ? text : `${text}\n`;
        if (body.includes("\u0000") || body.split("\n").includes(delimiter)) return undefined;
        const r = await this.request(
            // The folder is private and ours: a counter names the file. Builtins copy the text in, so no process runs.
            `n=$((n + 1)); f="$d/xml.$n"; ` +
                `while IFS= read -r l; do printf '%s\\n' "$l"; done >"$f" <<'${delimiter}'\n${body}${delimiter}\n` +
                `r=$?; if [ "$r" -eq 0 ]; then printf '%s' "$f"; else rm -f -- "$f"; fi; [ "$r" -eq 0 ]`,
            XML_FILE_TIMEOUT_MS,
            "write-file",
        );
        const file = r?.stdout.trim();
        return r?.status === 0 && file?.startsWith("/") ? file : undefined;
    }

    /** Remove a file `write` made; nobody waits for it (the next script runs after it). */
    remove(file: string): void {
        const argv = ["rm", "-f", "--", file];
        void this.request(commandLine(argv), XML_FILE_TIMEOUT_MS, "remove-file", argv);
    }

    /** A command that only reads, with nothing on its stdin; undefined when the shell broke or timed out. */
    async run(argv: readonly string[], timeoutMs: number): Promise<ExecResult | undefined> {
        const r = await this.request(`${commandLine(argv)} </dev/null`, timeoutMs, "run", argv);
        return r && { code: r.status, signal: null, stdout: r.stdout, stderr: r.stderr };
    }

    /** End the shell: `exit` lets its trap remove the folder; it is killed only if it doesn't end on its own. */
    close(): void {
        if (!this.closed) {
            this.closed = true;
            publishShellLine(this.transport, "exit", undefined, "exit\n");
            this.proc.write("exit\n");
            const kill = setTimeout(() => this.proc.close(), SHELL_EXIT_GRACE_MS);
            kill.unref();
            this.proc.onClose(() => clearTimeout(kill));
        }
        this.waiter?.();
    }
}

/** The host shell of one transport: started on first use, closed when idle or with the transport. */
class HostShellSlot {
    private shell?: Promise<HostShell | undefined>;
    private disabledUntil = 0;
    private idleTimer?: NodeJS.Timeout;

    constructor(private readonly transport: Transport) {}

    /** Write `text` to a new private file on the host; undefined when that isn't possible (run as a process instead). */
    async write(text: string): Promise<string | undefined> {
        return (await this.get())?.write(text);
    }

    remove(file: string): void {
        void this.get().then((s) => s?.remove(file));
    }

    /** Run a read-only command of the login user here; undefined when it can't (exec runs it instead: it only reads). */
    async run(argv: readonly string[], timeoutMs: number): Promise<ExecResult | undefined> {
        return (await this.get())?.run(argv, timeoutMs);
    }

    /**
     * The one live shell. Callers that arrive together share one start: the promise is taken or made before
     * any await, since a shell started beside another would hold an SSH channel that nothing ever closes.
     * A shell found closed is replaced once, by whichever caller sees it first.
     */
    private async get(): Promise<HostShell | undefined> {
        clearTimeout(this.idleTimer);
        this.idleTimer = setTimeout(() => this.close(), SHELL_IDLE_CLOSE_MS);
        this.idleTimer.unref();
        for (let attempt = 0; attempt < 2; attempt++) {
            if (Date.now() < this.disabledUntil) return undefined;
            const pending = (this.shell ??= HostShell.start(this.transport).catch(() => {
                this.disabledUntil = Date.now() + SHELL_RETRY_MS;
                return undefined;
            }));
            const shell = await pending;
            if (shell && !shell.closed) return shell;
            if (this.shell === pending) this.shell = undefined;
        }
        return undefined;
    }

    close(): void {
        clearTimeout(this.idleTimer);
        const s = this.shell;
        this.shell = undefined;
        void s?.then((x) => x?.close());
    }
}

export function hostShellFor(transport: Transport): HostShellSlot {
    let f = transport.attached.get("host-shell") as HostShellSlot | undefined;
    if (!f) {
        f = new HostShellSlot(transport);
        transport.attached.set("host-shell", f);
    }
    return f;
}
