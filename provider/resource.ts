// What every resource's CRUD shares: the check skeleton, parsing inputs for
// create/update, the runner and lock key for a resource, and how diff compares values.
import type * as pulumi from "@pulumi/pulumi";
import type { z } from "zod";
import { UNKNOWN, targetOf, type Connection } from "./connection";
import { isKind, messageOf } from "./errors";
import { FROM_RESOURCES, InputError, parseInputs, type CheckFailure } from "./inputs";
import { resolveConnection } from "./stackConfig";
import { probeDomain, type DomainProbe } from "./host/probe";
import { Virsh } from "./host/virsh";

/**
 * When check asks the host. Bad input fails without it. The host is asked
 * only when every input the plan reads is known (`planKeys`, and the
 * connection), and only when the inputs would make something on the host:
 * a first create, or another place, or a changed (or still unknown) `createKeys`
 * input. So an update that changes nothing on the host never fails at preview
 * because of what the host would say about a new one.
 */
export interface CheckRule<V> {
    planKeys: readonly string[];
    createKeys: readonly string[];
    /** What the host says about these inputs, as failures that name the property. */
    ask(v: V): Promise<CheckFailure[]>;
}

export async function checkInputs<S extends z.ZodObject>(
    schema: S,
    olds: Record<string, unknown>,
    news: Record<string, unknown>,
    rule: CheckRule<z.infer<S>>,
): Promise<pulumi.dynamic.CheckResult> {
    const r = parseInputs(schema, news, { allowUnknowns: true });
    if (!r.ok) return { inputs: news, failures: r.failures };
    if (["connection", ...rule.planKeys].some((k) => containsUnknown(news[k]))) return { inputs: news };
    const creates =
        Object.keys(olds ?? {}).length === 0 ||
        rule.createKeys.some((k) => containsUnknown(news[k])) ||
        replacesPrevious(schema, olds, r.value as Record<string, unknown>, rule.createKeys);
    if (!creates) return { inputs: news };
    try {
        // Something another resource of this run may be about to make is no failure yet: create checks it again.
        const pending = new Set(Array.isArray(news[FROM_RESOURCES]) ? (news[FROM_RESOURCES] as unknown[]) : []);
        const failures = (await rule.ask(r.value)).filter((f) => !(f.absent && pending.has(f.property)));
        return { inputs: news, failures: failures.map(({ property, reason }) => ({ property, reason })) };
    } catch (e) {
        // Bad stack config surfaces when the connection is resolved.
        if (e instanceof InputError) return { inputs: news, failures: e.failures };
        throw e;
    }
}

/**
 * The usual question for check: probe the domain, then ask `more` about it.
 * A missing domain, or a host that can't be read, is a failure, never a crash.
 */
export async function askAboutDomain(
    v: { connection?: Connection; domain: string; timeoutSeconds?: number },
    subject: string,
    more: (virsh: Virsh, probe: DomainProbe) => Promise<CheckFailure[]> | CheckFailure[],
): Promise<CheckFailure[]> {
    const virsh = virshFor(v);
    const cannot = (e: unknown) => [{ property: "connection", reason: `cannot check ${subject} against ${virsh.where}: ${messageOf(e)}` }];
    let probe: DomainProbe;
    try {
        probe = await probeDomain(virsh, v.domain);
    } catch (e) {
        if (isKind(e, "domain-not-found"))
            return [{ property: "domain", reason: `no domain '${v.domain}' on ${virsh.where}`, absent: true }];
        return cannot(e);
    }
    try {
        return await more(virsh, probe);
    } catch (e) {
        return cannot(e);
    }
}

/** Validated inputs, or the failures as one clear error (create and update; check reports them instead). */
export function parseOrThrow<S extends z.ZodType>(schema: S, news: Record<string, unknown>): z.infer<S> {
    const r = parseInputs(schema, news, { allowUnknowns: false });
    if (!r.ok) throw new InputError(r.failures);
    return r.value;
}

/**
 * The one way to build a runner: a resource's own connection or the stack's. Its timeoutSeconds (from inputs or recorded
 * outputs) bounds each command; with `wholeJob` it bounds a job the resource waits for itself (DomainBackup), and each
 * command gets the runner's default.
 */
export function virshFor(
    v: { connection?: Connection; timeoutSeconds?: number; declared?: { timeoutSeconds?: number } },
    opts: { wholeJob?: boolean } = {},
): Virsh {
    return new Virsh(resolveConnection(v.connection), opts.wholeJob ? undefined : (v.timeoutSeconds ?? v.declared?.timeoutSeconds));
}

/** Operations on one domain of one host queue behind each other (by name or UUID as given). */
export function domainLockKey(connection: Connection, domain: string): string {
    return `${targetOf(connection)}|${domain.toLowerCase()}`;
}

export function lockKey(v: { connection?: Connection; domain: string }): string {
    return domainLockKey(resolveConnection(v.connection), v.domain);
}

/**
 * Equal as values. Object keys are compared in sorted order: the state comes back from the engine with its
 * keys sorted (a protobuf Struct), while parsed inputs follow the schema's order (disks: name, snapshot, file).
 */
export function same(a: unknown, b: unknown): boolean {
    return JSON.stringify(sorted(a ?? null)) === JSON.stringify(sorted(b ?? null));
}

function sorted(x: unknown): unknown {
    if (Array.isArray(x)) return x.map(sorted);
    if (x && typeof x === "object")
        return Object.fromEntries(
            Object.keys(x)
                .sort()
                .map((k) => [k, sorted((x as Record<string, unknown>)[k])]),
        );
    return x;
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

/**
 * deleteBeforeReplace: a replacement that lands on the same name of the same domain on the same
 * host must wait for the old one to go, since libvirt holds one moment per name and domain.
 */
export function replacesInPlace(
    replaces: readonly string[],
    olds: Parameters<typeof sameDomain>[0],
    domain: unknown,
    sameName: boolean,
): boolean {
    return replaces.length > 0 && !replaces.includes("connection") && typeof domain === "string" && sameDomain(olds, domain) && sameName;
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
    if (containsUnknown(news.connection) || targetOf(resolveConnection(olds.connection)) !== targetOf(resolveConnection(newConn)))
        replaces.push("connection");
    const updates = keys.update.filter((k) => !same(old[k], value(k)));
    return { v, replaces, updates, credentialsChanged: !same(olds.connection, newConn) };
}

/** Do these valid inputs make a new one (another place or a replace key changed) against the previous inputs? */
function replacesPrevious(
    schema: z.ZodObject,
    olds: Record<string, unknown>,
    v: Record<string, unknown> & { connection?: Connection },
    replaceKeys: readonly string[],
): boolean {
    const o = parseInputs(schema, olds, { allowUnknowns: false });
    if (!o.ok) return true;
    const prev = o.value as Record<string, unknown> & { connection?: Connection };
    const target = (c: Connection | undefined) => {
        try {
            return targetOf(resolveConnection(c));
        } catch {
            return targetOf(c);
        }
    };
    if (target(prev.connection) !== target(v.connection)) return true;
    return replaceKeys.some((k) => !same(prev[k], v[k]));
}

/** The declared inputs as a resource records them for diff: the connection is kept apart, as a secret. */
export function withoutConnection<T extends { connection?: unknown }>(v: T): Omit<T, "connection"> {
    const { connection: _c, ...rest } = v;
    return rest;
}
