// Taking a planned snapshot: the snapshot-create under the maker's mark, what a failed one left behind
// (space.ts cleans up after one that ran out of space), and the overlays made private afterwards where
// libvirt may have left them readable.
import { isKind, isCutOff } from "../errors";
import { hostFailure } from "../failures";
import { VERSIONS, type DomainProbe } from "../host/probe";
import type { Virsh } from "../host/virsh";
import type { SnapshotInfo } from "../host/xml";
import { explainFailedCreate } from "../moments/creates";
import { withMakerMark } from "../moments/maker";
import { takeSays } from "./messages";
import type { SnapshotContext, SnapshotPlan } from "./plan";
import { withSpaceCleanup } from "./space";

/**
 * Run the planned snapshot-create, under the maker's mark when the context carries one (moments/maker.ts); on
 * failure, say whether anything was left behind. With a context, a snapshot that runs out of space part-way is
 * cleaned up (see withSpaceCleanup) and fails as an OutOfSpaceError.
 */
export async function takeSnapshot(virsh: Virsh, plan: SnapshotPlan, ctx?: SnapshotContext): Promise<void> {
    const create = () => virsh.run(plan.argv, { stdin: plan.xml });
    await withMakerMark(virsh, { uuid: plan.domain, active: ctx?.probe.active ?? false }, ctx?.mark, async () => {
        try {
            await (ctx ? withSpaceCleanup(virsh, plan, ctx, create) : create());
        } catch (e) {
            // Cut off, libvirt may still be working: asking now could hang or mislead. Out of space, it was asked already.
            if (isKind(e, "already-exists") || isCutOff(e) || isKind(e, "no-space")) throw e;
            throw await explainFailedCreate(virsh, "snapshot", plan.domain, plan.spec.name, e);
        }
    });
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
        if (d.snapshot !== "external" || !d.file || !base) continue;
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
