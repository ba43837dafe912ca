// Deleting one checkpoint, for DomainCheckpoint and for the checkpoint a DomainBackup made.
import { LibvirtError, isKind } from "../errors";
import type { Virsh } from "../host/virsh";

/**
 * `checkpoint-delete`, never with --children: each resource deletes only its own checkpoint, and libvirt merges its
 * bitmap into the parent and re-parents later checkpoints. A bitmap that vanished behind libvirt's back leaves only
 * the record to drop (`--metadata`); a checkpoint that is already gone is deleted successfully.
 */
export async function deleteCheckpoint(virsh: Virsh, domain: string, name: string): Promise<void> {
    try {
        await virsh.run(["checkpoint-delete", "--domain", domain, "--checkpointname", name]);
    } catch (e) {
        if (isKind(e, "checkpoint-not-found")) return;
        if (e instanceof LibvirtError && /bitmap '.*' not found in backing chain/.test(e.message)) {
            await virsh.run(["checkpoint-delete", "--domain", domain, "--checkpointname", name, "--metadata"]);
            return;
        }
        throw e;
    }
}
