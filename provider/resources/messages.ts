// What DomainBackup, DomainCheckpoint, SnapshotRevert and RestorePoint tell a user, in one place per resource: why
// it can't be planned (check reports it, create throws it), and what a create, update or delete met.
// The snapshot engine's texts are in snapshot/messages.ts; those of snapshots and checkpoints alike in
// moments/messages.ts.
import type { DomainProbe } from "../host/probe";
import type { DomainDisk } from "../host/xml";

const diskFormat = (d: DomainDisk) => `disk ${d.target} (${d.source ?? d.type}) is ${d.format ?? "of unknown format"}`;

export const backupSays = {
    notQcow2: (d: DomainDisk) =>
        `${diskFormat(d)}: the backup's checkpoint is a dirty bitmap kept inside a qcow2 image. ` +
        `Leave it out with disks: [{ name: '${d.target}', backup: 'no' }]`,
    otherJob: (domainName: string, operation: string, files: readonly string[]) =>
        `domain '${domainName}' is running a${operation === "unknown" ? "" : ` ${operation}`} job` +
        (files.length ? ` that writes ${files.join(", ")}` : "") +
        `, which is not this backup's. Wait for it to finish (virsh domjobinfo ${domainName}), ` +
        `or abort it (virsh domjobabort ${domainName}), then run pulumi up again`,
    notRunning: (p: DomainProbe) =>
        `domain '${p.info.name}' is ${p.state}: libvirt ${p.version.libvirt} backs up only a running or paused domain ` +
        `(a backup is a qemu job, and it makes a checkpoint). Start the domain first`,
    checkpointTaken: (domainName: string, checkpoint: string) =>
        `domain '${domainName}' already has a checkpoint '${checkpoint}'. ` +
        `A backup makes its own checkpoint, and the provider never takes a new backup ` +
        `under an existing checkpoint name (every later incremental would silently build on the wrong data). Choose another checkpointName`,
    fileExists: (file: string) =>
        `backup file ${file} already exists, and a backup never overwrites one. ` +
        `Choose another checkpointName or targetDir, or move the file away`,
    noBase: (domainName: string, base: string, checkpoints: readonly string[]) =>
        `domain '${domainName}' has no checkpoint '${base}' (its checkpoints: ${checkpoints.join(", ") || "none"}). ` +
        `Take a full backup (leave incrementalFrom unset), ` +
        `or name the checkpoint of an earlier backup`,
    noBitmap: (base: string, disk: string) =>
        `checkpoint '${base}' has no bitmap for disk ${disk}, so libvirt can't tell what changed on it. ` +
        `Take a full backup, or leave the disk out`,
    brokenChain: (base: string, problems: readonly string[]) =>
        `the chain from checkpoint '${base}' is broken: ${problems.join("; ")}. An incremental from it would be refused by libvirt ` +
        `('checkpoint inconsistent') or could never be restored. ` +
        `Take a full backup instead (leave incrementalFrom unset, with a new checkpointName)`,
    outlived: (o: {
        domainName: string;
        timeoutSeconds: number;
        progress: string;
        problems: string[];
        files: string[];
        checkpoint: string;
    }) =>
        `the backup of domain '${o.domainName}' outlived timeoutSeconds (${o.timeoutSeconds} s)${o.progress}: ` +
        `it was aborted (virsh domjobabort), ` +
        (o.problems.length
            ? `but ${o.problems.join("; ")}`
            : `its partial files were removed (${o.files.join(", ")}) and checkpoint '${o.checkpoint}' was deleted`) +
        `. Raise timeoutSeconds and run pulumi up again`,
    jobEnded: (o: { domainName: string; type: string; error?: string; problems: string[]; checkpoint: string }) =>
        `the backup job of domain '${o.domainName}' ended ${o.type === "none" ? "without a result" : o.type}` +
        (o.error ? `: ${o.error}` : "") +
        `. ${o.problems.length ? o.problems.join("; ") : `Its partial files were removed and checkpoint '${o.checkpoint}' was deleted`}.`,
    checkpointGone: (checkpoint: string, domainName: string) =>
        `checkpoint '${checkpoint}' is gone from domain '${domainName}': no incremental can start from this backup`,
    deleteWhileOff: (checkpoint: string, p: DomainProbe) =>
        `cannot delete checkpoint '${checkpoint}' of backup on domain '${p.info.name}': the domain is ${p.state}, and libvirt ` +
        `${p.version.libvirt} removes a checkpoint's bitmaps only while the domain runs. ` +
        `Nothing was changed. Start the domain and run destroy again`,
};

export const checkpointSays = {
    noBackupInQemu: (libvirt: string) =>
        `the QEMU behind libvirt ${libvirt} does not support incremental backup (domcapabilities: backup supported='no'), ` +
        `so it can't keep dirty bitmaps. Upgrade QEMU on the host`,
    notRunning: (p: DomainProbe) =>
        `domain '${p.info.name}' is ${p.state}: libvirt ${p.version.libvirt} creates checkpoints only while the domain runs ` +
        `('cannot create checkpoint for inactive domain'). Start the domain first`,
    notQcow2: (d: DomainDisk) =>
        `a checkpoint is a dirty bitmap kept inside a qcow2 image, but ${diskFormat(d)}. ` +
        `Leave it out with disks: [{ name: '${d.target}', checkpoint: 'no' }]`,
    bitmapName: (target: string, checkpoint: string) =>
        `libvirt's QEMU driver names every bitmap after its checkpoint ('bitmap for disk ${target} must match checkpoint name'): ` +
        `leave bitmap unset, or set it to '${checkpoint}'`,
    noQuiesce: (libvirt: string) =>
        `libvirt ${libvirt}'s QEMU driver can't quiesce a checkpoint ` +
        `(it rejects the flag: 'unsupported flags (0x2) in function qemuCheckpointCreateXML'). ` +
        `Set quiesce: false; a checkpoint only starts tracking changes, it copies no data`,
    goneForGood: (checkpoint: string, domainName: string, reason: string) =>
        `checkpoint '${checkpoint}' of domain '${domainName}' is gone and can't be restored (${reason}). ` +
        `Nothing was changed. The next pulumi up creates it again.`,
    deleteWhileOff: (checkpoint: string, p: DomainProbe) =>
        `cannot delete checkpoint '${checkpoint}' of domain '${p.info.name}': the domain is ${p.state}, ` +
        `and libvirt ${p.version.libvirt} removes a checkpoint's bitmaps ` +
        `only while the domain runs ('cannot delete checkpoint for inactive domain'). Nothing was changed. ` +
        `Start the domain and run destroy again, ` +
        `or set deletion: 'metadata' to drop only libvirt's record and leave the bitmaps in the image.`,
    staleBitmap: (domainName: string, checkpoint: string) =>
        `a disk image of domain '${domainName}' already holds a dirty bitmap named '${checkpoint}', ` +
        `but libvirt has no checkpoint '${checkpoint}': ` +
        `its record was lost (was the domain undefined and defined again?). Nothing was created. ` +
        `If a DomainCheckpoint in this stack recorded it, ` +
        `its next 'pulumi up' gives the record back from the state; ` +
        `otherwise choose another checkpointName, or remove the stale bitmap with ` +
        `'qemu-img bitmap --remove IMAGE ${checkpoint}' while the domain is shut off.`,
    readBackFailed: (checkpoint: string, made: "adopted" | "created", domainName: string, why: string) =>
        `checkpoint '${checkpoint}' was ${made} on domain '${domainName}', but reading it back failed: ${why}. ` +
        `It exists on the host; run the update again with adopt: true to take it over.`,
};

const quoted = (names: readonly string[]) => names.map((n) => `'${n}'`).join(", ");

export const revertSays = {
    noSuchSnapshot: (domainName: string, snapshot: string, names: readonly string[]) =>
        `domain '${domainName}' has no snapshot '${snapshot}' ` +
        `(${names.length ? `its snapshots: ${quoted(names)}` : "it has no snapshots"}). ` +
        `If libvirt lost its record (the domain was undefined and defined again), ` +
        `the DomainSnapshot or RestorePoint that took it gives it back ` +
        `on the next pulumi up: pass its snapshotName output here, so the revert runs after it`,
    externalUnsupported: (snapshot: string, libvirt: string) =>
        `'${snapshot}' is an external snapshot, and libvirt ${libvirt} can't revert to external snapshots ` +
        `('revert to external snapshot not supported yet'; ` +
        `its capabilities show no <externalSnapshot/>, which libvirt 9.9 and newer have). ` +
        `Revert to an internal snapshot, or upgrade libvirt on the host`,
    externalDescendants: (snapshot: string, external: readonly string[], libvirt: string) =>
        `'${snapshot}' is an internal snapshot with external descendants (${quoted(external)}), and libvirt ${libvirt} ` +
        `deletes the base image when one of them is deleted after this revert ` +
        `(a data loss fixed in 11.0: libvirt #734, virt-manager #811). ` +
        `Nothing was changed. Delete the external snapshots first, or upgrade libvirt to 11.0 or newer`,
    checkpoints: (domainName: string, checkpoints: readonly string[], libvirt: string) =>
        `domain '${domainName}' has checkpoints (${quoted(checkpoints)}), and reverting a disk that carries ` +
        `dirty bitmaps fails ('Device has active dirty bitmaps'): qemu refuses to load the snapshot, ` +
        `and on a running domain libvirt ${libvirt} leaves it shut off (failed). ` +
        `Nothing was changed. ` +
        `Delete the checkpoints first (destroy their DomainCheckpoint resources, or virsh checkpoint-delete), then revert`,
    knownBug: (bug: { what: string; fixedIn: string }, libvirt: string) =>
        `  this is a known libvirt bug: ${bug.what}; libvirt ${bug.fixedIn} fixes it. The host runs libvirt ${libvirt}: ` +
        `upgrade it to ${bug.fixedIn} or newer (or a build with the fix), then run pulumi up again.`,
};

export const restorePointSays = {
    /** Some members, not all, hold the snapshot from a cut-off run: each with the virsh command that deletes it. */
    partlyOwn: (name: string, members: ReadonlyArray<{ domainName: string; where: string; command: string }>) =>
        `snapshot '${name}' of ${members.map((m) => `domain '${m.domainName}'`).join(", ")} was made by this restore point in a run ` +
        `that was cut off, but not of every member, so it is not one restore point. Delete it, then run pulumi up again:\n    ` +
        members.map((m) => `on ${m.where}: ${m.command}`).join("\n    "),
};
