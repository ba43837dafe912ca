// DomainSnapshot: the whole life of one libvirt snapshot.
//   inputs (zod) → plan (XML + virsh flags, checked against the live domain)
//   → virsh snapshot-create → read back (snapshot-dumpxml, snapshot-info) → outputs
// Preview (check/diff) only reads from the host.
import * as path from "node:path";
import type * as pulumi from "@pulumi/pulumi";
import { z } from "zod";
import { ConnectionSchema, describeTarget, type Connection } from "./connection";
import { LibvirtError, isKind, messageOf } from "./errors";
import { probeDomain, VERSIONS, type DomainProbe } from "./host";
import { InputError, domainRef, description, failuresOf, hostPath, momentName, parseInputs, timeoutSeconds, type CheckFailure } from "./inputs";
import { withDomainLock } from "./locks";
import { Virsh } from "./virsh";
import { buildSnapshotXml, parseSnapshotXml, snapshotRecordXml, withDescription, type SnapshotInfo, type SnapshotSpec } from "./xml";
import { compareInputs, lockKey, parseOrThrow, same, sameDomain, virshFor, withoutConnection } from "./resource";

// ---- inputs ----------------------------------------------------------------

const diskMode = z.enum(["internal", "external", "no"], { error: "must be 'internal', 'external' or 'no'" });

export const DiskSchema = z.strictObject({
    name: z.string({ error: "must be a string (a disk target such as vda, or its source path)" }).min(1, { error: "must not be empty" }),
    snapshot: diskMode,
    file: hostPath.optional(),
    driverType: z.enum(["qcow2", "raw", "qed"], { error: "must be 'qcow2', 'raw' or 'qed'" }).optional(),
});

export const DomainSnapshotSchema = z.strictObject({
    connection: ConnectionSchema.optional(),
    domain: domainRef,
    snapshotName: momentName("snapshot"),
    description: description.optional(),
    kind: z.enum(["internal", "external"], { error: "must be 'internal' or 'external'" }).default("internal"),
    memory: z.enum(["none", "internal", "external"], { error: "must be 'none' (disk only), 'internal' or 'external'" }).optional(),
    memoryFile: hostPath.optional(),
    disks: z.array(DiskSchema, { error: "must be a list of { name, snapshot, file?, driverType? }" }).optional(),
    quiesce: z.boolean({ error: "must be true or false" }).default(false),
    atomic: z.boolean({ error: "must be true or false" }).default(true),
    live: z.boolean({ error: "must be true or false" }).default(false),
    halt: z.boolean({ error: "must be true or false" }).default(false),
    deletion: z.enum(["delete", "metadata"], { error: "must be 'delete' (merge the data into the child) or 'metadata' (keep the data)" }).default("delete"),
    adopt: z.boolean({ error: "must be true or false" }).default(false),
    timeoutSeconds: timeoutSeconds.optional(),
}).superRefine((v, ctx) => {
    if (v.memoryFile !== undefined && v.memory !== "external") {
        ctx.addIssue({ code: "custom", path: ["memoryFile"], message: "is only used with memory: 'external'" });
    }
    const seen = new Set<string>();
    v.disks?.forEach((d, i) => {
        if (seen.has(d.name)) ctx.addIssue({ code: "custom", path: ["disks", i, "name"], message: `names disk '${d.name}' twice` });
        seen.add(d.name);
        if (d.file !== undefined && d.snapshot !== "external") ctx.addIssue({ code: "custom", path: ["disks", i, "file"], message: "is only used with snapshot: 'external' (an overlay file)" });
        if (d.driverType !== undefined && d.snapshot !== "external") ctx.addIssue({ code: "custom", path: ["disks", i, "driverType"], message: "is only used with snapshot: 'external'" });
    });
});

/** What a user may pass: the schema's input type. */
export type DomainSnapshotInputs = z.input<typeof DomainSnapshotSchema>;
type Inputs = z.infer<typeof DomainSnapshotSchema>;

/** What the resource records and exposes. */
export interface DomainSnapshotOutputs {
    connection?: Connection;
    domain: string;
    snapshotName: string;
    description?: string;
    /** What libvirt made: internal, or external (overlay files). */
    kind: "internal" | "external";
    memory: "none" | "internal" | "external";
    memoryFile?: string;
    deletion: "delete" | "metadata";
    domainName: string;
    domainUuid: string;
    /** ISO 8601, from libvirt's creationTime. */
    creationTime: string;
    /** The domain's state when the snapshot was taken: running, shutoff, disk-snapshot... */
    state: string;
    parent: string | null;
    isCurrent: boolean;
    /** Overlay file per disk, for external snapshots. */
    diskFiles: Record<string, string>;
    libvirtVersion: string;
    /** True when this resource took over an existing snapshot instead of creating it. */
    adopted: boolean;
    /** The validated inputs as declared (defaults applied), for diff. */
    declared: Omit<Inputs, "connection">;
}

// ---- plan ------------------------------------------------------------------

export interface Plan {
    spec: SnapshotSpec;
    xml: string;
    flags: string[];
    memory: "none" | "internal" | "external";
    kind: "internal" | "external";
}

function isWritableDisk(d: DomainProbe["info"]["disks"][number]): boolean {
    return d.device === "disk" && !d.readonly;
}

function defaultMemoryFile(probe: DomainProbe, snapshotName: string): string | undefined {
    const first = probe.info.disks.find((d) => isWritableDisk(d) && d.source?.startsWith("/"));
    if (!first?.source) return undefined;
    const safe = snapshotName.replace(/[^A-Za-z0-9._-]/g, "_");
    return path.posix.join(path.posix.dirname(first.source), `${probe.info.name.replace(/[^A-Za-z0-9._-]/g, "_")}.${safe}.mem`);
}

/**
 * Decide the snapshot XML and flags, or say exactly why this domain and this
 * libvirt can't take it. Used by check (as failures) and by create (thrown).
 */
export function planSnapshot(v: Inputs, probe: DomainProbe): { plan?: Plan; failures: CheckFailure[] } {
    const failures: CheckFailure[] = [];
    const fail = (property: string, reason: string) => failures.push({ property, reason });
    const dom = probe.info;
    const running = probe.active;

    // Per-disk mode: explicit override, else the kind; cdroms and read-only disks are left to libvirt.
    const overrides = new Map<string, number>();
    v.disks?.forEach((d, i) => {
        const disk = dom.disks.find((x) => x.target === d.name || x.source === d.name);
        if (!disk) fail(`disks[${i}].name`, `domain '${dom.name}' has no disk '${d.name}' (its disks: ${dom.disks.map((x) => x.target).join(", ") || "none"})`);
        else overrides.set(disk.target, i);
    });
    const disks: SnapshotSpec["disks"] = [];
    for (const d of dom.disks) {
        const i = overrides.get(d.target);
        const o = i === undefined ? undefined : v.disks![i]!;
        if (!o && !isWritableDisk(d)) continue;
        const mode = o?.snapshot ?? v.kind;
        const prop = i === undefined ? "kind" : `disks[${i}].snapshot`;
        if (mode === "internal" && d.format !== "qcow2") {
            fail(prop, `an internal snapshot lives inside a qcow2 image, but disk ${d.target} (${d.source ?? d.type}) is ${d.format ?? "of unknown format"}. ` +
                `Use kind: 'external', or leave the disk out with disks: [{ name: '${d.target}', snapshot: 'no' }]`);
        }
        disks.push({ name: d.target, snapshot: mode, ...(o?.file ? { file: o.file } : {}), ...(o?.driverType ? { driverType: o.driverType } : {}) });
    }
    const modes = new Set(disks.map((d) => d.snapshot).filter((m) => m !== "no"));
    if (modes.size === 0) fail(v.disks ? "disks" : "kind", `no disk of domain '${dom.name}' would be snapshotted`);
    if (modes.has("internal") && modes.has("external")) {
        fail("disks", `libvirt ${probe.version.libvirt} cannot mix internal and external disk snapshots in one snapshot`);
    }
    const kind: "internal" | "external" = modes.has("external") ? "external" : "internal";

    // Memory: saved by default while the domain runs, in the same place as the disks.
    const memory = v.memory ?? (running ? (kind === "internal" ? "internal" : "external") : "none");
    const memProp = v.memory ? "memory" : "kind";
    if (memory !== "none" && !running) {
        fail("memory", `domain '${dom.name}' is ${probe.state}, so there is no memory state to save. Use memory: 'none', or leave memory unset`);
    }
    if (running && memory === "none" && kind === "internal") {
        fail(memProp, `libvirt can't take a disk-only internal snapshot of a running domain ('active qemu domains require external disk snapshots'). ` +
            `Use memory: 'internal', or kind: 'external'`);
    }
    if (memory === "external" && kind === "internal") {
        fail(memProp, `libvirt ${probe.version.libvirt} does not support internal disk snapshots with an external memory file ('mixing internal and external targets'). Use memory: 'internal', or kind: 'external'`);
    }
    if (memory === "internal" && kind === "external") {
        fail(memProp, `libvirt ${probe.version.libvirt} can't save memory inside the disk image when the disks are external. Use memory: 'external' with memoryFile, or memory: 'none'`);
    }
    let memoryFile: string | undefined;
    if (memory === "external") {
        memoryFile = v.memoryFile ?? defaultMemoryFile(probe, v.snapshotName);
        if (!memoryFile) fail("memoryFile", "is required with memory: 'external' when the domain has no file-backed disk to put it beside");
    }
    if (v.quiesce) {
        if (!running) fail("quiesce", `domain '${dom.name}' is ${probe.state}: quiescing needs a running guest agent`);
        else if (dom.guestAgent !== "connected") {
            fail("quiesce", dom.guestAgent === "none"
                ? `domain '${dom.name}' has no QEMU guest agent channel, so its filesystems can't be frozen. Add a guest agent, or set quiesce: false`
                : `the QEMU guest agent of domain '${dom.name}' is not connected. Start qemu-guest-agent in the guest, or set quiesce: false`);
        }
        if (memory !== "none") fail("quiesce", "libvirt quiesces only disk-only snapshots: set memory: 'none' (with kind: 'external' on a running domain)");
    }
    if (v.live && !(running && memory === "external" && kind === "external")) {
        fail("live", "live snapshots are only possible for full-system external snapshots of a running domain (kind: 'external', memory: 'external')");
    }
    if (v.halt && !running) fail("halt", `domain '${dom.name}' is already ${probe.state}`);
    if (probe.checkpointsWhileOff.length) {
        fail("domain", `domain '${dom.name}' is ${probe.state} and has checkpoints (${probe.checkpointsWhileOff.join(", ")}): libvirt ${probe.version.libvirt} takes no snapshot of it then ` +
            `('cannot perform block operations while checkpoint exists'). Take the snapshot while the domain runs, or delete its checkpoints first`);
    }
    if (kind === "external" && v.deletion === "delete" && probe.version.number < VERSIONS.externalSnapshotDelete) {
        fail("kind", `libvirt ${probe.version.libvirt} can't delete external snapshots (9.0 or newer can), so pulumi destroy would fail. Use deletion: 'metadata', or kind: 'internal'`);
    }
    if (failures.length) return { failures };

    const spec: SnapshotSpec = {
        name: v.snapshotName,
        description: v.description,
        memory: { snapshot: memory === "none" ? "no" : memory, ...(memoryFile ? { file: memoryFile } : {}) },
        disks,
    };
    const flags: string[] = [];
    if (memory === "none" && (running || kind === "external")) flags.push("--disk-only");
    if (v.atomic) flags.push("--atomic");
    if (v.quiesce) flags.push("--quiesce");
    if (v.live) flags.push("--live");
    if (v.halt) flags.push("--halt");
    return { plan: { spec, xml: buildSnapshotXml(spec), flags, memory, kind }, failures };
}

// ---- reading a snapshot back ------------------------------------------------

export interface Observed { info: SnapshotInfo; isCurrent: boolean; children: number; }

export async function observe(virsh: Virsh, domain: string, name: string): Promise<Observed> {
    const [xml, info] = await Promise.all([
        virsh.run(["snapshot-dumpxml", "--domain", domain, "--snapshotname", name]),
        virsh.run(["snapshot-info", "--domain", domain, "--snapshotname", name]),
    ]);
    return {
        info: parseSnapshotXml(xml),
        isCurrent: /^Current:\s+yes/m.test(info),
        children: Number(/^Children:\s+(\d+)/m.exec(info)?.[1] ?? 0),
    };
}

export function kindOf(s: SnapshotInfo): "internal" | "external" {
    return s.memory.snapshot === "external" || s.disks.some((d) => d.snapshot === "external") ? "external" : "internal";
}

export function memoryOf(s: SnapshotInfo): "none" | "internal" | "external" {
    return s.memory.snapshot === "no" ? "none" : s.memory.snapshot === "external" ? "external" : "internal";
}

function outputsFrom(v: Inputs, o: Observed, version: string, adopted: boolean): DomainSnapshotOutputs {
    const s = o.info;
    const diskFiles: Record<string, string> = {};
    for (const d of s.disks) if (d.snapshot === "external" && d.file) diskFiles[d.name] = d.file;
    return {
        ...(v.connection ? { connection: v.connection } : {}),
        domain: v.domain,
        snapshotName: s.name,
        ...(s.description !== undefined ? { description: s.description } : {}),
        kind: kindOf(s),
        memory: memoryOf(s),
        ...(s.memory.file ? { memoryFile: s.memory.file } : {}),
        deletion: v.deletion,
        domainName: s.domain?.name ?? "",
        domainUuid: s.domain?.uuid ?? "",
        creationTime: new Date(s.creationTime * 1000).toISOString(),
        state: s.state,
        parent: s.parent ?? null,
        isCurrent: o.isCurrent,
        diskFiles,
        libvirtVersion: version,
        adopted,
        declared: withoutConnection(v),
    };
}

/** How an existing snapshot differs from the plan; empty when adopting is safe. */
function differences(plan: Plan, s: SnapshotInfo): string[] {
    const out: string[] = [];
    if (kindOf(s) !== plan.kind) out.push(`kind is '${kindOf(s)}', declared '${plan.kind}'`);
    if (memoryOf(s) !== plan.memory) out.push(`memory is '${memoryOf(s)}', declared '${plan.memory}'`);
    if (plan.spec.memory.file && s.memory.file !== plan.spec.memory.file) out.push(`memoryFile is '${s.memory.file ?? "none"}', declared '${plan.spec.memory.file}'`);
    for (const d of plan.spec.disks) {
        const have = s.disks.find((x) => x.name === d.name);
        const mode = have?.snapshot ?? "no";
        if (mode !== d.snapshot) out.push(`disk ${d.name} is '${mode}', declared '${d.snapshot}'`);
        if (d.file && have?.file !== d.file) out.push(`disk ${d.name} overlay is '${have?.file ?? "none"}', declared '${d.file}'`);
    }
    return out;
}

// ---- the provider ------------------------------------------------------------

/** Operations on one domain of one host queue behind each other (by name or UUID as given). */
export const REPLACE_KEYS = ["domain", "snapshotName", "kind", "disks", "memory", "memoryFile", "quiesce", "atomic", "live"] as const;

const UPDATE_KEYS = ["description", "deletion", "adopt", "timeoutSeconds", "halt"] as const;

export const domainSnapshot = {
    async check(_olds: Record<string, unknown>, news: Record<string, unknown>): Promise<pulumi.dynamic.CheckResult> {
        const r = parseInputs(DomainSnapshotSchema, news, { allowUnknowns: true });
        if (!r.ok) return { inputs: news, failures: r.failures };
        if (r.hasUnknowns) return { inputs: news };
        const v = r.value;
        let virsh: Virsh;
        try { virsh = virshFor(v); } catch (e) { if (e instanceof InputError) return { inputs: news, failures: e.failures }; throw e; }
        let probe: DomainProbe;
        try {
            probe = await probeDomain(virsh, v.domain);
        } catch (e) {
            if (isKind(e, "domain-not-found")) return { inputs: news, failures: [{ property: "domain", reason: `no domain '${v.domain}' on ${virsh.where}` }] };
            return { inputs: news, failures: [{ property: "connection", reason: `cannot check the snapshot against ${virsh.where}: ${messageOf(e)}` }] };
        }
        const { failures } = planSnapshot(v, probe);
        return { inputs: news, failures };
    },

    async diff(_id: string, olds: DomainSnapshotOutputs, news: Record<string, unknown>): Promise<pulumi.dynamic.DiffResult> {
        const { v, replaces, updates, credentialsChanged } = compareInputs(DomainSnapshotSchema, olds, news, { replace: REPLACE_KEYS, update: UPDATE_KEYS });

        // A snapshot deleted behind Pulumi's back is planned for re-creation now, rather than failing later.
        if (!replaces.length && olds.domainUuid && olds.snapshotName) {
            try {
                await virshFor({ connection: olds.connection, timeoutSeconds: olds.declared?.timeoutSeconds })
                    .run(["snapshot-info", "--domain", olds.domainUuid, "--snapshotname", olds.snapshotName], { timeoutMs: 60_000 });
            } catch (e) {
                if (isKind(e, "snapshot-not-found") || isKind(e, "domain-not-found")) replaces.push("snapshotName");
                // An unreachable host is not a diff: the operation that needs the host reports it.
            }
        }
        const sameSpot = !replaces.includes("connection") && typeof v.domain === "string" && sameDomain(olds, v.domain) && olds.snapshotName === v.snapshotName;
        return {
            changes: replaces.length > 0 || updates.length > 0 || credentialsChanged,
            replaces,
            // The replacement would have the same name on the same domain: the old one must go first.
            deleteBeforeReplace: replaces.length > 0 && sameSpot,
        };
    },

    async create(news: Record<string, unknown>): Promise<pulumi.dynamic.CreateResult> {
        const v = parseOrThrow(DomainSnapshotSchema, news);
        const virsh = virshFor(v);
        return withDomainLock(lockKey(v), async () => {
            const outs = await createLocked(v, virsh);
            return { id: `${outs.domainUuid}/${outs.snapshotName}`, outs };
        });
    },

    async read(id: string, props: DomainSnapshotOutputs): Promise<pulumi.dynamic.ReadResult> {
        const virsh = virshFor(props);
        const domain = props.domainUuid || props.domain;
        try {
            const observed = await observe(virsh, domain, props.snapshotName);
            const v = { ...props.declared, connection: props.connection } as Inputs;
            return { id, props: outputsFrom(v, observed, (await virsh.version()).libvirt, props.adopted) };
        } catch (e) {
            // Gone from the host: an empty id makes refresh drop the resource.
            if (isKind(e, "snapshot-not-found") || isKind(e, "domain-not-found")) return { id: "", props: {} };
            throw e;
        }
    },

    async update(_id: string, olds: DomainSnapshotOutputs, news: Record<string, unknown>): Promise<pulumi.dynamic.UpdateResult> {
        const v = parseOrThrow(DomainSnapshotSchema, news);
        const virsh = virshFor(v);
        return withDomainLock(lockKey(v), async () => {
            const domain = olds.domainUuid;
            let observed: Observed;
            try {
                observed = await observe(virsh, domain, olds.snapshotName);
            } catch (e) {
                // An earlier create was cut off before libvirt made the snapshot (an init failure): finish the job.
                if (isKind(e, "snapshot-not-found")) return { outs: await createLocked(v, virsh) };
                throw e;
            }
            if (!same(observed.info.description, v.description)) {
                await redefineDescription(virsh, domain, olds.snapshotName, v.description);
                observed = await observe(virsh, domain, olds.snapshotName);
            }
            return { outs: outputsFrom(v, observed, (await virsh.version()).libvirt, olds.adopted) };
        });
    },

    async delete(_id: string, props: DomainSnapshotOutputs): Promise<void> {
        const virsh = virshFor(props);
        await withDomainLock(lockKey(props), async () => {
            // No creationTime: the state a cut-off create left (an init failure).
            if (!props.creationTime && props.deletion === "delete") await removeCutOffCreate(virsh, props);
            await deleteSnapshot(virsh, {
                domain: props.domainUuid || props.domain, domainName: props.domainName, snapshotName: props.snapshotName, deletion: props.deletion,
            });
        });
    },
};

/**
 * Take the snapshot and read it back (the caller holds the domain's lock).
 * When the connection is lost or a call times out, whether libvirt made the
 * snapshot is unknown: the error then carries the resource's id and what is
 * known (an init failure), so Pulumi keeps it in state and the next
 * `pulumi up` checks and finishes the job, and `pulumi destroy` can remove it.
 */
async function createLocked(v: Inputs, virsh: Virsh): Promise<DomainSnapshotOutputs> {
    const probe = await resumeAfterInterruptedSnapshot(virsh, await probeDomain(virsh, v.domain));
    const { plan, failures } = planSnapshot(v, probe);
    if (!plan) throw new InputError(failures);
    const domain = probe.info.uuid;
    const unknownOutcome = (e: unknown, what: string) => {
        if (!(isKind(e, "connection-failed") || isKind(e, "timeout"))) return e;
        const partial: Partial<DomainSnapshotOutputs> = {
            ...(v.connection ? { connection: v.connection } : {}), domain: v.domain, snapshotName: v.snapshotName, deletion: v.deletion,
            domainName: probe.info.name, domainUuid: domain, libvirtVersion: probe.version.libvirt, adopted: false, declared: withoutConnection(v),
        };
        const message = `${messageOf(e)}\n  ${what}: whether snapshot '${v.snapshotName}' of domain '${probe.info.name}' exists now is unknown. ` +
            `Pulumi keeps it in the state: the next pulumi up checks the host and finishes (or re-creates) it, and pulumi destroy removes it if it exists.`;
        return Object.assign(new LibvirtError((e as LibvirtError).kind, message), { id: `${domain}/${v.snapshotName}`, properties: partial, reasons: [message] });
    };
    let adopted = false;
    try {
        await takeSnapshot(virsh, domain, plan);
    } catch (e) {
        if (!isKind(e, "already-exists")) throw unknownOutcome(e, "the create was cut off");
        if (!v.adopt) {
            throw new LibvirtError("already-exists",
                `snapshot '${v.snapshotName}' already exists on domain '${probe.info.name}' (${virsh.where}). ` +
                `Set adopt: true to take it over, or choose another snapshotName.`, { command: e.command ?? "", stderr: e.stderr });
        }
        const existing = await observe(virsh, domain, v.snapshotName);
        const diffs = differences(plan, existing.info);
        if (diffs.length) {
            throw new LibvirtError("already-exists",
                `cannot adopt snapshot '${v.snapshotName}' of domain '${probe.info.name}': it differs from what is declared: ${diffs.join("; ")}. ` +
                `Change the declaration to match, or choose another snapshotName.`);
        }
        adopted = true;
        if (v.description !== undefined && existing.info.description !== v.description) await redefineDescription(virsh, domain, v.snapshotName, v.description);
    }
    let observed: Observed;
    try {
        observed = await observe(virsh, domain, v.snapshotName);
    } catch (e) {
        throw unknownOutcome(e, `the snapshot was ${adopted ? "adopted" : "created"}, but reading it back failed`);
    }
    return outputsFrom(v, observed, probe.version.libvirt, adopted);
}

/**
 * A domain that libvirt left paused by a snapshot or save it never finished is
 * resumed before the snapshot is taken (again). Why (issue 6, faults; measured
 * on libvirt 9.0 + qemu 7.2): libvirtd killed while qemu runs `savevm` for an
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
    const reason = (await virsh.run(["domstate", "--domain", domain, "--reason"], { timeoutMs: 60_000 })).trim();
    if (!/^paused \((saving|snapshot)\)$/.test(reason)) return probe;
    const job = await virsh.run(["domjobinfo", "--domain", domain], { timeoutMs: 60_000 });
    if (!/^Job type:\s+None\s*$/m.test(job)) return probe;
    await virsh.run(["resume", "--domain", domain]);
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
async function removeCutOffCreate(virsh: Virsh, props: DomainSnapshotOutputs): Promise<void> {
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
        await virsh.run(["snapshot-info", "--domain", domain, "--snapshotname", props.snapshotName], { timeoutMs: 60_000 });
        return; // libvirt has it: the normal delete follows
    } catch (e) {
        if (!isKind(e, "snapshot-not-found")) throw e;
    }
    // The snapshot as the declared inputs would make it now, with the memory this domain's state allows.
    const { plan } = planSnapshot({ ...props.declared, memory: undefined, memoryFile: undefined, quiesce: false, live: false, halt: false } as Inputs, probe);
    if (!plan || plan.kind !== "internal") return;
    const domainXml = await virsh.run(["dumpxml", "--domain", domain], { timeoutMs: 60_000 });
    const record = snapshotRecordXml(plan.spec, { state: probe.active ? "running" : "shutoff", creationTime: Math.floor(Date.now() / 1000), domainXml });
    await virsh.run(["snapshot-create", "--domain", domain, "--xmlfile", "/dev/stdin", "--redefine"], { stdin: record });
    try {
        await virsh.run(["snapshot-delete", "--domain", domain, "--snapshotname", props.snapshotName]);
    } catch (e) {
        if (isKind(e, "connection-failed") || isKind(e, "timeout")) throw e;
        await virsh.run(["snapshot-delete", "--domain", domain, "--snapshotname", props.snapshotName, "--metadata"]);
    }
}

/**
 * Delete one snapshot safely (the caller holds the domain's lock): never with
 * --children, which crashes libvirtd 9.0 when there are several children
 * (NOTES §3); a non-leaf external snapshot of a shut-off domain is refused
 * before anything changes; the memory file libvirt leaves behind is removed.
 * A snapshot that is already gone is deleted successfully.
 */
export async function deleteSnapshot(virsh: Virsh, t: { domain: string; domainName: string; snapshotName: string; deletion: "delete" | "metadata" }): Promise<void> {
    let observed: Observed;
    try {
        observed = await observe(virsh, t.domain, t.snapshotName);
    } catch (e) {
        if (isKind(e, "snapshot-not-found") || isKind(e, "domain-not-found")) return;
        throw e;
    }
    if (t.deletion === "metadata") {
        await virsh.run(["snapshot-delete", "--domain", t.domain, "--snapshotname", t.snapshotName, "--metadata"]);
        return;
    }
    if (kindOf(observed.info) === "external" && observed.children > 0) {
        const state = (await virsh.run(["domstate", "--domain", t.domain])).trim();
        if (state === "shut off") {
            const version = (await virsh.version()).libvirt;
            throw new LibvirtError("unsupported",
                `cannot delete external snapshot '${t.snapshotName}' of domain '${t.domainName}': the domain is shut off and the snapshot has ` +
                `${observed.children} child snapshot(s). libvirt ${version} can merge a non-leaf external snapshot only while the domain runs. ` +
                `Nothing was changed. Start the domain and run destroy again, delete the newer snapshots first, or set deletion: 'metadata' to keep the files.`);
        }
    }
    await virsh.run(["snapshot-delete", "--domain", t.domain, "--snapshotname", t.snapshotName]);
    if (observed.info.memory.snapshot === "external" && observed.info.memory.file) {
        await removeHostFile(virsh, observed.info.memory.file, `snapshot '${t.snapshotName}' was deleted, but its memory file could not be removed`);
    }
}

export async function redefineDescription(virsh: Virsh, domain: string, name: string, text: string | undefined): Promise<void> {
    const [xml, info] = await Promise.all([
        virsh.run(["snapshot-dumpxml", "--domain", domain, "--snapshotname", name, "--security-info"]),
        virsh.run(["snapshot-info", "--domain", domain, "--snapshotname", name]),
    ]);
    const current = /^Current:\s+yes/m.test(info);
    await virsh.run(["snapshot-create", "--domain", domain, "--xmlfile", "/dev/stdin", "--redefine", ...(current ? ["--current"] : [])],
        { stdin: withDescription(xml, "domainsnapshot", text) });
}

/** Run the planned snapshot-create; on failure, say whether anything was left behind. */
export async function takeSnapshot(virsh: Virsh, domain: string, plan: Plan): Promise<void> {
    try {
        await virsh.run(["snapshot-create", "--domain", domain, "--xmlfile", "/dev/stdin", ...plan.flags], { stdin: plan.xml });
    } catch (e) {
        // After a lost connection or a timeout libvirt may still be working: asking now could hang or mislead.
        if (isKind(e, "already-exists") || isKind(e, "connection-failed") || isKind(e, "timeout")) throw e;
        throw await explainFailedCreate(virsh, domain, plan.spec.name, e);
    }
}

/** After a failed create, say whether anything was left behind. */
async function explainFailedCreate(virsh: Virsh, domain: string, name: string, e: unknown): Promise<unknown> {
    if (!(e instanceof LibvirtError) || e.kind === "invalid") return e;
    try {
        await virsh.run(["snapshot-info", "--domain", domain, "--snapshotname", name], { timeoutMs: 60_000 });
        return new LibvirtError(e.kind, `${e.message}\n  libvirt still lists snapshot '${name}' after the failure; refresh, or delete it with virsh snapshot-delete before retrying`);
    } catch (probe) {
        if (isKind(probe, "snapshot-not-found")) {
            return new LibvirtError(e.kind, `${e.message.split("\n")[0]}\n  no snapshot '${name}' was left behind.` + e.message.slice(e.message.indexOf("\n")),
                { command: "", stderr: undefined });
        }
        return e;
    }
}

/** rm on the libvirt host, through the same transport (and sudo) as virsh. */
async function removeHostFile(virsh: Virsh, file: string, context: string): Promise<void> {
    const argv = [...(virsh.connection.sudo ? ["sudo", "-n"] : []), "rm", "-f", "--", file];
    const r = await virsh.transport.exec(argv, { timeoutMs: 60_000 });
    if (r.code !== 0) {
        throw new LibvirtError("failed", `${context}: ${file} (${r.stderr.trim() || `rm exited with ${r.code}`}). Remove it by hand; running destroy again is safe`,
            { command: argv.join(" "), exitCode: r.code, stderr: r.stderr });
    }
}

export { failuresOf };
export const __testing = { planSnapshot, differences, describeTarget };
