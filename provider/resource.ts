// What every resource's CRUD shares: parsing inputs for create/update, the
// runner and lock key for a resource, and how diff compares values.
import type { z } from "zod";
import { UNKNOWN, targetOf, type Connection } from "./connection";
import { InputError, parseInputs, resolveConnection } from "./inputs";
import { Virsh } from "./virsh";

/** Validated inputs, or the failures as one clear error (create and update; check reports them instead). */
export function parseOrThrow<S extends z.ZodType>(schema: S, news: Record<string, unknown>): z.infer<S> {
    const r = parseInputs(schema, news, { allowUnknowns: false });
    if (!r.ok) throw new InputError(r.failures);
    return r.value;
}

/** The runner for a resource: its own connection or the stack's, its own timeout (from inputs or recorded outputs). */
export function virshFor(v: { connection?: Connection; timeoutSeconds?: number; declared?: { timeoutSeconds?: number } }): Virsh {
    return new Virsh(resolveConnection(v.connection), v.timeoutSeconds ?? v.declared?.timeoutSeconds);
}

/** Operations on one domain of one host queue behind each other (by name or UUID as given). */
export function domainLockKey(connection: Connection, domain: string): string {
    return `${targetOf(connection)}|${domain.toLowerCase()}`;
}

export function lockKey(v: { connection?: Connection; domain: string }): string {
    return domainLockKey(resolveConnection(v.connection), v.domain);
}

export function same(a: unknown, b: unknown): boolean {
    return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}

export function containsUnknown(x: unknown): boolean {
    if (x === UNKNOWN) return true;
    if (Array.isArray(x)) return x.some(containsUnknown);
    if (x && typeof x === "object") return Object.values(x).some(containsUnknown);
    return false;
}

/** A domain named by name or by UUID is the same domain. */
export function sameDomain(olds: { declared?: { domain?: string }; domainName?: string; domainUuid?: string }, ref: string): boolean {
    return ref === olds.declared?.domain || ref === olds.domainName || ref.toLowerCase() === olds.domainUuid?.toLowerCase();
}
