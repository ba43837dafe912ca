// DomainSnapshot: the whole life of one libvirt snapshot.
//   inputs (zod) → probe → plan (snapshot/plan.ts: XML and virsh command, checked against the live domain)
//   → take (snapshot/take.ts: snapshot-create or adopt, read back: snapshot-dumpxml, snapshot-info) → outputs
// Preview (check/diff) only reads from the host.
import type * as pulumi from "@pulumi/pulumi";
import { z } from "zod";
import type { Connection } from "../connection";
import { LibvirtError, isKind, isCutOff } from "../errors";
import { initFailure } from "../failures";
import { InputError, description, hostPath, makerMark, momentName, spaceMarginMiB, trueOrFalse } from "../inputs";
import { withDomainLock } from "../locks";
import { common, field, spec } from "../spec";
import {
    askAboutDomain,
    checkInputs,
    compareInputs,
    lockKey,
    parseOrThrow,
    same,
    replacesInPlace,
    virshFor,
    withoutConnection,
} from "../resource";
import { probeDomain, type DomainProbe } from "../host/probe";
import type { Virsh } from "../host/virsh";
import { overlayLocation, parseSnapshotXml, snapshotRecordXml, type MakerMark } from "../host/xml";
import { redefineDescription } from "../moments/description";
import { deleteSnapshot } from "../snapshot/delete";
import { kindOf, memoryOf, observeSnapshot, type ObservedSnapshot } from "../snapshot/observe";
import { planOnHost, planSnapshot } from "../snapshot/plan";
import { spaceFailures } from "../snapshot/space";
import { createSnapshot } from "../snapshot/take";
import { locateSnapshot } from "./lostRecords";

// ---- inputs ----------------------------------------------------------------

const diskMode = z.enum(["internal", "external", "no"], { error: "must be 'internal', 'external' or 'no'" });

export const DiskSchema = z.strictObject({
    name: z.string({ error: "must be a string (a disk target such as vda, or its source path)" }).min(1, { error: "must not be empty" }),
    snapshot: diskMode,
    file: hostPath.optional(),
    driverType: z.enum(["qcow2", "raw", "qed"], { error: "must be 'qcow2', 'raw' or 'qed'" }).optional(),
});

/** Each input once: its schema (and default), what a change of it does, and its doc (DomainSnapshotArgs says the same). */
export const DomainSnapshotSpec = spec({
    connection: common.connection,
    domain: common.domain,
    snapshotName: field(
        "replace",
        momentName("snapshot"),
        "The snapshot's name. Default: the resource's logical name. Refused: empty, `/`, `\"`, " +
            "`\\`, a leading `-`, control characters, more than 247 bytes (libvirt accepts some of " +
            "these and then breaks).",
    ),
    description: field("update", description.optional(), "Free text; changing it updates the snapshot in place (`--redefine`).", {
        checked: true,
    }),
    kind: field(
        "replace",
        z.enum(["internal", "external"], { error: "must be 'internal' or 'external'" }).default("internal"),
        "`internal` (inside the qcow2 image, the default) or `external` (an overlay file per disk; new writes go there).",
    ),
    disks: field(
        "replace",
        z.array(DiskSchema, { error: "must be a list of { name, snapshot, file?, driverType? }" }).optional(),
        "Per-disk overrides, by target (`vda`) or source path. Default: every writable disk by `kind`.",
    ),
    memory: field(
        "replace",
        z.enum(["none", "internal", "external"], { error: "must be 'none' (disk only), 'internal' or 'external'" }).optional(),
        "`none` (disk only), `internal` or `external`. Default: saved while the domain runs, skipped when it is shut off.",
    ),
    memoryFile: field("replace", hostPath.optional(), "With memory `external`. Default: beside the first disk, `DOMAIN.SNAPSHOT.mem`."),
    quiesce: field(
        "replace",
        trueOrFalse.default(false),
        "Freeze the guest's filesystems for the snapshot (a connected guest agent, disk-only). Default false.",
    ),
    atomic: field("replace", trueOrFalse.default(true), "All disks or none. Default true."),
    live: field("replace", trueOrFalse.default(false), "A live full-system external snapshot. Default false."),
    halt: field("update", trueOrFalse.default(false), "Stop the domain after the snapshot. Default false.", { checked: true }),
    deletion: field(
        "update",
        z
            .enum(["delete", "metadata"], { error: "must be 'delete' (merge the data into the child) or 'metadata' (keep the data)" })
            .default("delete"),
        "`delete` (the default) merges the data into the child on destroy; `metadata` drops libvirt's record and keeps the data.",
        { checked: true },
    ),
    adopt: field(
        "update",
        trueOrFalse.default(false),
        "Take over an existing snapshot of this name, if it matches what is declared (`pulumi " +
            "import` does not work for dynamic providers). Default false.",
    ),
    // Optional, not defaulted: state recorded before it existed keeps diffing as unchanged (DEFAULT_SPACE_MARGIN_MIB applies).
    spaceMarginMiB: field(
        "update",
        spaceMarginMiB.optional(),
        "The room check asks for on the filesystem of each overlay, in MiB, beside the guest's RAM " +
            "for a memory state (check refuses a snapshot that doesn't fit, giving both figures). " +
            "Default 64.",
        { checked: true },
    ),
    timeoutSeconds: common.timeoutSeconds,
});

export const DomainSnapshotSchema = DomainSnapshotSpec.object.superRefine((v, ctx) => {
    if (v.memoryFile !== undefined && v.memory !== "external") {
        ctx.addIssue({ code: "custom", path: ["memoryFile"], message: "is only used with memory: 'external'" });
    }
    const seen = new Set<string>();
    v.disks?.forEach((d, i) => {
        if (seen.has(d.name)) ctx.addIssue({ code: "custom", path: ["disks", i, "name"], message: `names disk '${d.name}' twice` });
        seen.add(d.name);
        if (d.file !== undefined && d.snapshot !== "external")
            ctx.addIssue({
                code: "custom",
                path: ["disks", i, "file"],
                message: "is only used with snapshot: 'external' (an overlay file)",
            });
        if (d.driverType !== undefined && d.snapshot !== "external")
            ctx.addIssue({ code: "custom", path: ["disks", i, "driverType"], message: "is only used with snapshot: 'external'" });
    });
});

/** What a user may pass: the schema's input type. */
type Inputs = z.infer<typeof DomainSnapshotSchema>;

/** What a DomainSnapshot exposes. */
export interface DomainSnapshotOutputs {
    /** The connection it was made through (stored as a secret). */
    connection?: Connection;
    /** The domain as declared: name or UUID. */
    domain: string;
    snapshotName: string;
    description?: string;
    /** What libvirt made: `internal` (inside the qcow2 image) or `external` (an overlay file per disk). */
    kind: "internal" | "external";
    /** Where the memory went: `none` (disk only), `internal` or `external`. */
    memory: "none" | "internal" | "external";
    /** The memory file of an external snapshot with memory. */
    memoryFile?: string;
    /** What destroy does: `delete` merges the data into the child; `metadata` keeps it. */
    deletion: "delete" | "metadata";
    domainName: string;
    /** Used from then on, so renaming the domain doesn't matter. */
    domainUuid: string;
    /** ISO 8601, from libvirt. */
    creationTime: string;
    /** The domain's state in the snapshot: `running`, `shutoff`, `paused`, `disk-snapshot`... */
    state: string;
    /** The parent snapshot, or null. */
    parent: string | null;
    /** Whether it is the domain's current snapshot. */
    isCurrent: boolean;
    /** The overlay per disk, for external snapshots: its path (a file or a block device), or `protocol://host/name` on the network. */
    diskFiles: Record<string, string>;
    /** The libvirt version of the host's daemon. */
    libvirtVersion: string;
    /** True when it took over an existing snapshot instead of creating it. */
    adopted: boolean;
    /**
     * libvirt's snapshot XML with its `<domain>`, as `snapshot-create --redefine` takes it: when libvirt loses the record
     * (the domain was undefined and defined again, perhaps under a new UUID) while the images still hold the data, the next
     * pulumi up gives it back from here. Absent in state recorded by 0.1.0.
     */
    xml?: string;
    /** True when refresh found libvirt's record lost but the data still in the images: the next pulumi up gives the record back. */
    recordLost?: boolean;
    /** When the provider last gave libvirt its lost record back from this state (ISO 8601), else null. */
    restoredAt?: string | null;
}

/** What the resource records: its outputs, and the inputs as declared (defaults applied) for diff. */
interface Recorded extends DomainSnapshotOutputs {
    declared: Omit<Inputs, "connection">;
}

// ---- outputs ------------------------------------------------------------------

interface Kept {
    adopted: boolean;
    restoredAt: string | null;
    /** Set when libvirt has no record of it now: outputs come from the kept XML, on the domain as it is now. */
    lost?: { domainName: string; domainUuid: string };
}

/** `declared`: the inputs as recorded for diff, when the caller has them already. */
function outputsFrom(v: Inputs, o: ObservedSnapshot, version: string, kept: Kept, declared = withoutConnection(v)): Recorded {
    const s = o.info;
    const diskFiles: Record<string, string> = {};
    for (const d of s.disks) {
        const at = d.snapshot === "external" ? overlayLocation(d) : undefined;
        if (at) diskFiles[d.name] = at;
    }
    return {
        ...(v.connection ? { connection: v.connection } : {}),
        domain: v.domain,
        snapshotName: s.name,
        ...(s.description !== undefined ? { description: s.description } : {}),
        kind: kindOf(s),
        memory: memoryOf(s),
        ...(s.memory.file ? { memoryFile: s.memory.file } : {}),
        deletion: v.deletion,
        domainName: kept.lost?.domainName ?? s.domain?.name ?? "",
        domainUuid: kept.lost?.domainUuid ?? s.domain?.uuid ?? "",
        creationTime: new Date(s.creationTime * 1000).toISOString(),
        state: s.state,
        parent: s.parent ?? null,
        isCurrent: o.isCurrent,
        diskFiles,
        libvirtVersion: version,
        adopted: kept.adopted,
        xml: o.xml,
        recordLost: kept.lost !== undefined,
        restoredAt: kept.restoredAt,
        declared,
    };
}

// ---- the provider ------------------------------------------------------------

export const domainSnapshot = {
    check(olds: Record<string, unknown>, news: Record<string, unknown>): Promise<pulumi.dynamic.CheckResult> {
        return checkInputs(DomainSnapshotSchema, olds, news, {
            planKeys: DomainSnapshotSpec.checkedKeys,
            createKeys: DomainSnapshotSpec.createKeys,
            ask: (v) =>
                askAboutDomain(v, "the snapshot", async (virsh, probe) => {
                    const { plan, failures } = await planOnHost(virsh, probe, v);
                    return plan ? spaceFailures(virsh, probe, plan, v.spaceMarginMiB) : failures;
                }),
        });
    },

    async diff(_id: string, olds: Recorded, news: Record<string, unknown>): Promise<pulumi.dynamic.DiffResult> {
        const { v, replaces, updates, credentialsChanged } = compareInputs(DomainSnapshotSchema, olds, news, {
            replace: DomainSnapshotSpec.replaceKeys,
            update: DomainSnapshotSpec.updateKeys,
        });

        // A snapshot deleted behind Pulumi's back is planned for re-creation now, rather than failing later. One whose
        // record libvirt lost while the images still hold it is an update: it gives the record back. Only read here.
        let recordLost = false;
        if (!replaces.length && olds.domainUuid && olds.snapshotName) {
            const virsh = virshFor({ connection: olds.connection, timeoutSeconds: olds.declared?.timeoutSeconds });
            try {
                const at = await locateSnapshot(virsh, olds, { restore: false });
                if (!at || at.record.status === "gone") replaces.push("snapshotName");
                recordLost = at?.record.status === "restorable";
            } catch {
                // An unreachable host is not a diff: the operation that needs the host reports it.
            }
        }
        return {
            changes: replaces.length > 0 || updates.length > 0 || credentialsChanged || recordLost,
            replaces,
            // The replacement would have the same name on the same domain: the old one must go first.
            deleteBeforeReplace: replacesInPlace(replaces, olds, v.domain, olds.snapshotName === v.snapshotName),
        };
    },

    async create(news: Record<string, unknown>): Promise<pulumi.dynamic.CreateResult> {
        const v = parseOrThrow(DomainSnapshotSchema, news);
        const virsh = virshFor(v);
        return withDomainLock(lockKey(v), async () => {
            const outs = await createLocked(v, virsh, makerMark(news, v.snapshotName));
            return { id: `${outs.domainUuid}/${outs.snapshotName}`, outs };
        });
    },

    /** Only reads: a record libvirt lost is reported (recordLost), and given back by the next pulumi up. */
    async read(id: string, props: Recorded): Promise<pulumi.dynamic.ReadResult> {
        const virsh = virshFor(props);
        const v = { ...props.declared, connection: props.connection } as Inputs;
        const kept = { adopted: props.adopted, restoredAt: props.restoredAt ?? null };
        try {
            // The usual case first, with no extra question: libvirt has it under the recorded UUID.
            const observed = await observeSnapshot(virsh, props.domainUuid || props.domain, props.snapshotName);
            return { id, props: outputsFrom(v, observed, (await virsh.version()).libvirt, kept) };
        } catch (e) {
            if (!(isKind(e, "snapshot-not-found") || isKind(e, "domain-not-found"))) throw e;
        }
        try {
            const at = await locateSnapshot(virsh, props, { restore: false });
            // Gone from the host: an empty id makes refresh drop the resource.
            if (!at || at.record.status === "gone") return { id: "", props: {} };
            if (at.record.status === "restorable") {
                const o: ObservedSnapshot = {
                    info: parseSnapshotXml(props.xml!),
                    isCurrent: props.isCurrent,
                    children: 0,
                    xml: props.xml!,
                };
                const lost = { domainName: at.probe!.info.name, domainUuid: at.domain };
                return { id, props: outputsFrom(v, o, at.probe!.version.libvirt, { ...kept, lost }) };
            }
            const observed = await observeSnapshot(virsh, at.domain, props.snapshotName);
            return { id, props: outputsFrom(v, observed, (await virsh.version()).libvirt, kept) };
        } catch (e) {
            if (isKind(e, "snapshot-not-found") || isKind(e, "domain-not-found")) return { id: "", props: {} };
            throw e;
        }
    },

    async update(_id: string, olds: Recorded, news: Record<string, unknown>): Promise<pulumi.dynamic.UpdateResult> {
        const v = parseOrThrow(DomainSnapshotSchema, news);
        const virsh = virshFor(v);
        return withDomainLock(lockKey(v), async () => {
            // A record libvirt lost (the domain was defined again, perhaps under a new UUID) is given back from the state.
            const at = await locateSnapshot(virsh, olds, { restore: true, read: true });
            // An earlier create was cut off before libvirt made the snapshot (an init failure): finish the job.
            if (at?.record.status === "gone" && !olds.creationTime)
                return { outs: await createLocked(v, virsh, makerMark(news, v.snapshotName)) };
            if (!at)
                throw new LibvirtError(
                    "domain-not-found",
                    `domain '${olds.domainName || olds.domain}' of snapshot '${olds.snapshotName}' is gone from ${virsh.where}`,
                );
            if (at.record.status === "gone") {
                throw new LibvirtError(
                    "snapshot-not-found",
                    `snapshot '${olds.snapshotName}' of domain '${at.probe?.info.name ?? olds.domainName}' ` +
                        `is gone and can't be given back: ${at.record.reason}. ` +
                        `Nothing was changed. Run pulumi refresh, then pulumi up to take it again.`,
                );
            }
            const domain = at.domain;
            const restoredAt = at.record.status === "restored" ? new Date().toISOString() : (olds.restoredAt ?? null);
            let observed = at.observed ?? (await observeSnapshot(virsh, domain, olds.snapshotName));
            if (!same(observed.info.description, v.description)) {
                await redefineDescription(virsh, "snapshot", domain, olds.snapshotName, v.description);
                observed = await observeSnapshot(virsh, domain, olds.snapshotName);
            }
            return { outs: outputsFrom(v, observed, (await virsh.version()).libvirt, { adopted: olds.adopted, restoredAt }) };
        });
    },

    async delete(_id: string, props: Recorded): Promise<void> {
        const virsh = virshFor(props);
        await withDomainLock(lockKey(props), async () => {
            // No creationTime: the state a cut-off create left (an init failure).
            if (!props.creationTime && props.deletion === "delete") await removeCutOffCreate(virsh, props);
            // A record libvirt lost is given back first with deletion 'delete', so the delete removes the data from the
            // images too rather than leaking it; with 'metadata' there is no record left to drop, and the data stays.
            const at = await locateSnapshot(virsh, props, { restore: props.deletion === "delete", read: true });
            if (!at) return; // the domain is gone, and its snapshots' records with it
            await deleteSnapshot(
                virsh,
                {
                    domain: at.domain,
                    domainName: props.domainName,
                    snapshotName: props.snapshotName,
                    deletion: props.deletion,
                },
                at.observed,
            );
        });
    },
};

/** Take the snapshot and read it back (the caller holds the domain's lock). `mark`: see moments/maker.ts. */
async function createLocked(v: Inputs, virsh: Virsh, mark: MakerMark | undefined): Promise<Recorded> {
    const probe = await resumeAfterInterruptedSnapshot(virsh, await probeDomain(virsh, v.domain));
    // The inputs as recorded for diff, once: in the state a cut-off create leaves, and in the outputs.
    const declared = withoutConnection(v);
    const { plan, failures } = await planOnHost(virsh, probe, v);
    if (!plan) throw new InputError(failures);
    const made = await createSnapshot(virsh, plan, {
        probe,
        marginMiB: v.spaceMarginMiB,
        mark,
        adopt: v.adopt,
        partial: {
            ...(v.connection ? { connection: v.connection } : {}),
            domain: v.domain,
            snapshotName: v.snapshotName,
            deletion: v.deletion,
            domainName: probe.info.name,
            domainUuid: plan.domain,
            libvirtVersion: probe.version.libvirt,
            adopted: false,
            declared,
        } satisfies Partial<Recorded>,
    });
    const outs = outputsFrom(v, made.observed, probe.version.libvirt, { adopted: made.adopted, restoredAt: null }, declared);
    // The snapshot exists: Pulumi keeps it (an init failure) while the error says what to do.
    if ("notPrivate" in made) throw initFailure(made.notPrivate, { id: `${plan.domain}/${v.snapshotName}`, properties: outs });
    return outs;
}

/**
 * A domain that libvirt left paused by a snapshot or save it never finished is
 * resumed before the snapshot is taken (again). Why (measured on libvirt 9.0 +
 * qemu 7.2): libvirtd killed while qemu runs `savevm` for an
 * internal snapshot comes back with the domain `paused (saving)`, no libvirt
 * metadata and the snapshot inside the qcow2 image; libvirt does not resume the
 * domain itself. The next `pulumi up` (an update after the init failure, or a
 * replacement) lands here: without this, the VM would stay paused and the new
 * snapshot would record it as paused (a revert to it would pause the VM). Taken
 * again under the same name, qemu replaces the orphan qcow2 snapshot. Only the
 * reasons libvirt itself sets for a save or snapshot are resumed, and only when
 * no job runs on the domain (a running job would mean the pause is not over);
 * a domain paused by a user (`paused (user)`) is left alone.
 */
async function resumeAfterInterruptedSnapshot(virsh: Virsh, probe: DomainProbe): Promise<DomainProbe> {
    if (probe.state !== "paused") return probe;
    const domain = probe.info.uuid;
    const reason = (await virsh.query(["domstate", "--domain", domain, "--reason"])).trim();
    if (!/^paused \((saving|snapshot)\)$/.test(reason)) return probe;
    const job = await virsh.query(["domjobinfo", "--domain", domain]);
    if (!/^Job type:\s+None\s*$/m.test(job)) return probe;
    try {
        await virsh.run(["resume", "--domain", domain]);
    } catch (e) {
        // Another process's snapshot ended (and resumed the domain) between the looks above and the resume:
        // measured with two provider processes on one domain (test/concurrency.test.ts (b)).
        if (!(e instanceof LibvirtError && /domain is already running/.test(e.stderr ?? ""))) throw e;
    }
    return probeDomain(virsh, domain);
}

/**
 * What a create cut off mid-way can leave when libvirt lost track of it
 * (measured on libvirt 9.0 + qemu 7.2, libvirtd killed during qemu's savevm):
 * the domain paused by the unfinished job, and the snapshot inside the qcow2
 * images without a libvirt record. `pulumi destroy` of that state resumes the
 * domain and gives libvirt the record back (--redefine), so the delete that
 * follows removes the snapshot from the images the normal way, through qemu.
 * Where the images hold no such snapshot, libvirt's delete fails and only the
 * record given here is removed. A cut-off external snapshot is left alone: its
 * overlay files carry no name to match, and deleting files on a guess is not safe.
 */
async function removeCutOffCreate(virsh: Virsh, props: Recorded): Promise<void> {
    const domain = props.domainUuid;
    if (!domain || !props.declared) return;
    let probe: DomainProbe;
    try {
        probe = await resumeAfterInterruptedSnapshot(virsh, await probeDomain(virsh, domain));
    } catch (e) {
        if (isKind(e, "domain-not-found")) return;
        throw e;
    }
    try {
        await virsh.query(["snapshot-info", "--domain", domain, "--snapshotname", props.snapshotName]);
        return; // libvirt has it: the normal delete follows
    } catch (e) {
        if (!isKind(e, "snapshot-not-found")) throw e;
    }
    // The snapshot as the declared inputs would make it now, with the memory this domain's state allows.
    const { plan } = planSnapshot(
        { ...props.declared, memory: undefined, memoryFile: undefined, quiesce: false, live: false, halt: false } as Inputs,
        probe,
    );
    if (!plan || plan.kind !== "internal") return;
    const domainXml = await virsh.query(["dumpxml", "--domain", domain]);
    const record = snapshotRecordXml(plan.spec, {
        state: probe.active ? "running" : "shutoff",
        creationTime: Math.floor(Date.now() / 1000),
        domainXml,
    });
    await virsh.run(["snapshot-create", "--domain", domain, "--xmlfile", "/dev/stdin", "--redefine"], { stdin: record });
    try {
        await virsh.run(["snapshot-delete", "--domain", domain, "--snapshotname", props.snapshotName]);
    } catch (e) {
        if (isCutOff(e)) throw e;
        await virsh.run(["snapshot-delete", "--domain", domain, "--snapshotname", props.snapshotName, "--metadata"]);
    }
}
