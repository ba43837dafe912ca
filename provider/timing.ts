// Every timeout, poll and backoff curve of the provider, each with why it is what it is. The code that waits imports
// its bound from here, so a value is written once and two bounds that mean different things have different names.
//
// This module imports nothing: host/, the engines and resources/ all use it without any import circle.

// ---- commands: how long one may run (host/virsh.ts) ------------------------

/** A virsh command's bound when the resource sets no `timeoutSeconds` (the README's input tables say 300). */
export const DEFAULT_TIMEOUT_SECONDS = 300;
/** Read-only questions never wait on a job, so they get this long whatever the resource's timeout. */
export const READ_TIMEOUT_MS = 60_000;

// ---- SSH (host/transport.ts) -------------------------------------------------

/** SSH keepalive interval: a connection whose peer vanished without a word is dropped after interval × count. */
export const SSH_KEEPALIVE_MS = 15_000;
/** Unanswered keepalives before ssh2 drops the connection. */
export const SSH_KEEPALIVE_COUNT_MAX = 3;
/** How long a long-lived process waits for a channel before its caller runs commands as processes instead. */
export const SPAWN_CHANNEL_WAIT_MS = 5_000;
/** Refused channel opens retried before the command fails: with CHANNEL_OPEN_BACKOFF, about 9 s of waiting at most. */
export const CHANNEL_OPEN_ATTEMPTS = 40;

// ---- long-lived shells: virsh's sessions (host/virshSessions.ts) and the host's `sh` (host/hostShell.ts) ----

/** How long a new shell may take to start and answer its first line; past it, commands run as processes. */
export const SHELL_START_TIMEOUT_MS = 15_000;
/** An idle shell is closed after this: it holds an SSH channel and a process on the host. */
export const SHELL_IDLE_CLOSE_MS = 30_000;
/** After a shell failed to start, how long commands run as processes before a shell is tried again. */
export const SHELL_RETRY_MS = 60_000;
/** The host shell's `exit` lets its trap remove its private folder; it is killed if it hasn't ended after this. */
export const SHELL_EXIT_GRACE_MS = 2_000;
/** Writing or removing one create's XML file in the host shell: one round trip and builtins only, so this is generous. */
export const XML_FILE_TIMEOUT_MS = 30_000;
/**
 * How long a virsh write waits for a session to free before it runs as its own process: creates and most deletes
 * take well under this (a virsh process costs 20-30 ms of CPU on the host and a channel), a block commit longer.
 */
export const SESSION_WRITE_WAIT_MS = 1_500;

// ---- a guest's filesystems frozen (host/thawGuard.ts) -----------------------

/** How long a guest may stay frozen if the provider never thaws it: the guard on the host thaws it then. */
export const DEFAULT_FREEZE_LIMIT_SECONDS = 60;

// ---- waiting on libvirt's jobs (snapshot/delete.ts, resources/domainBackup.ts, resources/snapshotRevert.ts) ----

/** A short poll of a job or a chain that is about to change: quick enough to notice, rare enough to cost nothing. */
export const JOB_POLL_MS = 500;
/** A backup job's progress is read this often while it runs (a whole job takes minutes). */
export const BACKUP_POLL_MS = 1_000;
/** How long a snapshot delete waits for block jobs already running on its disks before it judges the snapshot. */
export const BLOCK_JOB_WAIT_MS = 300_000;
/** Then how long it looks again before refusing a snapshot outside the current chain (another delete's end). */
export const DELETE_SETTLE_MS = 10_000;
/** How long an aborted backup job may take to end (libvirt removes its scratch state) before its result is read. */
export const BACKUP_ABORT_WAIT_MS = 60_000;
/**
 * libvirt 11.3 answers "backup job data missing" for a moment while a backup job starts or ends (measured): asked
 * again this often, this many times.
 */
export const JOB_DATA_RETRY_MS = 200;
export const JOB_DATA_RETRIES = 10;
/**
 * libvirt names an external overlay after the second it is made in: a second snapshot in the same second collides,
 * so the retry waits into the next second (this much past the second's start).
 */
export const NEXT_SECOND_MARGIN_MS = 100;

/** Wait this long. */
export function sleep(ms: number): Promise<void> {
    return new Promise((r) => setTimeout(r, ms));
}

// ---- backoff curves: the wait before retry n (n = 0 for the first retry) ----

/** base·2ⁿ ms, at most cap. */
const doubling = (baseMs: number, capMs: number) => (n: number) => Math.min(baseMs * 2 ** n, capMs);

/**
 * Dialling SSH again after a failure worth retrying (refused, reset, closed during the handshake), dialErrorLimit
 * times at most: 200 ms doubling to 2 s, so a restarting sshd gets seconds, not the whole limit at once.
 */
export const DIAL_BACKOFF = doubling(200, 2_000);
/**
 * Opening an SSH channel sshd refused: near MaxSessions it refuses for a moment while closed sessions wind down,
 * so 10 ms doubling to 250 ms, for CHANNEL_OPEN_ATTEMPTS tries within the command's own timeout.
 */
export const CHANNEL_OPEN_BACKOFF = doubling(10, 250);
/**
 * A virsh command another job holds the domain for ("domain is busy"): 100 ms doubling to 2 s, each wait jittered
 * to 50-100 % of that, so callers that collided once don't collide again in step.
 */
export const BUSY_BACKOFF = (n: number) => doubling(100, 2_000)(n) * (0.5 + Math.random() / 2);
