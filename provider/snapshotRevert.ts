// SnapshotRevert: rolling a domain back to a snapshot, on purpose.
//   inputs (zod) → checks against the live domain (the snapshot exists, this
//   libvirt can revert it, no checkpoint would make qemu refuse to start)
//   → virsh snapshot-revert → domstate → outputs
// Reverting throws the VM's current state away, so it is never a side effect:
// it runs on create, and again only when `triggers` (or what to revert) change.
// Preview (check) only reads from the host. Delete leaves the VM alone.
import type * as pulumi from "@pulumi/pulumi";
import { z } from "zod";
import { ConnectionSchema, type Connection } from "./connection";
import { LibvirtError, isKind, messageOf } from "./errors";
import { kindOf } from "./domainSnapshot";
import { probeDomain, stateOf, VERSIONS, type DomainProbe } from "./host";
import { InputError, domainRef, momentName, parseInputs, timeoutSeconds, type CheckFailure } from "./inputs";
import { withDomainLock } from "./locks";
import { Virsh } from "./virsh";
import { parseSnapshotXml, type SnapshotInfo } from "./xml";
import { compareInputs, containsUnknown, replacesPrevious, lockKey, parseOrThrow, virshFor, withoutConnection } from "./resource";

// ---- inputs ----------------------------------------------------------------

export const SnapshotRevertSchema = z.strictObject({
    connection: ConnectionSchema.optional(),
    domain: domainRef,
    snapshot: momentName("snapshot"),
    triggers: z.array(z.unknown(), { error: "must be a list of values; a change in any of them reverts again" }).optional(),
    afterRevert: z.enum(["running", "paused", "as-snapshotted"], { error: "must be 'running', 'paused' or 'as-snapshotted' (the state the snapshot was taken in)" }).default("as-snapshotted"),
    force: z.boolean({ error: "must be true or false" }).default(false),
    timeoutSeconds: timeoutSeconds.optional(),
});

/** What a user may pass: the schema's input type. */
export type SnapshotRevertInputs = z.input<typeof SnapshotRevertSchema>;
type Inputs = z.infer<typeof SnapshotRevertSchema>;

/** What the resource records and exposes. */
export interface SnapshotRevertOutputs {
    connection?: Connection;
    domain: string;
    snapshot: string;
    triggers?: unknown[];
    afterRevert: "running" | "paused" | "as-snapshotted";
    force: boolean;
    domainName: string;
    domainUuid: string;
    /** When the revert finished (ISO 8601). */
    revertedAt: string;
    /** The domain's state right after the revert: running, paused, shut off... */
    domainState: string;
    /** ISO 8601, the snapshot's creationTime. */
    snapshotCreationTime: string;
    libvirtVersion: string;
    /** The validated inputs as declared (defaults applied), for diff. */
    declared: Omit<Inputs, "connection">;
    /**
     * Set only in the state a cut-off revert leaves (an init failure): what the
     * domain was before, so the next `pulumi up` can tell whether libvirt reverted it.
     */
    pending?: { domainIdBefore: string; stateBefore: string; at: string };
}

// ---- checks --------------------------------------------------------------------

interface Inspection {
    probe?: DomainProbe;
    snapshot?: SnapshotInfo;
    failures: CheckFailure[];
}

/**
 * Everything that decides whether this host can do the revert, read without
 * changing anything: the domain, the snapshot, its kind, the libvirt version
 * and the domain's checkpoints. Used by check (as failures) and create (thrown).
 */
async function inspect(virsh: Virsh, v: Inputs): Promise<Inspection> {
    let probe: DomainProbe;
    try {
        probe = await probeDomain(virsh, v.domain);
    } catch (e) {
        if (isKind(e, "domain-not-found")) return { failures: [{ property: "domain", reason: `no domain '${v.domain}' on ${virsh.where}` }] };
        throw e;
    }
    const domain = probe.info.uuid;
    const [snapshotXml, checkpoints] = await Promise.all([
        virsh.run(["snapshot-dumpxml", "--domain", domain, "--snapshotname", v.snapshot], { timeoutMs: 60_000 }).catch((e) => {
            if (isKind(e, "snapshot-not-found")) return undefined;
            throw e;
        }),
        probe.version.number >= VERSIONS.checkpoints
            ? virsh.run(["checkpoint-list", "--domain", domain, "--name"], { timeoutMs: 60_000 }).then((out) => out.split("\n").map((l) => l.trim()).filter(Boolean))
            : Promise.resolve([] as string[]),
    ]);
    const failures: CheckFailure[] = [];
    if (snapshotXml === undefined) {
        const names = (await virsh.run(["snapshot-list", "--domain", domain, "--name"], { timeoutMs: 60_000 })).split("\n").map((l) => l.trim()).filter(Boolean);
        failures.push({ property: "snapshot", reason: `domain '${probe.info.name}' has no snapshot '${v.snapshot}' (${names.length ? `its snapshots: ${names.map((n) => `'${n}'`).join(", ")}` : "it has no snapshots"})` });
        return { probe, failures };
    }
    const snapshot = parseSnapshotXml(snapshotXml);
    if (kindOf(snapshot) === "external" && probe.version.number < VERSIONS.externalSnapshotRevert) {
        failures.push({ property: "snapshot", reason: `'${v.snapshot}' is an external snapshot, and libvirt ${probe.version.libvirt} can't revert to external snapshots ` +
            `('revert to external snapshot not supported yet'; libvirt 9.9 and newer can). Revert to an internal snapshot, or upgrade libvirt on the host` });
    }
    if (checkpoints.length) {
        failures.push({ property: "domain", reason: `domain '${probe.info.name}' has checkpoints (${checkpoints.map((n) => `'${n}'`).join(", ")}), and reverting a disk that carries ` +
            `dirty bitmaps fails ('Device has active dirty bitmaps'): qemu refuses to load the snapshot, and on a running domain libvirt ${probe.version.libvirt} leaves it shut off (failed). ` +
            `Nothing was changed. Delete the checkpoints first (destroy their DomainCheckpoint resources, or virsh checkpoint-delete), then revert` });
    }
    return { probe, snapshot, failures };
}

// ---- the provider ------------------------------------------------------------

/** Changing any of these means "revert (again)". */
const REPLACE_KEYS = ["domain", "snapshot", "triggers", "afterRevert"] as const;
const UPDATE_KEYS = ["force", "timeoutSeconds"] as const;

function revertFlags(v: Inputs): string[] {
    const flags: string[] = [];
    if (v.afterRevert === "running") flags.push("--running");
    if (v.afterRevert === "paused") flags.push("--paused");
    if (v.force) flags.push("--force");
    return flags;
}

export const snapshotRevert = {
    async check(olds: Record<string, unknown>, news: Record<string, unknown>): Promise<pulumi.dynamic.CheckResult> {
        const r = parseInputs(SnapshotRevertSchema, news, { allowUnknowns: true });
        if (!r.ok) return { inputs: news, failures: r.failures };
        // The snapshot is often another resource's output, unknown at the first preview: check it once it is known.
        if (["connection", "domain", "snapshot"].some((k) => containsUnknown(news[k]))) return { inputs: news };
        const v = r.value;
        // Nothing to revert (no trigger or target changed): nothing to ask the host.
        if (Object.keys(olds ?? {}).length > 0 && !containsUnknown(news.triggers) && !containsUnknown(news.afterRevert) && !replacesPrevious(SnapshotRevertSchema, olds, v, REPLACE_KEYS)) return { inputs: news };
        let virsh: Virsh;
        try { virsh = virshFor(v); } catch (e) { if (e instanceof InputError) return { inputs: news, failures: e.failures }; throw e; }
        try {
            const { failures } = await inspect(virsh, v);
            return { inputs: news, failures };
        } catch (e) {
            return { inputs: news, failures: [{ property: "connection", reason: `cannot check the revert against ${virsh.where}: ${messageOf(e)}` }] };
        }
    },

    async diff(_id: string, olds: SnapshotRevertOutputs, news: Record<string, unknown>): Promise<pulumi.dynamic.DiffResult> {
        // New credentials for the same host revert nothing: an update only records them.
        const { replaces, updates, credentialsChanged } = compareInputs(SnapshotRevertSchema, olds, news, { replace: REPLACE_KEYS, update: UPDATE_KEYS });
        return {
            changes: replaces.length > 0 || updates.length > 0 || credentialsChanged,
            replaces,
            // Delete does nothing to the VM, so the order doesn't matter: create (revert) first.
            deleteBeforeReplace: false,
        };
    },

    async create(news: Record<string, unknown>): Promise<pulumi.dynamic.CreateResult> {
        const v = parseOrThrow(SnapshotRevertSchema, news);
        const virsh = virshFor(v);
        return withDomainLock(lockKey(v), async () => {
            const outs = await revertNow(virsh, v);
            return { id: `${outs.domainUuid}/${v.snapshot}@${outs.revertedAt}`, outs };
        });
    },

    /** A revert is an event in the past: refresh keeps what it recorded, without asking the host. */
    async read(id: string, props: SnapshotRevertOutputs): Promise<pulumi.dynamic.ReadResult> {
        return { id, props };
    },

    /** Only force, timeoutSeconds or credentials changed: record them; nothing is reverted. */
    async update(_id: string, olds: SnapshotRevertOutputs, news: Record<string, unknown>): Promise<pulumi.dynamic.UpdateResult> {
        const v = parseOrThrow(SnapshotRevertSchema, news);
        // The state of a revert that was cut off (an init failure): finish it, exactly once.
        if (olds.pending) return withDomainLock(lockKey(v), async () => ({ outs: await finishCutOffRevert(virshFor(v), v, olds) }));
        const { connection: _c, ...kept } = olds;
        return {
            outs: {
                ...kept,
                ...(v.connection ? { connection: v.connection } : {}),
                force: v.force,
                declared: withoutConnection(v),
            },
        };
    },

    /** Removing the resource leaves the VM as it is. */
    async delete(_id: string, _props: SnapshotRevertOutputs): Promise<void> {
        return;
    },
};

// ---- reverting, and a revert whose outcome is unknown ------------------------------
//
// Why this exists (issue 6, faults): when the SSH connection dies or a call times
// out while `virsh snapshot-revert` runs, libvirt finishes the revert without its
// client (measured on libvirt 9.0: the revert completes on the host), or never got
// the request. A plain error would make the next `pulumi up` create the resource
// again and revert a second time, throwing away whatever the VM did in between.
// So a cut-off revert is an init failure: Pulumi keeps it in the state with what
// the domain was before, and update() (which the engine calls for a resource with
// init errors) reverts only if the first attempt did not. The evidence: libvirt 9.0
// reverts an active domain, and starts a shut-off one to a running snapshot, by
// starting a new qemu, so the domain id changes; a domain whose id did not change
// was not reverted. (Shut off before and after: no evidence, and reverting again
// is what finishing the job means; nothing ran in between.)

async function domainId(virsh: Virsh, domain: string): Promise<string> {
    return (await virsh.run(["domid", "--domain", domain], { timeoutMs: 60_000 })).trim();
}

function outputsOf(v: Inputs, probe: DomainProbe, snapshot: SnapshotInfo, revertedAt: string, domainState: string): SnapshotRevertOutputs {
    return {
        ...(v.connection ? { connection: v.connection } : {}),
        domain: v.domain,
        snapshot: v.snapshot,
        ...(v.triggers !== undefined ? { triggers: v.triggers } : {}),
        afterRevert: v.afterRevert,
        force: v.force,
        domainName: probe.info.name,
        domainUuid: probe.info.uuid,
        revertedAt,
        domainState,
        snapshotCreationTime: new Date(snapshot.creationTime * 1000).toISOString(),
        libvirtVersion: probe.version.libvirt,
        declared: withoutConnection(v),
    };
}

/** Check, revert, read the state back (the caller holds the domain's lock). */
async function revertNow(virsh: Virsh, v: Inputs): Promise<SnapshotRevertOutputs> {
    const { probe, snapshot, failures } = await inspect(virsh, v);
    if (failures.length || !probe || !snapshot) throw new InputError(failures);
    const domain = probe.info.uuid;
    const idBefore = await domainId(virsh, domain);
    const at = new Date().toISOString();
    try {
        await virsh.run(["snapshot-revert", "--domain", domain, "--snapshotname", v.snapshot, ...revertFlags(v)]);
    } catch (e) {
        let now = "unknown";
        let idNow = "unknown";
        try { now = (await virsh.run(["domstate", "--domain", domain, "--reason"], { timeoutMs: 60_000 })).trim(); } catch { /* keep "unknown" */ }
        try { idNow = await domainId(virsh, domain); } catch { /* keep "unknown" */ }
        const [first, ...rest] = messageOf(e).split("\n");
        const cutOff = isKind(e, "connection-failed") || isKind(e, "timeout");
        const lines = [`reverting domain '${probe.info.name}' to snapshot '${v.snapshot}' failed: ${first}`,
            `  the domain was ${probe.state} (id ${idBefore}) before and is ${now} (id ${idNow}) now.`];
        if (cutOff) {
            lines.push(`  whether libvirt reverted it is unknown. Pulumi keeps the revert in the state: the next pulumi up checks the host ` +
                `and reverts only if this revert did not happen (libvirt restarts qemu for a revert, so the domain id tells).`);
        }
        const message = [...lines, ...rest].join("\n");
        const err = new LibvirtError(e instanceof LibvirtError ? e.kind : "failed", message);
        if (!cutOff) throw err;
        const partial: SnapshotRevertOutputs = {
            ...outputsOf(v, probe, snapshot, "", now.split(" (")[0]!),
            pending: { domainIdBefore: idBefore, stateBefore: probe.state, at },
        };
        throw Object.assign(err, { id: `${domain}/${v.snapshot}@${at}`, properties: partial, reasons: [message] });
    }
    const revertedAt = new Date().toISOString();
    const domainState = await stateOf(virsh, domain);
    return outputsOf(v, probe, snapshot, revertedAt, domainState);
}

/** The next up after a cut-off revert: record it if libvirt did it, else revert now. */
async function finishCutOffRevert(virsh: Virsh, v: Inputs, olds: SnapshotRevertOutputs): Promise<SnapshotRevertOutputs> {
    const pending = olds.pending!;
    const domain = olds.domainUuid || v.domain;
    const idNow = await domainId(virsh, domain);
    const happened = pending.domainIdBefore === "-" ? idNow !== "-" : idNow !== pending.domainIdBefore;
    if (!happened) return revertNow(virsh, v);
    const { pending: _p, connection: _c, ...kept } = olds;
    const domainState = await stateOf(virsh, domain);
    return {
        ...kept,
        ...(v.connection ? { connection: v.connection } : {}),
        force: v.force,
        // The revert happened during the cut-off attempt, at or after this time.
        revertedAt: pending.at,
        domainState,
        declared: withoutConnection(v),
    };
}

export const __testing = { revertFlags };
