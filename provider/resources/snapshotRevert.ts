// SnapshotRevert: rolling a domain back to a snapshot, on purpose.
//   inputs (zod) → checks against the live domain (the snapshot exists, this
//   libvirt can revert it, no checkpoint would make qemu refuse to start)
//   → virsh snapshot-revert → domstate → outputs
// Reverting throws the VM's current state away, so it is never a side effect:
// it runs on create, and again only when `triggers` (or what to revert) change.
// Preview (check) only reads from the host. Delete leaves the VM alone.
import type * as pulumi from "@pulumi/pulumi";
import { z } from "zod";
import type { Connection } from "../connection";
import { LibvirtError, isKind, knownBugOf, messageOf, isCutOff } from "../errors";
import { initFailure } from "../failures";
import { InputError, momentName, trueOrFalse, type CheckFailure } from "../inputs";
import { withDomainLock } from "../locks";
import { NEXT_SECOND_MARGIN_MS, sleep } from "../timing";
import { common, field, spec } from "../spec";
import { askAboutDomain, checkInputs, compareInputs, lockKey, parseOrThrow, virshFor, withoutConnection } from "../resource";
import { removeRevertedMark } from "../moments/maker";
import { inRange, listCheckpoints, listSnapshots, names, probeDomain, stateOf, VERSIONS, type DomainProbe } from "../host/probe";
import type { Virsh } from "../host/virsh";
import { parseSnapshotXml, type SnapshotInfo } from "../host/xml";
import { kindOf } from "../snapshot/observe";
import { revertSays } from "./messages";

// ---- inputs ----------------------------------------------------------------

/** Each input once: its schema (and default), what a change of it does, and its doc (SnapshotRevertArgs says the same). */
export const SnapshotRevertSpec = spec({
    connection: common.connection,
    domain: common.domain,
    snapshot: field("replace", momentName("snapshot"), "The snapshot's name, or a DomainSnapshot's `snapshotName` output."),
    triggers: field(
        "replace",
        z.array(z.unknown(), { error: "must be a list of values; a change in any of them reverts again" }).optional(),
        "A change in any value reverts again.",
        { checked: false },
    ),
    afterRevert: field(
        "replace",
        z
            .enum(["running", "paused", "as-snapshotted"], {
                error: "must be 'running', 'paused' or 'as-snapshotted' (the state the snapshot was taken in)",
            })
            .default("as-snapshotted"),
        "The state after the revert: `running`, `paused`, or `as-snapshotted` (the default: the state the snapshot was taken in).",
        { checked: false },
    ),
    force: field(
        "update",
        trueOrFalse.default(false),
        "`--force`, for risky reverts, for example to a snapshot without a domain definition. Default false.",
    ),
    timeoutSeconds: common.timeoutSeconds,
});

export const SnapshotRevertSchema = SnapshotRevertSpec.object;

/** What a user may pass: the schema's input type. */
type Inputs = z.infer<typeof SnapshotRevertSchema>;

/** What a SnapshotRevert exposes. */
export interface SnapshotRevertOutputs {
    /** The connection it ran through (stored as a secret). */
    connection?: Connection;
    /** The domain as declared: name or UUID. */
    domain: string;
    /** The snapshot it reverted to. */
    snapshot: string;
    /** The values whose change reverts again. */
    triggers?: unknown[];
    /** The state asked for after the revert. */
    afterRevert: "running" | "paused" | "as-snapshotted";
    force: boolean;
    domainName: string;
    domainUuid: string;
    /** When the revert finished (ISO 8601). */
    revertedAt: string;
    /** The domain's state right after the revert: `running`, `paused` or `shut off`. */
    domainState: string;
    /** When the snapshot was taken (ISO 8601). */
    snapshotCreationTime: string;
    /** The libvirt version of the host's daemon. */
    libvirtVersion: string;
}

/** What the resource records: its outputs, the inputs as declared (defaults applied) for diff, and what a cut-off revert left. */
interface Recorded extends SnapshotRevertOutputs {
    declared: Omit<Inputs, "connection">;
    /**
     * Set only in the state a cut-off revert leaves (an init failure): what the
     * domain was before, so the next `pulumi up` can tell whether libvirt reverted it.
     */
    pending?: { domainIdBefore: string; stateBefore: string; at: string };
}

// ---- checks --------------------------------------------------------------------

interface Inspection {
    snapshot?: SnapshotInfo;
    failures: CheckFailure[];
}

/**
 * Everything that decides whether this host can do the revert, read without
 * changing anything: the snapshot, its kind, the libvirt version and the
 * domain's checkpoints. Check reports the failures; create throws them.
 */
async function inspect(virsh: Virsh, v: Inputs, probe: DomainProbe): Promise<Inspection> {
    const domain = probe.info.uuid;
    const [snapshotXml, checkpoints, caps] = await Promise.all([
        virsh.query(["snapshot-dumpxml", "--domain", domain, "--snapshotname", v.snapshot]).catch((e) => {
            if (isKind(e, "snapshot-not-found")) return undefined;
            throw e;
        }),
        probe.version.number >= VERSIONS.checkpoints ? listCheckpoints(virsh, domain) : Promise.resolve([] as string[]),
        virsh.capabilities(),
    ]);
    const failures: CheckFailure[] = [];
    if (snapshotXml === undefined) {
        const names = await listSnapshots(virsh, domain);
        failures.push({
            property: "snapshot",
            reason: revertSays.noSuchSnapshot(probe.info.name, v.snapshot, names),
            absent: true,
        });
        return { failures };
    }
    const snapshot = parseSnapshotXml(snapshotXml);
    if (kindOf(snapshot) === "external" && !caps.externalSnapshot) {
        failures.push({
            property: "snapshot",
            reason: revertSays.externalUnsupported(v.snapshot, probe.version.libvirt),
        });
    }
    if (kindOf(snapshot) === "internal" && inRange(probe.version.number, VERSIONS.deleteAfterRevertDataLoss)) {
        const external = names(
            await virsh.query(["snapshot-list", "--domain", domain, "--from", v.snapshot, "--descendants", "--external", "--name"]),
        );
        if (external.length) {
            failures.push({
                property: "snapshot",
                reason: revertSays.externalDescendants(v.snapshot, external, probe.version.libvirt),
            });
        }
    }
    if (checkpoints.length) {
        failures.push({
            property: "domain",
            reason: revertSays.checkpoints(probe.info.name, checkpoints, probe.version.libvirt),
        });
    }
    return { snapshot, failures };
}

// ---- the provider ------------------------------------------------------------

/** Changing any of these means "revert (again)". */

/** The whole virsh command for the revert. */
export function revertArgv(domain: string, v: Pick<Inputs, "snapshot" | "afterRevert" | "force">): string[] {
    const argv = ["snapshot-revert", "--domain", domain, "--snapshotname", v.snapshot];
    if (v.afterRevert === "running") argv.push("--running");
    if (v.afterRevert === "paused") argv.push("--paused");
    if (v.force) argv.push("--force");
    return argv;
}

export const snapshotRevert = {
    check(olds: Record<string, unknown>, news: Record<string, unknown>): Promise<pulumi.dynamic.CheckResult> {
        // The snapshot is often another resource's output, unknown at the first preview: it is checked once it is known.
        return checkInputs(SnapshotRevertSchema, olds, news, {
            planKeys: SnapshotRevertSpec.checkedKeys,
            createKeys: SnapshotRevertSpec.createKeys,
            ask: (v) => askAboutDomain(v, "the revert", async (virsh, probe) => (await inspect(virsh, v, probe)).failures),
        });
    },

    async diff(_id: string, olds: Recorded, news: Record<string, unknown>): Promise<pulumi.dynamic.DiffResult> {
        // New credentials for the same host revert nothing: an update only records them.
        const { replaces, updates, credentialsChanged } = compareInputs(SnapshotRevertSchema, olds, news, {
            replace: SnapshotRevertSpec.replaceKeys,
            update: SnapshotRevertSpec.updateKeys,
        });
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
    async read(id: string, props: Recorded): Promise<pulumi.dynamic.ReadResult> {
        return { id, props };
    },

    /** Only force, timeoutSeconds or credentials changed: record them; nothing is reverted. */
    async update(_id: string, olds: Recorded, news: Record<string, unknown>): Promise<pulumi.dynamic.UpdateResult> {
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
    async delete(_id: string, _props: Recorded): Promise<void> {
        return;
    },
};

// ---- reverting, and a revert whose outcome is unknown ------------------------------
//
// Why this exists: when the SSH connection dies or a call times
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
    return (await virsh.query(["domid", "--domain", domain])).trim();
}

function outputsOf(v: Inputs, probe: DomainProbe, snapshot: SnapshotInfo, revertedAt: string, domainState: string): Recorded {
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

/** Check, revert, read the state back (the caller holds the domain's lock). Exported for a unit test of libvirt's known bugs. */
export async function revertNow(virsh: Virsh, v: Inputs): Promise<Recorded> {
    let probe: DomainProbe;
    try {
        probe = await probeDomain(virsh, v.domain);
    } catch (e) {
        if (isKind(e, "domain-not-found"))
            throw new InputError([{ property: "domain", reason: `no domain '${v.domain}' on ${virsh.where}` }]);
        throw e;
    }
    const { snapshot, failures } = await inspect(virsh, v, probe);
    if (failures.length || !snapshot) throw new InputError(failures);
    const domain = probe.info.uuid;
    const idBefore = await domainId(virsh, domain);
    const at = new Date().toISOString();
    try {
        await revertRetryingOverlayName(virsh, revertArgv(domain, v));
    } catch (e) {
        let now = "unknown";
        let idNow = "unknown";
        try {
            now = (await virsh.query(["domstate", "--domain", domain, "--reason"])).trim();
        } catch {
            /* keep "unknown" */
        }
        try {
            idNow = await domainId(virsh, domain);
        } catch {
            /* keep "unknown" */
        }
        const [first, ...rest] = messageOf(e).split("\n");
        const cutOff = isCutOff(e);
        const bug = cutOff ? undefined : knownBugOf(e instanceof LibvirtError ? (e.stderr ?? e.message) : messageOf(e));
        // The known bug fails before qemu loads anything; a running domain libvirt left paused gets its CPUs back, as it was.
        if (bug && probe.state === "running" && now.startsWith("paused")) {
            try {
                await virsh.run(["resume", "--domain", domain]);
                now = `${(await virsh.query(["domstate", "--domain", domain, "--reason"])).trim()}, resumed by the provider`;
            } catch {
                /* say what it is now */
            }
        }
        const lines = [
            `reverting domain '${probe.info.name}' to snapshot '${v.snapshot}' failed: ${first}`,
            `  the domain was ${probe.state} (id ${idBefore}) before and is ${now} (id ${idNow}) now.`,
        ];
        if (bug) {
            lines.push(revertSays.knownBug(bug, probe.version.libvirt));
        }
        if (cutOff) {
            lines.push(
                `  whether libvirt reverted it is unknown. Pulumi keeps the revert in the state: the next pulumi up checks the host ` +
                    `and reverts only if this revert did not happen (libvirt restarts qemu for a revert, so the domain id tells).`,
            );
        }
        const message = [...lines, ...rest].join("\n");
        const err = new LibvirtError(e instanceof LibvirtError ? e.kind : "failed", message);
        if (!cutOff) throw err;
        const partial: Recorded = {
            ...outputsOf(v, probe, snapshot, "", now.split(" (")[0]!),
            pending: { domainIdBefore: idBefore, stateBefore: probe.state, at },
        };
        throw initFailure(err, { id: `${domain}/${v.snapshot}@${at}`, properties: partial });
    }
    const revertedAt = new Date().toISOString();
    const domainState = await stateOf(virsh, domain);
    await removeRevertedMark(virsh, domain);
    return outputsOf(v, probe, snapshot, revertedAt, domainState);
}

/**
 * libvirt (11.3 measured) names the overlay a revert to an external snapshot makes after the base image and the
 * time in whole seconds (`disk.1796482571`), so a second revert within the same second finds its file taken
 * ('external snapshot file for disk vda already exists') and changes nothing. The next second has a free name.
 */
async function revertRetryingOverlayName(virsh: Virsh, argv: string[]): Promise<void> {
    for (let attempt = 0; ; attempt++) {
        try {
            await virsh.run(argv);
            return;
        } catch (e) {
            const taken =
                e instanceof LibvirtError && /external snapshot file for disk \S+ already exists .*\.\d{9,}$/m.test(e.stderr ?? "");
            if (!taken || attempt >= 2) throw e;
            await sleep(1000 - (Date.now() % 1000) + NEXT_SECOND_MARGIN_MS);
        }
    }
}

/** The next up after a cut-off revert: record it if libvirt did it, else revert now. */
async function finishCutOffRevert(virsh: Virsh, v: Inputs, olds: Recorded): Promise<Recorded> {
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
