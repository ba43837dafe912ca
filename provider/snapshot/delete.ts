// Deleting one snapshot safely: what libvirt would refuse, or delete losing data, is refused before
// anything changes; the memory file libvirt 9.0 leaves behind is removed.
import { DISKS_INACTIVE, LibvirtError, isKind, type CommandInfo } from "../errors";
import { hostFailure } from "../failures";
import { overlayLocation } from "../host/xml";
import { VERSIONS, inRange, isJobIdSafe, stateOf } from "../host/probe";
import type { Virsh } from "../host/virsh";
import { DELETE_SETTLE_MS, BLOCK_JOB_WAIT_MS, JOB_POLL_MS, READ_TIMEOUT_MS, sleep } from "../timing";
import { deleteSays } from "./messages";
import { kindOf, observeSnapshot, type ObservedSnapshot } from "./observe";

/**
 * Delete one snapshot safely (the caller holds the domain's lock): never with
 * --children, which crashes libvirtd 9.0 when there are several children;
 * an external snapshot libvirt can't delete, or would delete losing data, is
 * refused before anything changes; the memory file libvirt 9.0 leaves behind is
 * removed (9.1 and newer remove it themselves, and then nothing else is run:
 * the file is never removed twice, and no rule beyond virsh is needed).
 * A snapshot that is already gone is deleted successfully.
 */
export async function deleteSnapshot(
    virsh: Virsh,
    t: { domain: string; domainName: string; snapshotName: string; deletion: "delete" | "metadata" },
    /** The snapshot as read just now, inside the same lock (asked together with the caller's own questions). */
    readNow?: ObservedSnapshot,
): Promise<void> {
    let observed: ObservedSnapshot;
    try {
        observed = readNow ?? (await observeSnapshot(virsh, t.domain, t.snapshotName));
    } catch (e) {
        if (isKind(e, "snapshot-not-found") || isKind(e, "domain-not-found")) return;
        throw e;
    }
    if (t.deletion === "metadata") {
        await virsh.run(["snapshot-delete", "--domain", t.domain, "--snapshotname", t.snapshotName, "--metadata"]);
        return;
    }
    const version = await virsh.version(); // cached per host
    const refuse = ([why, what]: string[], info?: CommandInfo) =>
        new LibvirtError("unsupported", deleteSays.refusedExternal(t, why!, what!), info);
    if (kindOf(observed.info) === "external") {
        const externalSnapshot = (await virsh.capabilities()).externalSnapshot;
        if (observed.children > 1) {
            // Measured on 11.3: 'deletion of external disk snapshot with multiple children snapshots not supported'.
            throw refuse(deleteSays.branched(observed.children, version.libvirt));
        }
        // Without <externalSnapshot/> (9.0 measured), libvirt merges a non-leaf external snapshot only while the domain runs;
        // 11.3 does it in every position.
        if (observed.children > 0 && !externalSnapshot && (await stateOf(virsh, t.domain)) === "shut off") {
            throw refuse(deleteSays.nonLeafShutOff(observed.children, version.libvirt));
        }
        const lossy = inRange(version.number, VERSIONS.deleteAfterRevertDataLoss);
        if (!externalSnapshot || lossy) {
            // Its overlays are in the domain's current chains exactly when it is the current snapshot or an ancestor of it;
            // a revert to an earlier snapshot (or its internal parent) takes them out. Asked of libvirt: no host command beyond virsh.
            const outside = (await isCurrentOrAncestor(virsh, t.domain, t.snapshotName))
                ? []
                : observed.info.disks.filter((d) => d.snapshot === "external");
            // A delete whose client was cut off goes on in libvirt: midway, the record is still there and the current
            // snapshot already cleared (measured on 9.0; its end is not always a job domjobinfo or blockjob shows). Judge
            // what it leaves, not its middle: after its block commit, and for a few seconds more, before refusing.
            if (outside.length) {
                await waitForBlockJobs(
                    virsh,
                    t.domain,
                    outside.map((d) => d.name),
                );
                for (const until = Date.now() + DELETE_SETTLE_MS; outside.length;) {
                    try {
                        await observeSnapshot(virsh, t.domain, t.snapshotName);
                    } catch (e) {
                        if (isKind(e, "snapshot-not-found")) return; // that delete finished it
                        throw e;
                    }
                    if (await isCurrentOrAncestor(virsh, t.domain, t.snapshotName)) outside.length = 0;
                    else if (Date.now() >= until) break;
                    else await sleep(JOB_POLL_MS);
                }
            }
            if (outside.length) {
                const overlays = outside.map((d) => `${overlayLocation(d) ?? "?"} (${d.name})`).join(", ");
                throw refuse(deleteSays.outsideChain(overlays, version.libvirt, lossy));
            }
        }
    }
    // The domain's state is asked only where the rule can apply.
    if (
        kindOf(observed.info) === "internal" &&
        !isJobIdSafe(t.snapshotName) &&
        version.number >= VERSIONS.internalSnapshotJobIds &&
        (await stateOf(virsh, t.domain)) !== "shut off"
    ) {
        throw new LibvirtError("unsupported", deleteSays.internalWhileRunning(t, version.libvirt));
    }
    try {
        await virsh.run(["snapshot-delete", "--domain", t.domain, "--snapshotname", t.snapshotName]);
    } catch (e) {
        // Paused by its owner: resuming would run the guest, so the choice is theirs.
        if (e instanceof LibvirtError && DISKS_INACTIVE.test(e.stderr ?? "") && (await stateOf(virsh, t.domain)) === "paused") {
            throw refuse(deleteSays.disksInactive(version.libvirt), { command: e.command ?? "", exitCode: e.exitCode, stderr: e.stderr });
        }
        // Gone since it was read: another client's delete finished it (libvirt goes on with one whose client was cut off).
        if (!isKind(e, "snapshot-not-found")) throw e;
    }
    const memoryFile = observed.info.memory.snapshot === "external" ? observed.info.memory.file : undefined;
    if (memoryFile && version.number < VERSIONS.snapshotDeleteRemovesMemoryFile) {
        const r = await virsh.host(["rm", "-f", "--", memoryFile]);
        if (r.code !== 0) {
            throw hostFailure(
                "failed",
                deleteSays.memoryFileLeft(t.snapshotName, memoryFile, r.stderr.trim() || `rm exited with ${r.code}`, version.libvirt),
                r,
            );
        }
    }
}

/** Wait while a block job runs on any of these disks (`blockjob --info`), up to BLOCK_JOB_WAIT_MS. */
async function waitForBlockJobs(virsh: Virsh, domain: string, disks: readonly string[]): Promise<void> {
    for (const until = Date.now() + BLOCK_JOB_WAIT_MS; Date.now() < until;) {
        const infos = await Promise.all(
            disks.map((d) =>
                virsh.run(["blockjob", "--domain", domain, "--path", d, "--info"], { timeoutMs: READ_TIMEOUT_MS }).catch(() => ""),
            ),
        );
        if (!infos.some((i) => /Block (Commit|Pull|Copy)|Active Block/i.test(i))) return;
        await sleep(JOB_POLL_MS);
    }
}

/** Whether NAME is the domain's current snapshot or one of its ancestors (the snapshots the current state descends from). */
async function isCurrentOrAncestor(virsh: Virsh, domain: string, name: string): Promise<boolean> {
    let at: string;
    try {
        // Names are compared exactly (a name may start or end with a space): only virsh's own newline is dropped.
        at = (await virsh.query(["snapshot-current", "--domain", domain, "--name"])).replace(/\n$/, "");
    } catch (e) {
        if (isKind(e, "snapshot-not-found") || (e instanceof LibvirtError && /has no current snapshot/.test(e.message))) return false;
        throw e;
    }
    for (let depth = 0; at && depth < 10_000; depth++) {
        if (at === name) return true;
        try {
            at = (await virsh.query(["snapshot-parent", "--domain", domain, "--snapshotname", at])).replace(/\n$/, "");
        } catch (e) {
            // A root snapshot has no parent: virsh exits 1 ("snapshot 'X' has no parent").
            if (e instanceof LibvirtError && /has no parent/.test(e.message)) return false;
            throw e;
        }
    }
    return false;
}
