// DomainCheckpoint: the whole life of one libvirt checkpoint (qcow2 dirty bitmaps).
//   inputs (zod) → plan (XML, checked against the live domain)
//   → virsh checkpoint-create → read back (checkpoint-dumpxml, --size) → outputs
// Preview (check/diff) only reads from the host. The checkpoint's XML is kept in the
// state, so when libvirt loses the record (the domain was undefined and defined
// again) but the bitmaps are still in the images, diff plans an update, and update,
// refresh and delete put the record back with `checkpoint-create --redefine`
// instead of planning a new one (lostRecords.ts).
import type * as pulumi from "@pulumi/pulumi";
import { z } from "zod";
import type { Connection } from "../connection";
import { LibvirtError, isKind, messageOf, notRunning } from "../errors";
import { failureInsteadOf, initFailure } from "../failures";
import { InputError, description, makerMark, momentName, trueOrFalse, type CheckFailure } from "../inputs";
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
import { listCheckpoints, probeDomain, VERSIONS, type DomainProbe } from "../host/probe";
import type { LibvirtVersion, Virsh } from "../host/virsh";
import { buildCheckpointXml, parseCheckpointXml, type CheckpointInfo, type CheckpointSpec, type MakerMark } from "../host/xml";
import { deleteCheckpoint } from "../checkpoint/delete";
import { adoptOrRefuse, explainFailedCreate, unknownOutcome } from "../moments/creates";
import { redefineDescription } from "../moments/description";
import { withMakerMark } from "../moments/maker";
import { coveredDisks, type Fail } from "../moments/disks";
import { bitmapsMissingOffline, checkpointRecord, locateCheckpoint, probeRecordedDomain } from "./lostRecords";
import { checkpointSays } from "./messages";

// ---- inputs ----------------------------------------------------------------

const NO_CONTROL = /[\u0000-\u001f\u007f]/;

const bitmapName = z
    .string({ error: "must be a string (the dirty bitmap's name)" })
    .min(1, { error: "must not be empty" })
    .refine((s) => Buffer.byteLength(s, "utf8") <= 1023, { error: "must be at most 1023 bytes long (qcow2's limit for bitmap names)" })
    .refine((s) => !NO_CONTROL.test(s), { error: "must not contain control characters" });

// libvirt validates checkpoint XML against domaincheckpoint.rng, whose names are
// [a-zA-Z0-9_-][a-zA-Z0-9_.-]*: stricter than snapshot names (no spaces, no quotes).
const CHECKPOINT_NAME = /^[A-Za-z0-9_-][A-Za-z0-9_.-]*$/;
const anyMomentName = momentName("checkpoint");
/** A checkpoint name libvirt's checkpoint schema takes (DomainBackup names its checkpoints with it too). */
export const checkpointName = momentName("checkpoint").refine(
    // Where momentName already explains what is wrong, one message is enough.
    (s) => CHECKPOINT_NAME.test(s) || !anyMomentName.safeParse(s).success,
    {
        error:
            "may contain only letters, digits, '_', '-' and '.', and must not start with '.': " +
            "libvirt's checkpoint schema allows nothing else (no spaces or quotes)",
    },
);

export const CheckpointDiskSchema = z.strictObject({
    name: z.string({ error: "must be a string (a disk target such as vda, or its source path)" }).min(1, { error: "must not be empty" }),
    checkpoint: z.enum(["bitmap", "no"], { error: "must be 'bitmap' (track the disk's changes) or 'no' (leave the disk out)" }),
    bitmap: bitmapName.optional(),
});

/** Each input once: its schema (and default), what a change of it does, and its doc (DomainCheckpointArgs says the same). */
export const DomainCheckpointSpec = spec({
    connection: common.connection,
    domain: common.domain,
    checkpointName: field(
        "replace",
        checkpointName,
        "The checkpoint's name. Default: the resource's logical name. Letters, digits, `_`, `-` " +
            "and `.`, not starting with `.` or `-`: libvirt's checkpoint schema is stricter than its " +
            "snapshot schema.",
    ),
    description: field("update", description.optional(), "Changed in place (`checkpoint-create --redefine`), without a new checkpoint."),
    disks: field(
        "replace",
        z.array(CheckpointDiskSchema, { error: "must be a list of { name, checkpoint, bitmap? }" }).optional(),
        "Per-disk overrides. Default: every writable disk gets a bitmap.",
    ),
    quiesce: field(
        "replace",
        trueOrFalse.default(false),
        "libvirt's QEMU driver rejects it, so true is refused at check; a checkpoint copies no data. Default false.",
    ),
    deletion: field(
        "update",
        z
            .enum(["delete", "metadata"], {
                error:
                    "must be 'delete' (remove the bitmaps; the parent keeps covering their changes) or " +
                    "'metadata' (drop only libvirt's record, keep the bitmaps)",
            })
            .default("delete"),
        "`delete` (the default) removes the bitmaps, and the parent keeps covering their changes; `metadata` drops only libvirt's record.",
    ),
    adopt: field(
        "update",
        trueOrFalse.default(false),
        "Take over an existing checkpoint of that name, if its disks match the declaration. Default false.",
    ),
    timeoutSeconds: common.timeoutSeconds,
});

export const DomainCheckpointSchema = DomainCheckpointSpec.object.superRefine((v, ctx) => {
    const seen = new Set<string>();
    v.disks?.forEach((d, i) => {
        if (seen.has(d.name)) ctx.addIssue({ code: "custom", path: ["disks", i, "name"], message: `names disk '${d.name}' twice` });
        seen.add(d.name);
        if (d.bitmap !== undefined && d.checkpoint !== "bitmap")
            ctx.addIssue({ code: "custom", path: ["disks", i, "bitmap"], message: "is only used with checkpoint: 'bitmap'" });
    });
});

/** What a user may pass: the schema's input type. */
type Inputs = z.infer<typeof DomainCheckpointSchema>;

export interface CheckpointDiskState {
    /** Disk target, e.g. vda. */
    name: string;
    checkpoint: "bitmap" | "no";
    /** The dirty bitmap in the disk's qcow2 image; null when the disk is not in the checkpoint. */
    bitmap: string | null;
    /** Bytes written since the checkpoint, as libvirt estimates them; null when libvirt can't measure it (missing or broken bitmap). */
    changedBytes: number | null;
}

/** A kept checkpoint document, enough to redefine it. */
export interface KeptCheckpoint {
    name: string;
    xml: string;
}

/** What a DomainCheckpoint exposes. */
export interface DomainCheckpointOutputs {
    /** The connection it was made through (stored as a secret). */
    connection?: Connection;
    /** The domain as declared: name or UUID. */
    domain: string;
    checkpointName: string;
    description?: string;
    /**
     * What destroy does: `delete` removes the bitmaps (the parent keeps covering their changes); `metadata` drops only
     * libvirt's record.
     */
    deletion: "delete" | "metadata";
    domainName: string;
    /** Used from then on, so renaming the domain doesn't matter. */
    domainUuid: string;
    /** ISO 8601, from libvirt. */
    creationTime: string;
    /** The parent checkpoint, or null. Deleting a middle checkpoint re-parents its child, and refresh shows the new parent. */
    parent: string | null;
    /** Per disk: its bitmap and the bytes written since the checkpoint. */
    disks: CheckpointDiskState[];
    /**
     * Bytes written since the checkpoint, summed over the disks that could be measured. Refresh measures it again
     * while the domain runs; when it is shut off, the last measured value stays. Null when no disk could be
     * measured, never a reassuring 0.
     */
    changedBytes: number | null;
    /** When changedBytes was measured (ISO 8601). */
    changedBytesAt: string | null;
    /** libvirt's checkpoint XML with its `<domain>`, as `checkpoint-create --redefine` takes it (dumped without --security-info). */
    xml: string;
    /** The ancestors' XML, oldest first, so a lost chain is restored in order. */
    lineage: KeptCheckpoint[];
    /** The libvirt version of the host's daemon. */
    libvirtVersion: string;
    /** True when it took over an existing checkpoint instead of creating it. */
    adopted: boolean;
    /** True when refresh found libvirt's record lost but the bitmaps still there: the next pulumi up gives the record back. */
    recordLost: boolean;
    /** When the provider last put libvirt's lost record back from this state (ISO 8601), else null. */
    restoredAt: string | null;
    /**
     * Whether every bitmap of the checkpoint is present and consistent, as the host shows it (checked again by every refresh):
     * `checkpoint-dumpxml --size` while the domain runs, `qemu-img info -U` while it is shut off. Null when it can't be told.
     */
    bitmapsHealthy: boolean | null;
    /**
     * What is wrong with the bitmaps (missing, or in-use: not closed cleanly); empty when healthy. An incremental backup
     * from here would fail.
     */
    bitmapProblems: string[];
}

/** What the resource records: its outputs, and the inputs as declared (defaults applied) for diff. */
interface Recorded extends DomainCheckpointOutputs {
    declared: Omit<Inputs, "connection">;
}

// ---- plan ------------------------------------------------------------------

export interface CheckpointPlan {
    spec: CheckpointSpec;
    xml: string;
    /** The whole virsh argument vector; the XML goes on its stdin. */
    argv: string[];
}

/** What the host's QEMU can do, from `virsh domcapabilities`; unknown when libvirt doesn't say. */
export interface HostCaps {
    backup: "yes" | "no" | "unknown";
}

function isQemu(probe: DomainProbe): boolean {
    return /qemu|kvm/i.test(probe.version.hypervisor);
}

/**
 * Decide the checkpoint XML, or say exactly why this domain and this libvirt
 * can't take it. Used by check (as failures) and by create (thrown).
 */
export function planCheckpoint(
    v: Inputs,
    probe: DomainProbe,
    caps: HostCaps = { backup: "unknown" },
): { plan?: CheckpointPlan; failures: CheckFailure[] } {
    const failures: CheckFailure[] = [];
    const fail: Fail = (property, reason) => failures.push({ property, reason });
    const dom = probe.info;
    const lib = probe.version.libvirt;

    if (probe.version.number < VERSIONS.checkpoints) {
        fail("domain", `libvirt ${lib} has no checkpoints (they arrived in libvirt 5.6). Upgrade libvirt on the host`);
        return { failures };
    }
    if (caps.backup === "no") {
        fail("domain", checkpointSays.noBackupInQemu(lib));
    }
    if (!probe.active) {
        fail("domain", checkpointSays.notRunning(probe));
    }

    const disks: CheckpointSpec["disks"] = [];
    for (const { disk: d, entry: o, index: i } of coveredDisks(v.disks, dom, fail)) {
        const mode = o?.checkpoint ?? "bitmap";
        if (mode === "bitmap") {
            const prop = i === undefined ? "disks" : `disks[${i}].checkpoint`;
            if (d.format !== "qcow2") {
                fail(prop, checkpointSays.notQcow2(d));
            }
            if (o?.bitmap !== undefined && o.bitmap !== v.checkpointName && isQemu(probe)) {
                fail(`disks[${i}].bitmap`, checkpointSays.bitmapName(d.target, v.checkpointName));
            }
        }
        disks.push({ name: d.target, checkpoint: mode, ...(mode === "bitmap" ? { bitmap: o?.bitmap ?? v.checkpointName } : {}) });
    }
    if (!disks.some((d) => d.checkpoint === "bitmap"))
        fail(v.disks ? "disks" : "domain", `no disk of domain '${dom.name}' would be in the checkpoint`);
    if (v.quiesce && isQemu(probe)) {
        fail("quiesce", checkpointSays.noQuiesce(lib));
    }
    if (failures.length) return { failures };
    const spec: CheckpointSpec = { name: v.checkpointName, description: v.description, disks };
    return {
        plan: { spec, xml: buildCheckpointXml(spec), argv: ["checkpoint-create", "--domain", dom.uuid, "--xmlfile", "/dev/stdin"] },
        failures,
    };
}

// ---- reading a checkpoint back ------------------------------------------------

interface Observed {
    /** From the plain XML (with its domain). */
    info: CheckpointInfo;
    xml: string;
    /** Per disk dirty bytes; undefined when not measured (domain not running). */
    sizes?: Map<string, number | null>;
    lineage: KeptCheckpoint[];
    /** What is wrong with the bitmaps, as the host shows it; null when it can't tell. */
    bitmapProblems: string[] | null;
}

async function dumpXml(virsh: Virsh, domain: string, name: string, extra: string[] = []): Promise<string> {
    return virsh.run(["checkpoint-dumpxml", "--domain", domain, "--checkpointname", name, ...extra]);
}

async function observe(
    virsh: Virsh,
    domain: string,
    name: string,
    opts: { measure: boolean; version: LibvirtVersion; probe?: DomainProbe },
): Promise<Observed> {
    const [xml, sized] = await Promise.all([
        dumpXml(virsh, domain, name),
        opts.measure
            ? dumpXml(virsh, domain, name, ["--size", "--no-domain"]).catch((e) => {
                  if (notRunning(e)) return undefined;
                  throw e;
              })
            : Promise.resolve(undefined),
    ]);
    const info = parseCheckpointXml(xml);
    let sizes: Map<string, number | null> | undefined;
    if (sized !== undefined) {
        sizes = new Map();
        for (const d of parseCheckpointXml(sized).disks) if (d.checkpoint === "bitmap") sizes.set(d.name, d.size ?? null);
    }
    let bitmapProblems: string[] | null = null;
    if (sizes) bitmapProblems = sizedBitmapProblems(info, sizes);
    else if (opts.probe && !opts.probe.active) {
        // Shut off: the images themselves, read with qemu-img info -U (never through qemu's monitor).
        bitmapProblems = await bitmapsMissingOffline(virsh, opts.probe, info).catch(() => null);
    }
    return { info, xml, sizes, lineage: await lineageOf(virsh, domain, info.parent, opts.version), bitmapProblems };
}

/** While the domain runs, `checkpoint-dumpxml --size` gives no size for a bitmap that is missing or broken. */
function sizedBitmapProblems(info: CheckpointInfo, sizes: Map<string, number | null>): string[] {
    return info.disks
        .filter((d) => d.checkpoint === "bitmap" && (sizes.get(d.name) ?? null) === null)
        .map((d) => `bitmap '${d.bitmap ?? info.name}' of disk ${d.name} is missing or broken (libvirt can't measure it)`);
}

/** The ancestors' XML, oldest first. Without <domain> where libvirt allows it, to keep the state small. */
async function lineageOf(virsh: Virsh, domain: string, parent: string | undefined, version: LibvirtVersion): Promise<KeptCheckpoint[]> {
    const out: KeptCheckpoint[] = [];
    const seen = new Set<string>();
    for (let p = parent; p !== undefined && !seen.has(p) && seen.size < 1000;) {
        seen.add(p);
        let xml: string;
        try {
            xml = await dumpXml(virsh, domain, p, version.number >= VERSIONS.checkpointWithoutDomain ? ["--no-domain"] : []);
        } catch (e) {
            if (isKind(e, "checkpoint-not-found")) break; // deleted meanwhile: the chain ends here
            throw e;
        }
        out.unshift({ name: p, xml });
        p = parseCheckpointXml(xml).parent;
    }
    return out;
}

function disksFrom(o: Observed, previous?: CheckpointDiskState[]): CheckpointDiskState[] {
    return o.info.disks.map((d) => {
        const mode = d.checkpoint === "no" ? "no" : "bitmap";
        const before = previous?.find((p) => p.name === d.name)?.changedBytes ?? null;
        return {
            name: d.name,
            checkpoint: mode,
            bitmap: mode === "bitmap" ? (d.bitmap ?? o.info.name) : null,
            changedBytes: mode === "no" ? null : o.sizes ? (o.sizes.get(d.name) ?? null) : before,
        };
    });
}

function outputsFrom(
    v: Inputs,
    o: Observed,
    version: string,
    extra: { probe: DomainProbe; adopted: boolean; restoredAt: string | null; previous?: Recorded },
): Recorded {
    const c = o.info;
    const disks = disksFrom(o, extra.previous?.disks);
    const measured = disks.filter((d) => d.changedBytes !== null);
    return {
        ...(v.connection ? { connection: v.connection } : {}),
        domain: v.domain,
        checkpointName: c.name,
        ...(c.description !== undefined ? { description: c.description } : {}),
        deletion: v.deletion,
        domainName: extra.probe.info.name,
        domainUuid: extra.probe.info.uuid,
        creationTime: new Date(c.creationTime * 1000).toISOString(),
        parent: c.parent ?? null,
        disks,
        // Not measurable at all (every bitmap missing or broken): null, never a reassuring 0.
        changedBytes: o.sizes
            ? measured.length
                ? measured.reduce((n, d) => n + d.changedBytes!, 0)
                : null
            : (extra.previous?.changedBytes ?? null),
        changedBytesAt: o.sizes ? new Date().toISOString() : (extra.previous?.changedBytesAt ?? null),
        xml: o.xml,
        lineage: o.lineage,
        libvirtVersion: version,
        adopted: extra.adopted,
        recordLost: false,
        restoredAt: extra.restoredAt,
        bitmapsHealthy: o.bitmapProblems === null ? null : o.bitmapProblems.length === 0,
        bitmapProblems: o.bitmapProblems ?? [],
        declared: withoutConnection(v),
    };
}

/** How an existing checkpoint differs from the plan; empty when adopting is safe. */
function differences(plan: CheckpointPlan, c: CheckpointInfo): string[] {
    const out: string[] = [];
    for (const d of plan.spec.disks) {
        const have = c.disks.find((x) => x.name === d.name);
        const mode = have?.checkpoint ?? "no";
        if (mode !== d.checkpoint) out.push(`disk ${d.name} is '${mode}', declared '${d.checkpoint}'`);
        else if (d.checkpoint === "bitmap" && (have?.bitmap ?? c.name) !== d.bitmap)
            out.push(`disk ${d.name} uses bitmap '${have?.bitmap}', declared '${d.bitmap}'`);
    }
    for (const have of c.disks) {
        if (have.checkpoint === "bitmap" && !plan.spec.disks.some((d) => d.name === have.name))
            out.push(`disk ${have.name} is 'bitmap', declared 'no'`);
    }
    return out;
}

// ---- the provider ------------------------------------------------------------

async function hostCaps(virsh: Virsh): Promise<HostCaps> {
    try {
        const out = await virsh.query(["domcapabilities"]);
        const m = /<backup supported='(yes|no)'/.exec(out);
        return { backup: m ? (m[1] as "yes" | "no") : "unknown" };
    } catch {
        return { backup: "unknown" }; // the other checks still run; create reports what libvirt says
    }
}

export const domainCheckpoint = {
    check(olds: Record<string, unknown>, news: Record<string, unknown>): Promise<pulumi.dynamic.CheckResult> {
        return checkInputs(DomainCheckpointSchema, olds, news, {
            planKeys: DomainCheckpointSpec.checkedKeys,
            createKeys: DomainCheckpointSpec.createKeys,
            ask: (v) =>
                askAboutDomain(v, "the checkpoint", async (virsh, probe) => planCheckpoint(v, probe, await hostCaps(virsh)).failures),
        });
    },

    async diff(_id: string, olds: Recorded, news: Record<string, unknown>): Promise<pulumi.dynamic.DiffResult> {
        const { v, replaces, updates, credentialsChanged } = compareInputs(DomainCheckpointSchema, olds, news, {
            replace: DomainCheckpointSpec.replaceKeys,
            update: DomainCheckpointSpec.updateKeys,
        });

        // A checkpoint whose record libvirt lost while its bitmaps are still there is an update: it gives the record
        // back. Only one whose bitmaps are gone is planned anew. Only read here: preview changes nothing.
        // Outputs without the XML come from a create that was cut off (an init failure): update checks the host and finishes it.
        const partial = !olds.xml;
        let recordLost = false;
        if (!replaces.length && !partial && olds.domainUuid && olds.checkpointName) {
            const virsh = virshFor({ connection: olds.connection, timeoutSeconds: olds.declared?.timeoutSeconds });
            try {
                // The same name on the same connection is the same domain, even defined again under a new UUID.
                const at = await locateCheckpoint(virsh, olds);
                if (!at) replaces.push("domain");
                else if (at.record.status === "gone" || (at.record.status === "restorable" && goneForGood(olds)))
                    replaces.push("checkpointName");
                recordLost = at?.record.status === "restorable";
            } catch (e) {
                if (isKind(e, "domain-not-found")) replaces.push("domain");
                // An unreachable host is not a diff: the operation that needs the host reports it.
            }
        }
        return {
            changes: replaces.length > 0 || updates.length > 0 || credentialsChanged || partial || recordLost,
            replaces,
            // The replacement would have the same name on the same domain: the old one must go first.
            deleteBeforeReplace: replacesInPlace(replaces, olds, v.domain, olds.checkpointName === v.checkpointName),
        };
    },

    async create(news: Record<string, unknown>): Promise<pulumi.dynamic.CreateResult> {
        const v = parseOrThrow(DomainCheckpointSchema, news);
        const virsh = virshFor(v);
        return withDomainLock(lockKey(v), async () => {
            const outs = await createLocked(v, virsh, makerMark(news, v.checkpointName));
            return { id: `${outs.domainUuid}/${outs.checkpointName}`, outs };
        });
    },

    async read(id: string, props: Recorded): Promise<pulumi.dynamic.ReadResult> {
        const virsh = virshFor(props);
        // No domain lock, as in DomainSnapshot's read: nothing here writes, and a --size query that meets a job of
        // another resource on this domain waits in the runner's busy retry, as it would for any other process.
        let probe: DomainProbe;
        try {
            probe = await probeRecordedDomain(virsh, props);
        } catch (e) {
            // Gone from the host: an empty id makes refresh drop the resource.
            if (isKind(e, "domain-not-found")) return { id: "", props: {} };
            throw e;
        }
        // Only reads, as DomainSnapshot's read: a lost record is kept (recordLost) and given back by the next update.
        const record = await checkpointRecord(virsh, probe, props, { restore: false });
        if (record.status === "gone") return { id: "", props: {} };
        // Whether its bitmaps are healthy can't be told while libvirt has no record of it.
        if (record.status === "restorable") return { id, props: { ...props, ...lostFor(probe), bitmapsHealthy: null } };
        const v = { ...props.declared, connection: props.connection } as Inputs;
        const observed = await observe(virsh, probe.info.uuid, props.checkpointName, {
            measure: probe.active,
            version: probe.version,
            probe,
        });
        return {
            id,
            props: outputsFrom(v, observed, probe.version.libvirt, {
                probe,
                adopted: props.adopted,
                restoredAt: props.restoredAt ?? null,
                previous: props,
            }),
        };
    },

    async update(_id: string, olds: Recorded, news: Record<string, unknown>): Promise<pulumi.dynamic.UpdateResult> {
        const v = parseOrThrow(DomainCheckpointSchema, news);
        const virsh = virshFor(v);
        return withDomainLock(lockKey(v), async () => {
            const probe = await probeRecordedDomain(virsh, olds);
            // A record libvirt lost (the domain was defined again, perhaps under a new UUID) is given back from the state.
            const restored = await checkpointRecord(virsh, probe, olds, { restore: true });
            // An earlier create was cut off before libvirt made the checkpoint (an init failure): finish the job.
            if (restored.status === "gone" && !olds.xml) return { outs: await createLocked(v, virsh, makerMark(news, v.checkpointName)) };
            if (restored.status === "gone") {
                // Kept as an init failure: the state learns that the bitmaps are gone (only this write could tell, on a
                // running domain), so the next diff plans a new checkpoint instead of this update again.
                const message = checkpointSays.goneForGood(olds.checkpointName, probe.info.name, restored.reason);
                const properties = { ...olds, ...lostFor(probe), bitmapsHealthy: false, bitmapProblems: [restored.reason] };
                throw initFailure(new LibvirtError("checkpoint-not-found", message), { id: _id, properties });
            }
            if (!same(olds.description, v.description))
                await redefineDescription(virsh, "checkpoint", probe.info.uuid, olds.checkpointName, v.description);
            const observed = await observe(virsh, probe.info.uuid, olds.checkpointName, {
                measure: probe.active,
                version: probe.version,
                probe,
            });
            const restoredAt = restored.status === "restored" ? new Date().toISOString() : (olds.restoredAt ?? null);
            return { outs: outputsFrom(v, observed, probe.version.libvirt, { probe, adopted: olds.adopted, restoredAt, previous: olds }) };
        });
    },

    async delete(_id: string, props: Recorded): Promise<void> {
        const virsh = virshFor(props);
        const name = props.checkpointName;
        await withDomainLock(lockKey(props), async () => {
            let probe: DomainProbe;
            try {
                probe = await probeRecordedDomain(virsh, props);
            } catch (e) {
                if (isKind(e, "domain-not-found")) return; // the domain is gone, and its checkpoints with it
                throw e;
            }
            const domain = probe.info.uuid;
            const exists = (await listCheckpoints(virsh, domain)).includes(name);
            if (props.deletion === "metadata") {
                if (exists) await virsh.run(["checkpoint-delete", "--domain", domain, "--checkpointname", name, "--metadata"]);
                return;
            }
            if (!probe.active) {
                // A lost record whose bitmaps are gone too is already deleted; anything else needs a running domain.
                if (!exists && props.xml) {
                    const missing = await bitmapsMissingOffline(virsh, probe, parseCheckpointXml(props.xml));
                    if (missing.length) return;
                } else if (!exists) return;
                throw new LibvirtError("unsupported", checkpointSays.deleteWhileOff(name, probe));
            }
            if (!exists) {
                // libvirt lost the record: put it back so the bitmaps are removed, not leaked.
                const restored = await checkpointRecord(virsh, probe, props, { restore: true });
                if (restored.status === "gone") return; // already gone
            }
            await deleteCheckpoint(virsh, domain, name);
        });
    },
};

/** Libvirt lost the record; the data may be there. Outputs name the domain as it is now. */
function lostFor(probe: DomainProbe): Pick<Recorded, "domainName" | "domainUuid" | "recordLost"> {
    return { domainName: probe.info.name, domainUuid: probe.info.uuid, recordLost: true };
}

/** An update found the record lost and libvirt refused it back: its bitmaps are gone, so only a new checkpoint helps. */
function goneForGood(olds: Recorded): boolean {
    return olds.recordLost === true && olds.bitmapsHealthy === false;
}

/** Create the checkpoint and read it back (the caller holds the domain's lock). */
async function createLocked(v: Inputs, virsh: Virsh, mark: MakerMark | undefined): Promise<Recorded> {
    const [probe, caps] = await Promise.all([probeDomain(virsh, v.domain), hostCaps(virsh)]);
    const { plan, failures } = planCheckpoint(v, probe, caps);
    if (!plan) throw new InputError(failures);
    const domain = probe.info.uuid;
    const cutOff = (e: unknown, what: string) =>
        unknownOutcome(e, {
            kind: "checkpoint",
            name: v.checkpointName,
            domainName: probe.info.name,
            id: `${domain}/${v.checkpointName}`,
            what,
            partial: {
                ...(v.connection ? { connection: v.connection } : {}),
                domain: v.domain,
                checkpointName: v.checkpointName,
                deletion: v.deletion,
                domainName: probe.info.name,
                domainUuid: domain,
                libvirtVersion: probe.version.libvirt,
                adopted: false,
                restoredAt: null,
                declared: withoutConnection(v),
            } satisfies Partial<Recorded>,
        });
    let adopted = false;
    try {
        await withMakerMark(virsh, { uuid: domain, active: probe.active }, mark, () => virsh.run(plan.argv, { stdin: plan.xml }));
    } catch (e) {
        if (e instanceof LibvirtError && /Bitmap already exists/i.test(e.message)) {
            throw failureInsteadOf("already-exists", checkpointSays.staleBitmap(probe.info.name, v.checkpointName), e, { exitCode: false });
        }
        if (!(isKind(e, "already-exists") && /domain moment .* already exists/.test(e.message))) {
            throw cutOff(e, "the create was cut off") ?? (await explainFailedCreate(virsh, "checkpoint", domain, v.checkpointName, e));
        }
        const { own } = await adoptOrRefuse(virsh, {
            kind: "checkpoint",
            name: v.checkpointName,
            domain,
            domainName: probe.info.name,
            adopt: v.adopt,
            description: v.description,
            mark,
            error: e,
            existing: async () => {
                const c = parseCheckpointXml(await dumpXml(virsh, domain, v.checkpointName));
                return { description: c.description, differences: differences(plan, c), makerMark: c.domain?.makerMark };
            },
        });
        adopted = !own;
    }
    let observed: Observed;
    try {
        observed = await observe(virsh, domain, v.checkpointName, { measure: true, version: probe.version, probe });
    } catch (e) {
        throw (
            cutOff(e, `the checkpoint was ${adopted ? "adopted" : "created"}, but reading it back failed`) ??
            new LibvirtError(
                "failed",
                checkpointSays.readBackFailed(v.checkpointName, adopted ? "adopted" : "created", probe.info.name, messageOf(e)),
            )
        );
    }
    return outputsFrom(v, observed, probe.version.libvirt, { probe, adopted, restoredAt: null });
}
