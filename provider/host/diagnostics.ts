// What the provider sends to its hosts, published on node:diagnostics_channel as undici publishes its requests:
// every process it runs or starts (Transport.exec and spawn, locally and over SSH) and every line it writes into a
// long-lived shell (virsh's sessions, the host's `sh`), and the events tests and the benchmark count: SSH handshakes
// and channels, virsh sessions started and commands they answered. The provider keeps no counters of its own;
// whoever wants them subscribes (test/support/commandLog.ts does, for the tests):
//
//     import { subscribe } from "node:diagnostics_channel";
//     subscribe("pulumi-libvirt-snapshots:command", (m) => console.error(m));
//
// Nothing is built when nobody listens: each publish returns at once unless its channel has subscribers.
//
// Secrets. Credentials never go into a command: they reach ssh2's handshake only (transport.ts), and an argument
// vector carries none of them. But arguments and lines carry the user's text (names, descriptions, a URI, XML) that
// could hold one by accident, so everything published first goes through redact() with the connection's secrets
// (errors.ts), as error messages do: an argument vector argument by argument (so quoting can't hide a secret from
// it), a line or a standard input whole. What is published is what went out: an argument vector as the transport runs
// it (`env LC_ALL=C` and `sudo -n` in it; over SSH, shellQuote then joins it into one command line), a line as it was
// written, quoting and framing included; both byte for byte but for redaction.
import { channel } from "node:diagnostics_channel";
import { redact } from "../errors";

/** The channels' names, one place: `subscribe(CHANNELS.command, fn)` from node:diagnostics_channel. */
export const CHANNELS = {
    /** Every command sent to a host: a CommandMessage. */
    command: "pulumi-libvirt-snapshots:command",
    /** SSH connections: a handshake completed, a channel opened (SshMessage). */
    ssh: "pulumi-libvirt-snapshots:ssh",
    /** virsh sessions: one started, one answered a command (SessionMessage). */
    session: "pulumi-libvirt-snapshots:session",
} as const;

/** What the host shell's line is for: its private folder made, a command run, an XML file written or removed, `exit`. */
export type ShellOp = "start" | "run" | "write-file" | "remove-file" | "exit";

/** `host`, in every message: the transport's description, such as "local host" or "root@kvm1:22 (qemu:///system)". */
export type CommandMessage =
    /** A process run to its end (Transport.exec); `stdin`, the text on its standard input, if any. */
    | { kind: "exec"; host: string; argv: readonly string[]; stdin?: string }
    /** A long-lived process started (Transport.spawn): a virsh session or the host shell. */
    | { kind: "spawn"; host: string; argv: readonly string[] }
    /**
     * A command written into a virsh session. `session`: the session's argument vector; `argv`: the command's own
     * words as virsh's shell reads them (`session` and `argv` together: the process it stands for); `line`: what was
     * written, the command framed by the session's markers.
     */
    | { kind: "session-line"; host: string; session: readonly string[]; argv: readonly string[]; line: string }
    /** A script written into the host shell: `op` says what for; `argv`, the command it runs (run, remove-file); `line`, the text. */
    | { kind: "shell-line"; host: string; op: ShellOp; argv?: readonly string[]; line: string };

export type SshMessage =
    /** An SSH handshake completed: with the target, or with its jump host (`target` says which: user@host:port). */
    | { event: "handshake"; host: string; target: string }
    /** A channel of the connection opened, for a process or a long-lived one. */
    | { event: "channel"; host: string };

export type SessionMessage =
    /** A virsh session started: it answered its first line intact. */
    | { event: "start"; host: string; session: readonly string[] }
    /** A session answered a command: a query (`write: false`, a clean success) or a write (success or failure, never run again). */
    | { event: "answer"; host: string; session: readonly string[]; argv: readonly string[]; write: boolean };

/** What a message says of where it went: a transport, or what holds one. */
interface Source {
    readonly description: string;
    readonly secrets: readonly string[];
}

const commands = channel(CHANNELS.command);
const ssh = channel(CHANNELS.ssh);
const sessions = channel(CHANNELS.session);

const words = (argv: readonly string[], secrets: readonly string[]) => argv.map((a) => redact(a, secrets));

export function publishExec(from: Source, argv: readonly string[], stdin: string | undefined): void {
    if (!commands.hasSubscribers) return;
    const m: CommandMessage = { kind: "exec", host: from.description, argv: words(argv, from.secrets) };
    if (stdin !== undefined) m.stdin = redact(stdin, from.secrets);
    commands.publish(m);
}

export function publishSpawn(from: Source, argv: readonly string[]): void {
    if (!commands.hasSubscribers) return;
    commands.publish({ kind: "spawn", host: from.description, argv: words(argv, from.secrets) } satisfies CommandMessage);
}

export function publishSessionLine(from: Source, session: readonly string[], argv: readonly string[], line: string): void {
    if (!commands.hasSubscribers) return;
    const s = from.secrets;
    commands.publish({
        kind: "session-line",
        host: from.description,
        session: words(session, s),
        argv: words(argv, s),
        line: redact(line, s),
    } satisfies CommandMessage);
}

export function publishShellLine(from: Source, op: ShellOp, argv: readonly string[] | undefined, line: string): void {
    if (!commands.hasSubscribers) return;
    const m: CommandMessage = { kind: "shell-line", host: from.description, op, line: redact(line, from.secrets) };
    if (argv) m.argv = words(argv, from.secrets);
    commands.publish(m);
}

export function publishHandshake(from: Source, target: string): void {
    if (ssh.hasSubscribers) ssh.publish({ event: "handshake", host: from.description, target } satisfies SshMessage);
}

export function publishChannel(from: Source): void {
    if (ssh.hasSubscribers) ssh.publish({ event: "channel", host: from.description } satisfies SshMessage);
}

export function publishSessionStart(from: Source, session: readonly string[]): void {
    if (!sessions.hasSubscribers) return;
    sessions.publish({ event: "start", host: from.description, session: words(session, from.secrets) } satisfies SessionMessage);
}

export function publishSessionAnswer(from: Source, session: readonly string[], argv: readonly string[], write: boolean): void {
    if (!sessions.hasSubscribers) return;
    const s = from.secrets;
    const m: SessionMessage = { event: "answer", host: from.description, session: words(session, s), argv: words(argv, s), write };
    sessions.publish(m);
}
