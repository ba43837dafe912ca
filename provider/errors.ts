// Typed errors. Every failure of a command carries the command line (secrets
// stripped), its exit code and stderr, so a user sees exactly what ran.

export type ErrorKind =
    | "domain-not-found"
    | "snapshot-not-found"
    | "checkpoint-not-found"
    | "already-exists"
    | "domain-busy"
    | "unsupported"
    | "connection-failed"
    | "host-key"
    | "timeout"
    | "invalid"
    | "no-space"
    | "failed";

export interface CommandInfo {
    /** The argument vector as it ran, for display only. */
    command: string;
    exitCode?: number | null;
    stderr?: string;
}

export class LibvirtError extends Error {
    readonly kind: ErrorKind;
    readonly command?: string;
    readonly exitCode?: number | null;
    readonly stderr?: string;

    constructor(kind: ErrorKind, message: string, info?: CommandInfo) {
        super(
            info
                ? `${message}\n  command: ${info.command}` +
                      (info.exitCode !== undefined && info.exitCode !== null ? `\n  exit code: ${info.exitCode}` : "") +
                      (info.stderr && !message.includes(info.stderr.trim()) ? `\n  stderr: ${info.stderr.trim()}` : "")
                : message,
        );
        this.name = ERROR_NAMES[kind];
        this.kind = kind;
        this.command = info?.command;
        this.exitCode = info?.exitCode;
        this.stderr = info?.stderr;
    }
}

const ERROR_NAMES: Record<ErrorKind, string> = {
    "domain-not-found": "DomainNotFoundError",
    "snapshot-not-found": "SnapshotNotFoundError",
    "checkpoint-not-found": "CheckpointNotFoundError",
    "already-exists": "AlreadyExistsError",
    "domain-busy": "DomainBusyError",
    unsupported: "UnsupportedError",
    "connection-failed": "ConnectionError",
    "host-key": "HostKeyError",
    timeout: "TimeoutError",
    invalid: "InvalidInputError",
    "no-space": "OutOfSpaceError",
    failed: "VirshError",
};

export function isKind(e: unknown, kind: ErrorKind): e is LibvirtError {
    return e instanceof LibvirtError && e.kind === kind;
}

/** A command cut off by a lost connection or a timeout: libvirt may have done it, or may still be doing it. */
export function isCutOff(e: unknown): e is LibvirtError {
    return isKind(e, "connection-failed") || isKind(e, "timeout");
}

// libvirt's messages with LC_ALL=C (measured on libvirt 9.0). The
// order matters: "already exists" wins over "not found" in odd combinations,
// and a block job still running ("Operation not supported: ... another active
// block job", seen when qemu goes on committing after libvirtd restarted) is
// busy, to wait for, not unsupported. A lost connection wins over everything:
// when libvirtd goes away mid-call virsh also says what it was doing ("failed
// to get domain 'X'"), which must not read as a domain that is gone.
/** One case-insensitive pattern that matches where any of these does. */
function anyOf(...patterns: RegExp[]): RegExp {
    return new RegExp(patterns.map((p) => p.source).join("|"), "i");
}

const STDERR_KINDS: Array<[RegExp, ErrorKind]> = [
    [
        // "Disconnected from URI due to ...": libvirtd went away while virsh was connected (virsh's shell says it on its own).
        anyOf(
            /failed to connect to the hypervisor/,
            /unable to connect to server/,
            /End of file while reading data/,
            /Cannot recv data/,
            /cannot send data/,
            /Disconnected from \S+ due to/,
        ),
        "connection-failed",
    ],
    [/already exists/i, "already-exists"],
    [/Domain snapshot not found|no domain snapshot with matching name|domain has no current snapshot/i, "snapshot-not-found"],
    [/Domain checkpoint not found|no domain checkpoint with matching name/i, "checkpoint-not-found"],
    [/failed to get domain|Domain not found|no domain with matching (name|uuid|id)/i, "domain-not-found"],
    [
        anyOf(
            /cannot acquire state change lock/,
            /another (migration )?job is already running/,
            /job .* is already active/,
            /domain is already being (snapshotted|modified)/,
            /has active block job/,
            /another active block job/,
        ),
        "domain-busy",
    ],
    [/not supported|unsupported|Operation not supported|this function is not supported/i, "unsupported"],
];

/**
 * qemu refuses to merge an overlay while the domain's disks are inactive: after a snapshot saved the memory of a
 * paused domain, qemu leaves them so until the domain runs again (measured: qemu 7.2 'Block node is read-only',
 * qemu 10.0 "Inactive '…' can't be a backing child of active '…'").
 */
export const DISKS_INACTIVE = anyOf(/'block-commit': Block node is read-only/, /'block-commit': Inactive '[^']*' can't be a backing child/);

export function classifyStderr(stderr: string): ErrorKind {
    for (const [re, kind] of STDERR_KINDS) if (re.test(stderr)) return kind;
    return "failed";
}

/** A libvirt bug that a message identifies, and the release that fixes it. */
export interface KnownBug {
    what: string;
    fixedIn: string;
}

// Matched on the message, never on the version: a distribution's build may carry the fix
// (Debian's 11.3.0-3+deb13u3 reverts internal snapshots fine, measured).
const KNOWN_BUGS: Array<[RegExp, KnownBug]> = [
    [
        /is writable but does not support snapshots/i,
        {
            what:
                "upstream libvirt 11.2 and 11.3 can't revert to internal snapshots " +
                "(qemu is asked to load the snapshot from a device that holds none)",
            fixedIn: "11.4",
        },
    ],
];

/** The known libvirt bug this stderr shows, if any. */
export function knownBugOf(stderr: string): KnownBug | undefined {
    return KNOWN_BUGS.find(([re]) => re.test(stderr))?.[1];
}

/** Replace every secret that occurs in text. Also the secret's individual lines,
 * since a private key may leak one line at a time. */
export function redact(text: string, secrets: readonly string[]): string {
    let out = text;
    const parts = new Set<string>();
    for (const s of secrets) {
        if (!s) continue;
        parts.add(s);
        for (const line of s.split(/\r?\n/)) if (line.trim().length >= 8) parts.add(line.trim());
    }
    // Longest first so a whole key is replaced before its lines are.
    for (const p of [...parts].sort((a, b) => b.length - a.length)) out = out.split(p).join("***");
    return out;
}

/** libvirt refused because the domain is not running (it stopped between a look and the call). */
export function notRunning(e: unknown): boolean {
    return e instanceof LibvirtError && /domain is not running/.test(e.message);
}

/** A short, user-facing reason from an error of any kind. */
export function messageOf(e: unknown): string {
    return e instanceof Error ? e.message : String(e);
}
