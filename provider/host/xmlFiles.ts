// XML files for the writes a virsh shell carries (virshSessions.ts). The shell reads its commands
// on stdin, so a command there can't take its XML on stdin too (`--xmlfile /dev/stdin`). The XML
// goes into a file on the host first, written by a long-lived `sh` on the same connection, so a
// file costs one round trip and a `cat`, not an SSH channel and a process. The files live in a
// private folder of the login user's (mktemp -d: 0700, which a sudo'ed virsh still reads) that the
// `sh` made when it started and removes when it ends, however it ends short of SIGKILL: a dropped
// connection (end of input, or SIGHUP) included. Each file is removed once its command ran.
// Where that `sh` can't run (a restricted account), nothing is written and the command runs as its
// own process with the XML on stdin.
//
// The protocol. Each request is one script, sent whole: the text in a here-document whose quoted
// delimiter carries a random nonce (nothing in it is expanded; a text holding that line is never
// sent this way), then a line printing a marker with the nonce and a counter, the status, and the
// file's path. The paths come from mktemp, never from the caller.
import { randomBytes } from "node:crypto";
import { shellQuote, type HostProcess, type Transport } from "./transport";

const TEMPLATE = "libvirt-snapshots-xml.XXXXXXXXXX";
const START_TIMEOUT_MS = 15_000;
const WRITE_TIMEOUT_MS = 30_000;
const IDLE_CLOSE_MS = 30_000;
/** After the shell failed to start, how long to go without it before trying again. */
const RETRY_MS = 60_000;

class HostShell {
    private out = "";
    private waiter?: () => void;
    private readonly nonce = randomBytes(12).toString("hex");
    private seq = 0;
    /** One script at a time: each waits for the one before. */
    private tail: Promise<unknown> = Promise.resolve();
    closed = false;

    private constructor(private readonly proc: HostProcess) {
        proc.onStdout((d) => {
            this.out += d.toString("utf8");
            this.waiter?.();
        });
        proc.onStderr(() => undefined);
        proc.onClose(() => {
            this.closed = true;
            this.waiter?.();
        });
    }

    static async start(transport: Transport): Promise<HostShell> {
        const shell = new HostShell(await transport.spawn(["env", "LC_ALL=C", "sh"]));
        const folder = `d=$(mktemp -d -t ${TEMPLATE}) && trap 'rm -rf -- "$d"' EXIT && trap 'exit 1' HUP INT TERM PIPE`;
        if ((await shell.script(folder, START_TIMEOUT_MS))?.status !== 0) {
            shell.close();
            throw new Error("sh did not answer on the libvirt host");
        }
        return shell;
    }

    /** Run one script; its status and the value of $f, or undefined when the shell broke or timed out (then closed). */
    script(body: string, timeoutMs: number): Promise<{ status: number; file: string } | undefined> {
        const run = async () => {
            if (this.closed) return undefined;
            const marker = `M${this.nonce}x${++this.seq}`;
            this.proc.busy(true);
            try {
                this.proc.write(`${body}\nprintf '%s %s %s\\n' ${marker} "$?" "$f"\n`);
                const line = await this.line(marker, Date.now() + timeoutMs);
                if (line === undefined) return undefined;
                const [status, ...file] = line.split(" ");
                return { status: Number(status), file: file.join(" ") };
            } finally {
                this.proc.busy(false);
            }
        };
        const result = this.tail.then(run, run);
        this.tail = result.catch(() => undefined);
        return result;
    }

    /** The rest of the line that starts with the marker. */
    private line(marker: string, deadline: number): Promise<string | undefined> {
        return new Promise((resolve) => {
            const finish = (v: string | undefined) => {
                clearTimeout(timer);
                this.waiter = undefined;
                if (v === undefined) this.close();
                resolve(v);
            };
            const check = () => {
                const at = this.out.indexOf(`${marker} `);
                const end = at >= 0 ? this.out.indexOf("\n", at) : -1;
                if (end >= 0) {
                    const v = this.out.slice(at + marker.length + 1, end);
                    this.out = this.out.slice(end + 1);
                    finish(v);
                } else if (this.closed) finish(undefined);
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
        const r = await this.script(
            `f=$(mktemp "$d/xml.XXXXXXXXXX") && cat > "$f" <<'${delimiter}'\n${body}${delimiter}\n` +
                `s=$?; [ "$s" -eq 0 ] || { [ -n "$f" ] && rm -f -- "$f"; f=; }; (exit "$s")`,
            WRITE_TIMEOUT_MS,
        );
        return r?.status === 0 && r.file.startsWith("/") ? r.file : undefined;
    }

    /** Remove a file `write` made; nobody waits for it (the next script runs after it). */
    remove(file: string): void {
        void this.script(`f=; rm -f -- ${shellQuote(file)}`, WRITE_TIMEOUT_MS);
    }

    /** End the shell: `exit` lets its trap remove the folder; it is killed only if it doesn't end on its own. */
    close(): void {
        if (!this.closed) {
            this.closed = true;
            this.proc.write("exit\n");
            const kill = setTimeout(() => this.proc.close(), 2000);
            kill.unref();
            this.proc.onClose(() => clearTimeout(kill));
        }
        this.waiter?.();
    }
}

/** The host shell of one transport: started on first use, closed when idle or with the transport. */
class XmlFiles {
    private shell?: Promise<HostShell | undefined>;
    private disabledUntil = 0;
    private idleTimer?: NodeJS.Timeout;

    constructor(private readonly transport: Transport) {}

    /** Write `text` to a new private file on the host; undefined when that isn't possible (run as a process instead). */
    async write(text: string): Promise<string | undefined> {
        const shell = await this.get();
        return shell?.write(text);
    }

    remove(file: string): void {
        void this.get().then((s) => s?.remove(file));
    }

    private async get(): Promise<HostShell | undefined> {
        clearTimeout(this.idleTimer);
        this.idleTimer = setTimeout(() => this.close(), IDLE_CLOSE_MS);
        this.idleTimer.unref();
        if (Date.now() < this.disabledUntil) return undefined;
        const current = await this.shell;
        if (current && !current.closed) return current;
        this.shell = HostShell.start(this.transport).catch(() => {
            this.disabledUntil = Date.now() + RETRY_MS;
            return undefined;
        });
        return this.shell;
    }

    close(): void {
        clearTimeout(this.idleTimer);
        const s = this.shell;
        this.shell = undefined;
        void s?.then((x) => x?.close());
    }
}

export function xmlFilesFor(transport: Transport): XmlFiles {
    let f = transport.attached.get("xml-files") as XmlFiles | undefined;
    if (!f) {
        f = new XmlFiles(transport);
        transport.attached.set("xml-files", f);
    }
    return f;
}
