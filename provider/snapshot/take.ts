// Taking a planned snapshot: the maker's mark and the snapshot-create, what a failed one left behind
// (space.ts cleans up after one that ran out of space), a name already taken (adopted, or taken over
// when it is the resource's own), a create cut off, the read-back, and the overlays made private
// afterwards where libvirt may have left them readable.
import { isKind, isCutOff } from "../errors";
import { hostFailure } from "../failures";
import { VERSIONS, type DomainProbe } from "../host/probe";
import type { Virsh } from "../host/virsh";
import type { SnapshotInfo } from "../host/xml";
import { adoptOrRefuse, explainFailedCreate, unknownOutcome } from "../moments/creates";
import { withMakerMark } from "../moments/maker";
import { takeSays } from "./messages";
import { differencesFrom, observeSnapshot, type ObservedSnapshot } from "./observe";
import type { SnapshotContext, SnapshotPlan } from "./plan";
import { withSpaceCleanup } from "./space";

/**
 * Run the planned snapshot-create, under the maker's mark when the context carries one (moments/maker.ts); on
 * failure, say whether anything was left behind. A snapshot that runs out of space part-way is cleaned up (see
 * withSpaceCleanup) and fails as an OutOfSpaceError.
 */
export async function takeSnapshot(virsh: Virsh, plan: SnapshotPlan, ctx: SnapshotContext): Promise<void> {
    const create = () => virsh.run(plan.argv, { stdin: plan.xml });
    await withMakerMark(virsh, { uuid: plan.domain, active: ctx.probe.active }, ctx.mark, async () => {
        try {
            await withSpaceCleanup(virsh, plan, ctx, create);
        } catch (e) {
            // Cut off, libvirt may still be working: asking now could hang or mislead. Out of space, it was asked already.
            if (isKind(e, "already-exists") || isCutOff(e) || isKind(e, "no-space")) throw e;
            throw await explainFailedCreate(virsh, "snapshot", plan.domain, plan.spec.name, e);
        }
    });
}

/** What a DomainSnapshot's create asks beyond the plan. */
export interface CreateContext extends SnapshotContext {
    /** Take over a snapshot of this name that exists already, if it matches the plan. */
    adopt: boolean;
    /** What Pulumi keeps of a create cut off before its outcome is known (an init failure's properties). */
    partial: object;
}

export interface CreatedSnapshot {
    observed: ObservedSnapshot;
    /** True when it took over an existing snapshot instead of creating it. */
    adopted: boolean;
    /** Why its overlays could not be made private: the snapshot exists all the same. */
    notPrivate?: unknown;
}

/**
 * DomainSnapshot's create, from the plan to the snapshot read back: taken under the maker's mark; a name taken
 * already is adopted, or taken over when it carries this resource's own mark; a create or read-back cut off
 * becomes an init failure that keeps `partial`; the overlays of one it made are made private.
 */
export async function createSnapshot(virsh: Virsh, plan: SnapshotPlan, ctx: CreateContext): Promise<CreatedSnapshot> {
    const { probe, mark } = ctx;
    const domain = plan.domain;
    const name = plan.spec.name;
    const outcome = { kind: "snapshot", name, domainName: probe.info.name, id: `${domain}/${name}`, partial: ctx.partial } as const;
    let adopted = false;
    try {
        await takeSnapshot(virsh, plan, ctx);
    } catch (e) {
        if (!isKind(e, "already-exists")) throw unknownOutcome(e, { ...outcome, what: "the create was cut off" }) ?? e;
        const { own } = await adoptOrRefuse(virsh, {
            kind: "snapshot",
            name,
            domain,
            domainName: probe.info.name,
            adopt: ctx.adopt,
            description: plan.spec.description,
            mark,
            error: e,
            existing: async () => {
                const s = (await observeSnapshot(virsh, domain, name)).info;
                return { description: s.description, differences: differencesFrom(plan, s), makerMark: s.domain?.makerMark };
            },
        });
        // Its own, from a run cut off before the engine recorded it: made by this resource, not adopted.
        adopted = !own;
    }
    let observed: ObservedSnapshot;
    try {
        observed = await observeSnapshot(virsh, domain, name);
    } catch (e) {
        const what = `the snapshot was ${adopted ? "adopted" : "created"}, but reading it back failed`;
        throw unknownOutcome(e, { ...outcome, what }) ?? e;
    }
    if (adopted) return { observed, adopted };
    try {
        await makeOverlaysPrivate(virsh, probe, plan, observed.info);
    } catch (e) {
        return { observed, adopted, notPrivate: e };
    }
    return { observed, adopted };
}

/**
 * The overlays libvirt made for an external snapshot of a shut-off domain are made private (no access for
 * group and others) where libvirt may have left them readable (CVE-2025-13193, before 11.10): a disk image
 * holds whatever the guest keeps on disk. Read first with stat on the host; changed only when the overlay has
 * the owner and group of the image under it, which qemu opens as that owner (or as root): the owner keeps its
 * access, so qemu's own user can still open it. An overlay owned otherwise is left as libvirt made it.
 * Returns the files it changed.
 */
export async function makeOverlaysPrivate(virsh: Virsh, probe: DomainProbe, plan: SnapshotPlan, made: SnapshotInfo): Promise<string[]> {
    if (plan.kind !== "external" || probe.active || probe.version.number >= VERSIONS.offlineOverlayPrivate) return [];
    const changed: string[] = [];
    for (const d of made.disks) {
        const base = probe.info.disks.find((x) => x.target === d.name)?.source;
        // A block device's node is the admin's, not a file libvirt made.
        if (d.snapshot !== "external" || !d.file || d.type === "block" || !base) continue;
        const r = await virsh.host(["stat", "-c", "%a %u %g", "--", d.file, base]);
        const lines = r.stdout.trim().split("\n");
        if (r.code !== 0 || lines.length !== 2) {
            throw hostFailure(
                "failed",
                takeSays.overlayModeUnread(made.name, d.file, probe, r.stderr.trim() || `stat exited with ${r.code}`),
                r,
            );
        }
        const [overlay, under] = lines.map((l) => l.split(" "));
        const mode = parseInt(overlay![0]!, 8);
        if ((mode & 0o077) === 0 || overlay![1] !== under![1] || overlay![2] !== under![2]) continue;
        const c = await virsh.host(["chmod", "go-rwx", "--", d.file]);
        if (c.code !== 0) {
            throw hostFailure(
                "failed",
                takeSays.overlayNotPrivate(made.name, d.file, overlay![0]!, c.stderr.trim() || `chmod exited with ${c.code}`),
                c,
            );
        }
        changed.push(d.file);
    }
    return changed;
}
