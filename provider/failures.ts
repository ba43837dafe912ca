// Failures built in one place, as execa builds its results: a host command's failure always
// carries what ran (the command line with secrets stripped, its exit code and stderr: the runner,
// host/virsh.ts, redacts them before they get here), and an init failure always carries the id,
// the properties and the reasons that impl.ts's contract names. guard.ts checks the init failure's
// shape with isInitFailure, never by guessing.
import { LibvirtError, messageOf, type ErrorKind } from "./errors";

/** What ran, as host/virsh.ts's HostResult says it (written out here, so host code may build its failures here too). */
interface Ran {
    command: string;
    code: number | null;
    stderr: string;
}

/** A host command other than virsh (rm, stat, qemu-img) that failed: the message, and what ran. */
export function hostFailure(kind: ErrorKind, message: string, r: Ran): LibvirtError {
    return new LibvirtError(kind, message, { command: r.command, exitCode: r.code, stderr: r.stderr });
}

/**
 * An error that stands in for a virsh failure `e` and says more: it keeps the command `e` ran and its stderr, and
 * its exit code unless `exitCode: false` (where the message itself says what libvirt answered).
 */
export function failureInsteadOf(kind: ErrorKind, message: string, e: LibvirtError, opts: { exitCode: boolean }): LibvirtError {
    if (!opts.exitCode) return new LibvirtError(kind, message, { command: e.command ?? "", stderr: e.stderr });
    return new LibvirtError(kind, message, e.command ? { command: e.command, exitCode: e.exitCode, stderr: e.stderr } : undefined);
}

/**
 * An init failure (impl.ts says what it means): create or update made something on the host, or may have, and Pulumi
 * keeps the resource under `id` with `properties`, telling the user `reasons`.
 */
export interface InitFailure extends Error {
    id: string;
    properties: Record<string, unknown>;
    reasons: string[];
}

/** Make `error` an init failure; its reasons are its message unless given. */
export function initFailure<E>(
    error: E,
    o: { id: string; properties: object; reasons?: string[] },
): (E extends Error ? E : Error) & InitFailure {
    const e = error instanceof Error ? error : new Error(String(error));
    const reasons = o.reasons ?? [messageOf(error)];
    return Object.assign(e, { id: o.id, properties: o.properties as Record<string, unknown>, reasons }) as (E extends Error ? E : Error) &
        InitFailure;
}

export function isInitFailure(e: unknown): e is InitFailure {
    if (!(e instanceof Error)) return false;
    const f = e as Partial<InitFailure>;
    return typeof f.id === "string" && f.id !== "" && typeof f.properties === "object" && f.properties !== null && Array.isArray(f.reasons);
}
