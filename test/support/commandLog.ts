// What the provider sent to its hosts, as the tests see it: a subscriber to its diagnostics channels
// (provider/host/diagnostics.ts). It counts what the product used to count for the tests itself (virshStats,
// sshStats), and with `keep` it collects every command and line too.
import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { CHANNELS, type CommandMessage, type SessionMessage, type SshMessage } from "../../provider/host/diagnostics";

export interface CommandCounts {
    /** Queries a virsh session answered (a clean success; a failure runs again as a process). */
    sessionCommands: number;
    /** Writes a virsh session answered, success or failure (never run again). */
    sessionWrites: number;
    /** virsh sessions started: each answered its first line intact. */
    sessionsStarted: number;
    /** SSH channels opened, for processes and long-lived ones alike. */
    channels: number;
    /** SSH handshakes completed, with targets and jump hosts alike. */
    handshakes: number;
}

export interface CommandLog {
    /** Live counts since the log was made. */
    readonly counts: CommandCounts;
    /** Every command and line sent since the log was made, in order (empty unless made with `keep`). */
    readonly commands: CommandMessage[];
    /** Unsubscribe: the counts and commands stay as they are. */
    stop(): void;
}

/** Start listening. A suite that only counts makes one when it loads, as the product's counters once were: deltas work. */
export function commandLog(opts: { keep?: boolean } = {}): CommandLog {
    const counts: CommandCounts = { sessionCommands: 0, sessionWrites: 0, sessionsStarted: 0, channels: 0, handshakes: 0 };
    const commands: CommandMessage[] = [];
    const onCommand = (m: unknown) => commands.push(m as CommandMessage);
    const onSsh = (m: unknown) => {
        const e = (m as SshMessage).event;
        if (e === "channel") counts.channels++;
        else if (e === "handshake") counts.handshakes++;
    };
    const onSession = (m: unknown) => {
        const s = m as SessionMessage;
        if (s.event === "start") counts.sessionsStarted++;
        else if (s.event === "answer" && s.write) counts.sessionWrites++;
        else if (s.event === "answer") counts.sessionCommands++;
    };
    // Only a log that keeps commands listens to them: with nobody listening, the provider builds no message.
    if (opts.keep) subscribe(CHANNELS.command, onCommand);
    subscribe(CHANNELS.ssh, onSsh);
    subscribe(CHANNELS.session, onSession);
    return {
        counts,
        commands,
        stop: () => {
            if (opts.keep) unsubscribe(CHANNELS.command, onCommand);
            unsubscribe(CHANNELS.ssh, onSsh);
            unsubscribe(CHANNELS.session, onSession);
        },
    };
}
