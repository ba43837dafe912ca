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

/** The defaults a schema fills in for absent keys. */
export function defaultsOf(schema: z.ZodObject): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const [k, field] of Object.entries(schema.shape)) {
        const r = (field as z.ZodType).safeParse(undefined);
        if (r.success && r.data !== undefined) out[k] = r.data;
    }
    return out;
}

export interface InputComparison {
    /** The new inputs: validated, or (unknowns at preview) as given over the schema's defaults. */
    v: Record<string, unknown>;
    replaces: string[];
    updates: string[];
    /** Only credentials differ: nothing changes on the host, an update records them. */
    credentialsChanged: boolean;
}

/**
 * What diff compares for a resource on one domain: the declared inputs that force
 * a replacement, those that update in place, and the connection (another host,
 * port or URI is another place; other credentials are not). At preview an unknown
 * value counts as a change and an absent one as its default.
 */
export function compareInputs(
    schema: z.ZodObject,
    olds: { declared?: Record<string, unknown>; connection?: Connection; domainName?: string; domainUuid?: string },
    news: Record<string, unknown>,
    keys: { replace: readonly string[]; update: readonly string[] },
): InputComparison {
    const r = parseInputs(schema, news, { allowUnknowns: true });
    const v = (r.ok ? r.value : { ...defaultsOf(schema), ...news }) as Record<string, unknown>;
    const old = olds.declared ?? {};
    const value = (k: string) => (containsUnknown(news[k]) ? UNKNOWN : v[k]);
    const replaces = keys.replace.filter((k) => {
        const nv = value(k);
        if (k === "domain" && typeof nv === "string" && nv !== UNKNOWN && sameDomain(olds, nv)) return false;
        return !same(old[k], nv);
    });
    const newConn = (containsUnknown(news.connection) ? undefined : v.connection) as Connection | undefined;
    if (containsUnknown(news.connection) || targetOf(resolveConnection(olds.connection)) !== targetOf(resolveConnection(newConn))) replaces.push("connection");
    const updates = keys.update.filter((k) => !same(old[k], value(k)));
    return { v, replaces, updates, credentialsChanged: !same(olds.connection, newConn) };
}

/** Do these valid inputs make a new one (another place or a replace key changed) against the previous inputs? Check asks the host only then. */
export function replacesPrevious(schema: z.ZodObject, olds: Record<string, unknown>, v: Record<string, unknown> & { connection?: Connection }, replaceKeys: readonly string[]): boolean {
    const o = parseInputs(schema, olds, { allowUnknowns: false });
    if (!o.ok) return true;
    const prev = o.value as Record<string, unknown> & { connection?: Connection };
    const target = (c: Connection | undefined) => { try { return targetOf(resolveConnection(c)); } catch { return targetOf(c); } };
    if (target(prev.connection) !== target(v.connection)) return true;
    return replaceKeys.some((k) => !same(prev[k], v[k]));
}

/** The declared inputs as a resource records them for diff: the connection is kept apart, as a secret. */
export function withoutConnection<T extends { connection?: unknown }>(v: T): Omit<T, "connection"> {
    const { connection: _c, ...rest } = v;
    return rest;
}
