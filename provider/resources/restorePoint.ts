// RestorePoint: one declared restore point across several domains, on one host
// or several. "simultaneous" pauses every domain, snapshots each, and resumes
// them all, so the VMs are captured at one instant; "independent" snapshots
// each on its own, in parallel. Either way it is all or nothing: when one
// domain fails, the snapshots already taken are rolled back and no VM is left
// paused. Each snapshot is a plain libvirt snapshot, planned and deleted by the
// same code as DomainSnapshot. With quiesce, every running guest's filesystems
// are frozen through its agent first (a paused guest's agent can't freeze), then
// the domains are paused, snapshotted and resumed, then thawed.
import type * as pulumi from "@pulumi/pulumi";
import { z } from "zod";
import { ConnectionSchema, UNKNOWN, targetOf, type Connection } from "../connection";
import { LibvirtError, isKind, messageOf } from "../errors";
import { initFailure } from "../failures";
import {
    InputError,
    domainRef,
    description,
    makerMark,
    momentName,
    parseInputs,
    spaceMarginMiB,
    trueOrFalse,
    type CheckFailure,
} from "../inputs";
import { withDomainLock } from "../locks";
import { common, field, spec } from "../spec";
import { checkInputs, domainLockKey, parseOrThrow, same, virshFor } from "../resource";
import { resolveConnection } from "../stackConfig";
import { probeDomain, type DomainProbe } from "../host/probe";
import { withFrozenGuest } from "../host/thawGuard";
import { commandLine } from "../host/transport";
import type { Virsh } from "../host/virsh";
import type { MakerMark } from "../host/xml";
import { redefineDescription } from "../moments/description";
import { madeBy } from "../moments/maker";
import { deleteSnapshot } from "../snapshot/delete";
import { kindOf, memoryOf, observeSnapshot } from "../snapshot/observe";
import { chainLimitFailures, planSnapshot, type SnapshotPlan, type SnapshotRequest } from "../snapshot/plan";
import { spaceFailures } from "../snapshot/space";
import { makeOverlaysPrivate, takeSnapshot } from "../snapshot/take";
import { locateSnapshot } from "./lostRecords";
import { restorePointSays } from "./messages";

// ---- inputs ----------------------------------------------------------------

const domainList = z
    .array(domainRef, { error: "must be a list of domain names or UUIDs" })
    .min(1, { error: "must name at least one domain" });

const TargetSchema = z.strictObject({
    connection: ConnectionSchema.optional(),
    domains: domainList,
});

/** Each input once: its schema (and default), what a change of it does, and its doc (RestorePointArgs says the same). */
export const RestorePointSpec = spec({
    connection: field("place", ConnectionSchema.optional(), "The one connection, with `domains`. Default: the stack config."),
    domains: field("members", domainList.optional(), "The domains on the one connection. Give either this or `targets`.", {
        checked: true,
    }),
    targets: field(
        "members",
        z
            .array(TargetSchema, { error: "must be a list of { connection, domains }" })
            .min(1, { error: "must name at least one target" })
            .optional(),
        "One entry per host, to span hosts. Give either this or `domains`.",
        { checked: true },
    ),
    snapshotName: field("replace", momentName("snapshot"), "The snapshot's name on every domain. Default: the resource's logical name."),
    description: field("update", description.optional(), "As for DomainSnapshot.", { checked: true }),
    kind: field(
        "replace",
        z.enum(["internal", "external"], { error: "must be 'internal' or 'external'" }).default("internal"),
        "As for DomainSnapshot.",
    ),
    memory: field(
        "replace",
        z.enum(["none", "internal", "external"], { error: "must be 'none' (disk only), 'internal' or 'external'" }).optional(),
        "`none` or `internal`; external memory needs a file per domain (use DomainSnapshot).",
    ),
    consistency: field(
        "replace",
        z
            .enum(["simultaneous", "independent"], { error: "must be 'simultaneous' (pause all, snapshot, resume) or 'independent'" })
            .default("simultaneous"),
        "`simultaneous` (the default) pauses every running domain, snapshots each and resumes them all; `independent` doesn't pause.",
        { checked: false },
    ),
    deletion: field(
        "update",
        z
            .enum(["delete", "metadata"], { error: "must be 'delete' (merge the data into the child) or 'metadata' (keep the data)" })
            .default("delete"),
        "As for DomainSnapshot.",
        { checked: true },
    ),
    // Optional, not defaulted: state recorded before it existed keeps diffing as unchanged.
    quiesce: field(
        "update",
        trueOrFalse.optional(),
        "Freeze each running guest's filesystems through its guest agent for the snapshots " +
            "(disk-only snapshots: memory 'none'), with a guard on each host that thaws them if the " +
            "provider is cut off. With `simultaneous` every guest is frozen, then every domain paused, " +
            "snapshotted and resumed, then the guests thawed. Default false.",
        { checked: true },
    ),
    spaceMarginMiB: field(
        "update",
        spaceMarginMiB.optional(),
        "The room check asks for on the filesystem of each overlay, in MiB (and the guest's RAM for memory: 'internal'). Default 64.",
        { checked: true },
    ),
    timeoutSeconds: common.timeoutSeconds,
});

export const RestorePointSchema = RestorePointSpec.object.superRefine((v, ctx) => {
    if (!v.domains === !v.targets) {
        ctx.addIssue({
            code: "custom",
            path: v.domains ? ["targets"] : ["domains"],
            message: "give either domains (on the one connection) or targets (one entry per host), not both or neither",
        });
    }
    if (v.targets && v.connection)
        ctx.addIssue({
            code: "custom",
            path: ["connection"],
            message: "is not used with targets: give each target its own connection",
        });
    if (v.memory === "external")
        ctx.addIssue({
            code: "custom",
            path: ["memory"],
            message: "'external' needs a memory file per domain; use DomainSnapshot for that, or memory: 'internal' / 'none'",
        });
    const seen = new Set<string>();
    for (const [t, target] of entriesOf(v).entries()) {
        target.domains.forEach((d, i) => {
            const key = `${targetOf(target.connection)}|${d}`;
            if (seen.has(key))
                ctx.addIssue({
                    code: "custom",
                    path: v.targets ? ["targets", t, "domains", i] : ["domains", i],
                    message: `names domain '${d}' twice`,
                });
            seen.add(key);
        });
    }
});

type Inputs = z.infer<typeof RestorePointSchema>;

/** One entry per target, whichever way the user wrote it. */
function entriesOf(
    v: Pick<Inputs, "connection" | "domains" | "targets">,
): Array<{ connection?: Connection; domains: string[]; path: (i: number) => string }> {
    if (v.targets)
        return v.targets.map((t, ti) => ({
            connection: t.connection,
            domains: t.domains,
            path: (i: number) => `targets[${ti}].domains[${i}]`,
        }));
    return [{ connection: v.connection, domains: v.domains ?? [], path: (i: number) => `domains[${i}]` }];
}

/** One domain's snapshot in a restore point. */
export interface MemberSnapshot {
    /** Where the domain lives, e.g. root@kvm1:22 (qemu:///system). */
    host: string;
    /** The domain as declared. */
    domain: string;
    domainName: string;
    domainUuid: string;
    snapshotName: string;
    /** ISO 8601, from libvirt. */
    creationTime: string;
    /** The domain's state in the snapshot: `running`, `shutoff`, `paused`... */
    state: string;
    kind: "internal" | "external";
    memory: "none" | "internal" | "external";
    /**
     * libvirt's snapshot XML, kept so a record libvirt loses (the domain defined again) is given back by the next pulumi up.
     * Absent in 0.1.0 state.
     */
    xml?: string;
    /** True when refresh found libvirt's record lost but the data still in the images. */
    recordLost?: boolean;
}

/** What a RestorePoint exposes. */
export interface RestorePointOutputs {
    /** The one connection, when the domains are on one host (stored as a secret). */
    connection?: Connection;
    /** One entry per host, when the restore point spans hosts (stored as a secret). */
    targets?: Array<{ connection?: Connection; domains: string[] }>;
    domains?: string[];
    snapshotName: string;
    description?: string;
    consistency: "simultaneous" | "independent";
    deletion: "delete" | "metadata";
    /** One entry per domain, in the declared order. */
    snapshots: MemberSnapshot[];
    /** Wall time from the first pause to the last resume (simultaneous), else 0. */
    pausedMilliseconds: number;
}

/** What the resource records: its outputs, and the inputs as declared (defaults applied) for diff. */
interface Recorded extends RestorePointOutputs {
    declared: Omit<Inputs, "connection" | "targets">;
}

// ---- members: one domain on one host ------------------------------------------

interface Member {
    connection: Connection;
    virsh: Virsh;
    domain: string;
    property: string;
}

function membersOf(v: Pick<Inputs, "connection" | "domains" | "targets" | "timeoutSeconds">): Member[] {
    const out: Member[] = [];
    for (const e of entriesOf(v)) {
        const virsh = virshFor({ connection: e.connection, timeoutSeconds: v.timeoutSeconds });
        e.domains.forEach((domain, i) => out.push({ connection: virsh.connection, virsh, domain, property: e.path(i) }));
    }
    return out;
}

function memberKey(m: { connection: Connection; domain: string }): string {
    return domainLockKey(m.connection, m.domain);
}

/**
 * Every member's snapshot: atomic, no live or halt. libvirt's own --quiesce is never passed (the guests are
 * frozen by the provider before they are paused); `quiesce` asks the plan for its checks only.
 */
function snapshotRequest(v: Inputs, quiesce = false): SnapshotRequest {
    return {
        snapshotName: v.snapshotName,
        description: v.description,
        kind: v.kind,
        memory: v.memory,
        quiesce,
        atomic: true,
        live: false,
        halt: false,
        deletion: v.deletion,
    };
}

/** `space`: check's estimate of the free space too (preview only: create goes ahead, and cleans up if it runs out part-way). */
async function planMember(
    v: Inputs,
    m: Member,
    opts: { space?: boolean } = {},
): Promise<{ probe?: DomainProbe; plan?: SnapshotPlan; failures: CheckFailure[] }> {
    let probe: DomainProbe;
    try {
        probe = await probeDomain(m.virsh, m.domain);
    } catch (e) {
        const reason = isKind(e, "domain-not-found")
            ? `no domain '${m.domain}' on ${m.virsh.where}`
            : `cannot check domain '${m.domain}' on ${m.virsh.where}: ${messageOf(e)}`;
        return { failures: [{ property: m.property, reason }] };
    }
    const planned = planSnapshot(snapshotRequest(v), probe);
    const { plan } = planned;
    let failures = planned.failures;
    if (plan) {
        try {
            failures = await chainLimitFailures(m.virsh, probe, plan);
        } catch (e) {
            failures = [{ property: "kind", reason: `cannot read the disks' backing chains: ${messageOf(e)}` }];
        }
        if (opts.space && !failures.length) {
            try {
                failures = await spaceFailures(m.virsh, probe, plan, v.spaceMarginMiB);
            } catch (e) {
                failures = [{ property: "spaceMarginMiB", reason: `cannot measure the free space: ${messageOf(e)}` }];
            }
        }
        // A shut-off member writes nothing: there is nothing to freeze. A running one needs a connected agent and a disk-only snapshot.
        if (v.quiesce && probe.state !== "shut off")
            failures = [...failures, ...planSnapshot(snapshotRequest(v, true), probe).failures.filter((f) => f.property === "quiesce")];
    }
    return {
        probe,
        plan: failures.length ? undefined : plan,
        failures: failures.map((f) => ({ property: m.property, reason: `domain '${probe.info.name}': ${f.property}: ${f.reason}` })),
    };
}

/** Hold every member's domain lock, in one global order so two restore points can't deadlock. */
async function withLocks<T>(members: Member[], fn: () => Promise<T>): Promise<T> {
    const keys = [...new Set(members.map(memberKey))].sort();
    const take = (i: number): Promise<T> => (i === keys.length ? fn() : withDomainLock(keys[i]!, () => take(i + 1)));
    return take(0);
}

interface Taken {
    m: Member;
    probe: DomainProbe;
    plan: SnapshotPlan;
}

/** Snapshot every member, all or nothing. Returns the member snapshots and the paused time. */
async function snapshotAll(
    v: Inputs,
    members: Member[],
    mark: MakerMark | undefined,
): Promise<{ snapshots: MemberSnapshot[]; pausedMilliseconds: number; notPrivate: string[] }> {
    const planned = await Promise.all(members.map((m) => planMember(v, m)));
    const failures = planned.flatMap((p) => p.failures);
    if (failures.length) throw new InputError(failures);
    const taken: Taken[] = [];
    /** Members whose snapshot name was taken already: perhaps by this restore point, in a run that was cut off. */
    const existing: Array<Taken & { error: unknown }> = [];
    const paused: Member[] = [];
    let pausedAt = 0,
        resumedAt = 0;
    let failure: { m: Member; error: unknown } | undefined;
    const notReleased: string[] = [];
    const capture = async () => {
        try {
            await pauseAndSnapshot();
        } finally {
            await resumeAll();
        }
    };
    const pauseAndSnapshot = async () => {
        if (v.consistency === "simultaneous") {
            const running = members.filter((_, i) => planned[i]!.probe!.state === "running");
            pausedAt = Date.now();
            await Promise.all(
                running.map(async (m) => {
                    try {
                        await m.virsh.run(["suspend", "--domain", m.domain]);
                        paused.push(m);
                    } catch (e) {
                        failure ??= { m, error: e };
                    }
                }),
            );
        }
        if (!failure) {
            // Different domains snapshot in parallel; libvirt serializes per domain itself.
            await Promise.all(
                members.map(async (m, i) => {
                    const probe = planned[i]!.probe!;
                    try {
                        await takeSnapshot(m.virsh, planned[i]!.plan!, {
                            probe,
                            marginMiB: v.spaceMarginMiB,
                            ...(paused.includes(m) ? { pausedBy: `restore point '${v.snapshotName}'` } : {}),
                            mark,
                        });
                        taken.push({ m, probe, plan: planned[i]!.plan! });
                    } catch (e) {
                        if (mark && isKind(e, "already-exists")) existing.push({ m, probe, plan: planned[i]!.plan!, error: e });
                        else failure ??= { m, error: e };
                    }
                }),
            );
        }
    };
    // Whatever happened, no VM stays paused by us.
    const resumeAll = async () => {
        await Promise.all(
            paused.map(async (m) => {
                try {
                    await m.virsh.run(["resume", "--domain", m.domain]);
                } catch (e) {
                    notReleased.push(
                        `domain '${m.domain}' on ${m.virsh.where} could not be resumed and is still paused ` +
                            `(${messageOf(e).split("\n")[0]}): run virsh resume ${m.domain}`,
                    );
                }
            }),
        );
        resumedAt = Date.now();
    };
    const frozen = v.quiesce ? members.filter((_, i) => planned[i]!.probe!.state === "running") : [];
    // Each guest is frozen in turn, outermost first, and thawed in reverse after the capture, also when it fails.
    const freezeThen = frozen.reduceRight<() => Promise<void>>(
        (inner, m) => async () => {
            try {
                await withFrozenGuest(m.virsh, m.domain, inner);
            } catch (e) {
                // A thaw that fails after another failure must still be told: the guest stays frozen until the guard's deadline.
                if (failure) notReleased.push(`domain '${m.domain}' on ${m.virsh.where}: ${messageOf(e)}`);
                else failure = { m, error: e };
            }
        },
        capture,
    );
    await freezeThen();
    if (existing.length && !failure) {
        const own = await ownMembers(existing, mark, v.snapshotName);
        // Every member made by this restore point in one run cut off before the engine recorded it: that run's restore
        // point, taken over. Only some: they were not taken together, so they can't be one restore point.
        if (own.length === members.length) taken.push(...existing);
        else failure = { m: existing[0]!.m, error: own.length ? partlyOwn(own, v.snapshotName) : existing[0]!.error };
    } else if (existing.length) failure ??= { m: existing[0]!.m, error: existing[0]!.error };
    if (failure) {
        const rolledBack: string[] = [],
            leftBehind: string[] = [];
        for (const t of taken) {
            try {
                await deleteSnapshot(t.m.virsh, {
                    domain: t.probe.info.uuid,
                    domainName: t.probe.info.name,
                    snapshotName: v.snapshotName,
                    deletion: "delete",
                });
                rolledBack.push(t.probe.info.name);
            } catch (e) {
                leftBehind.push(`'${v.snapshotName}' on domain '${t.probe.info.name}' (${messageOf(e).split("\n")[0]})`);
            }
        }
        const f = failure as { m: Member; error: unknown };
        const kind = f.error instanceof LibvirtError ? f.error.kind : "failed";
        throw new LibvirtError(
            kind,
            `restore point '${v.snapshotName}' failed on domain '${f.m.domain}' (${f.m.property}) on ${f.m.virsh.where}: ` +
                `${messageOf(f.error)}\n` +
                `  rolled back: ${rolledBack.length ? rolledBack.join(", ") : "nothing had been taken"}` +
                (leftBehind.length ? `\n  NOT rolled back, remove by hand: ${leftBehind.join("; ")}` : "") +
                (notReleased.length ? `\n  ${notReleased.join("\n  ")}` : paused.length ? `\n  every paused domain was resumed` : ""),
        );
    }
    if (notReleased.length) throw new LibvirtError("failed", `restore point '${v.snapshotName}' was taken, but ${notReleased.join("; ")}`);
    const snapshots = await Promise.all(taken.map((t) => describeMember(t.m, t.probe.info.uuid, v.snapshotName)));
    // Overlays libvirt may have left readable (see makeOverlaysPrivate); a failure there leaves the snapshots, and says so.
    const notPrivate: string[] = [];
    for (const t of taken) {
        try {
            const info = (await observeSnapshot(t.m.virsh, t.probe.info.uuid, v.snapshotName)).info;
            await makeOverlaysPrivate(t.m.virsh, t.probe, t.plan, info);
        } catch (e) {
            notPrivate.push(`domain '${t.probe.info.name}': ${messageOf(e)}`);
        }
    }
    return { snapshots: order(members, snapshots), pausedMilliseconds: paused.length ? resumedAt - pausedAt : 0, notPrivate };
}

/** The members among `existing` whose snapshot carries this restore point's own mark (moments/maker.ts). */
async function ownMembers(existing: Taken[], mark: MakerMark | undefined, name: string): Promise<Taken[]> {
    const own: Taken[] = [];
    for (const t of existing) {
        const found = (await observeSnapshot(t.m.virsh, t.probe.info.uuid, name)).info.domain?.makerMark;
        if (madeBy(found, mark)) own.push(t);
    }
    return own;
}

/** Some members, not all, hold this restore point's snapshot from a run that was cut off: say how to delete them. */
function partlyOwn(own: Taken[], name: string): LibvirtError {
    const members = own.map((t) => ({
        domainName: t.probe.info.name,
        where: t.m.virsh.where,
        command: commandLine(["virsh", "-c", t.m.virsh.uri, "snapshot-delete", "--domain", t.probe.info.uuid, "--snapshotname", name]),
    }));
    return new LibvirtError("already-exists", restorePointSays.partlyOwn(name, members));
}

async function describeMember(m: Member, domainUuid: string, name: string): Promise<MemberSnapshot> {
    const o = await observeSnapshot(m.virsh, domainUuid, name);
    return {
        host: m.virsh.where,
        domain: m.domain,
        domainName: o.info.domain?.name ?? m.domain,
        domainUuid,
        snapshotName: o.info.name,
        creationTime: new Date(o.info.creationTime * 1000).toISOString(),
        state: o.info.state,
        kind: kindOf(o.info),
        memory: memoryOf(o.info),
        xml: o.xml,
    };
}

/**
 * A recorded member as the host has it now: described again where libvirt has its record (on the domain's UUID
 * now); with `restore`, a lost record whose data is still in the images is given back first, else it is kept
 * as recorded and marked recordLost. Undefined when the snapshot or its domain is gone.
 */
async function memberNow(m: Member & { snap: MemberSnapshot }, restore: boolean): Promise<MemberSnapshot | undefined> {
    const at = await locateSnapshot(m.virsh, m.snap, { restore });
    if (!at || at.record.status === "gone") return undefined;
    if (at.record.status === "restorable") return { ...m.snap, domainName: at.probe!.info.name, domainUuid: at.domain, recordLost: true };
    return describeMember(m, at.domain, m.snap.snapshotName);
}

function order(members: Member[], snaps: MemberSnapshot[]): MemberSnapshot[] {
    return members.map((m) => snaps.find((s) => s.domain === m.domain && s.host === m.virsh.where)).filter((s): s is MemberSnapshot => !!s);
}

function outputsOf(v: Inputs, snapshots: MemberSnapshot[], pausedMilliseconds: number): Recorded {
    const { connection: _c, targets: _t, ...declared } = v;
    return {
        ...(v.connection ? { connection: v.connection } : {}),
        ...(v.targets ? { targets: v.targets } : {}),
        ...(v.domains ? { domains: v.domains } : {}),
        snapshotName: v.snapshotName,
        ...(v.description !== undefined ? { description: v.description } : {}),
        consistency: v.consistency,
        deletion: v.deletion,
        snapshots,
        pausedMilliseconds,
        declared,
    };
}

/** Members recorded in state, with the connection each was made through. */
function recordedMembers(olds: Recorded): Array<Member & { snap: MemberSnapshot }> {
    const members = membersOf({
        connection: olds.connection,
        domains: olds.domains,
        targets: olds.targets,
        timeoutSeconds: olds.declared?.timeoutSeconds,
    });
    return olds.snapshots.flatMap((snap) => {
        const m = members.find((x) => x.domain === snap.domain && x.virsh.where === snap.host);
        return m ? [{ ...m, snap }] : [];
    });
}

async function deleteMembers(members: Array<Member & { snap: MemberSnapshot }>, deletion: "delete" | "metadata"): Promise<void> {
    const problems: string[] = [];
    // One domain at a time per host keeps libvirt's merges simple; domains are independent, so run them in parallel.
    await Promise.all(
        members.map((m) =>
            withDomainLock(memberKey(m), async () => {
                try {
                    // A record libvirt lost is given back first with deletion 'delete', so the data leaves the images too.
                    const at = await locateSnapshot(m.virsh, m.snap, { restore: deletion === "delete", read: true });
                    if (!at) return; // the domain is gone, and its snapshots' records with it
                    await deleteSnapshot(
                        m.virsh,
                        {
                            domain: at.domain,
                            domainName: m.snap.domainName,
                            snapshotName: m.snap.snapshotName,
                            deletion,
                        },
                        at.observed,
                    );
                } catch (e) {
                    problems.push(`domain '${m.snap.domainName}' on ${m.snap.host}: ${messageOf(e)}`);
                }
            }),
        ),
    );
    if (problems.length)
        throw new LibvirtError("failed", `could not delete every snapshot of the restore point:\n  ${problems.join("\n  ")}`);
}

function memberIds(v: Pick<Inputs, "connection" | "domains" | "targets">): string[] {
    return entriesOf(v).flatMap((e) => e.domains.map((d) => `${targetOf(resolveConnection(e.connection))}|${d}`));
}

// ---- the provider ------------------------------------------------------------

export const restorePoint = {
    check(olds: Record<string, unknown>, news: Record<string, unknown>): Promise<pulumi.dynamic.CheckResult> {
        return checkInputs(RestorePointSchema, olds, news, {
            planKeys: RestorePointSpec.checkedKeys,
            createKeys: RestorePointSpec.createKeys,
            ask: async (v) => (await Promise.all(membersOf(v).map((m) => planMember(v, m, { space: true })))).flatMap((p) => p.failures),
        });
    },

    async diff(_id: string, olds: Recorded, news: Record<string, unknown>): Promise<pulumi.dynamic.DiffResult> {
        const r = parseInputs(RestorePointSchema, news, { allowUnknowns: true });
        const v = (r.ok ? r.value : news) as Record<string, unknown>;
        const old = (olds.declared ?? {}) as Record<string, unknown>;
        const replaces = RestorePointSpec.replaceKeys.filter((k) => news[k] === UNKNOWN || !same(old[k], v[k]));
        let membersChanged = true;
        if (r.ok) {
            try {
                membersChanged = !same(memberIds(olds as unknown as Inputs).sort(), memberIds(r.value).sort());
            } catch {
                /* bad stack config: the update reports it */
            }
        }
        // A member whose record libvirt lost while its images still hold the data is an update: it gives the record back. Only read here.
        let recordLost = false;
        if (!replaces.length && !membersChanged) {
            for (const m of recordedMembers(olds)) {
                try {
                    recordLost ||= (await locateSnapshot(m.virsh, m.snap, { restore: false }))?.record.status === "restorable";
                } catch {
                    // An unreachable host is not a diff: the operation that needs the host reports it.
                }
            }
        }
        const changes =
            recordLost ||
            replaces.length > 0 ||
            membersChanged ||
            RestorePointSpec.updateKeys.some((k) => !same(old[k], v[k])) ||
            !same(olds.connection, v.connection) ||
            !same(olds.targets, v.targets);
        return { changes, replaces: [...replaces], deleteBeforeReplace: replaces.length > 0 && !replaces.includes("snapshotName") };
    },

    async create(news: Record<string, unknown>): Promise<pulumi.dynamic.CreateResult> {
        const v = parseOrThrow(RestorePointSchema, news);
        const members = membersOf(v);
        const { snapshots, pausedMilliseconds, notPrivate } = await withLocks(members, () =>
            snapshotAll(v, members, makerMark(news, v.snapshotName)),
        );
        const id = `restorepoint/${v.snapshotName}/${snapshots.map((s) => s.domainUuid).join(",")}`;
        const outs = outputsOf(v, snapshots, pausedMilliseconds);
        if (notPrivate.length) {
            // The snapshots exist: Pulumi keeps the restore point (an init failure) while the error says what to do.
            const message = `restore point '${v.snapshotName}' was taken, but: ${notPrivate.join("; ")}`;
            throw initFailure(new LibvirtError("failed", message), { id, properties: outs });
        }
        return { id, outs };
    },

    async read(id: string, props: Recorded): Promise<pulumi.dynamic.ReadResult> {
        const members = recordedMembers(props);
        const snapshots: MemberSnapshot[] = [];
        for (const m of members) {
            try {
                const now = await withDomainLock(memberKey(m), () => memberNow(m, false));
                if (now) snapshots.push(now);
            } catch (e) {
                if (!(isKind(e, "snapshot-not-found") || isKind(e, "domain-not-found"))) throw e;
            }
        }
        // All gone: refresh drops the resource. Partly gone: the list shows what is left, and diff plans the rest.
        if (snapshots.length === 0) return { id: "", props: {} };
        return { id, props: { ...props, snapshots } };
    },

    async update(_id: string, olds: Recorded, news: Record<string, unknown>): Promise<pulumi.dynamic.UpdateResult> {
        const v = parseOrThrow(RestorePointSchema, news);
        const wanted = membersOf(v);
        const recorded = recordedMembers(olds);
        const idOf = (m: { connection: Connection; domain: string }) => memberKey(m);
        const removed = recorded.filter((r) => !wanted.some((w) => idOf(w) === idOf(r)));
        const added = wanted.filter((w) => !recorded.some((r) => idOf(r) === idOf(w)));
        const kept = recorded.filter((r) => !removed.includes(r));
        // Remove first: a domain moved from one list entry to another must not collide with itself.
        await deleteMembers(removed, olds.deletion);
        let pausedMilliseconds = olds.pausedMilliseconds;
        let addedSnaps: MemberSnapshot[] = [];
        if (added.length) {
            const res = await withLocks(added, () => snapshotAll(v, added, makerMark(news, v.snapshotName)));
            addedSnaps = res.snapshots;
            pausedMilliseconds = res.pausedMilliseconds;
        }
        // Records libvirt lost (a domain defined again, perhaps under a new UUID) are given back from the state first.
        const keptNow = await Promise.all(
            kept.map(async (m) => {
                const now = await withDomainLock(memberKey(m), () => memberNow(m, true));
                return { ...m, snap: now ?? m.snap };
            }),
        );
        if (!same(olds.description, v.description)) {
            await Promise.all(
                keptNow.map((m) =>
                    withDomainLock(memberKey(m), () =>
                        redefineDescription(m.virsh, "snapshot", m.snap.domainUuid, m.snap.snapshotName, v.description),
                    ),
                ),
            );
        }
        const keptSnaps = await Promise.all(
            keptNow.map(async (m) => {
                try {
                    return await describeMember(m, m.snap.domainUuid, m.snap.snapshotName);
                } catch {
                    return m.snap;
                }
            }),
        );
        const all = order(wanted, [
            ...keptSnaps.map((s, i) => ({ ...s, host: wanted.find((w) => idOf(w) === idOf(kept[i]!))?.virsh.where ?? s.host })),
            ...addedSnaps,
        ]);
        return { outs: outputsOf(v, all, pausedMilliseconds) };
    },

    async delete(_id: string, props: Recorded): Promise<void> {
        await deleteMembers(recordedMembers(props), props.deletion);
    },
};
