// What the snapshot engine tells a user, in one place: why a snapshot can't be planned (check reports it,
// create throws it), what a take left behind, and why a delete is refused. Each names what to do next.
import type { DomainProbe } from "../host/probe";
import type { DomainDisk } from "../host/xml";

const diskOf = (d: DomainDisk) => `disk ${d.target} (${d.source ?? d.type}) is ${d.format ?? "of unknown format"}`;

/** Why a snapshot can't be planned, by the property that asked for it. */
export const planSays = {
    internalNeedsQcow2: (d: DomainDisk) =>
        `an internal snapshot lives inside a qcow2 image, but ${diskOf(d)}. ` +
        `Use kind: 'external' (which may leave the disk out with disks: [{ name: '${d.target}', snapshot: 'no' }])`,
    policyNoInternal: (d: DomainDisk) =>
        `disk ${d.target} (${d.source ?? d.type}) says snapshot='no' in the domain XML, so it is left out, ` +
        `and libvirt takes no internal snapshot that leaves a writable disk out ` +
        `('internal and full system snapshots require all disks to be selected for snapshot'). ` +
        `Include it with disks: [{ name: '${d.target}', snapshot: 'internal' }], or use kind: 'external'`,
    entryNoInternal: (d: DomainDisk, index: number) =>
        `disks[${index}] leaves disk ${d.target} (${d.source ?? d.type}) out, ` +
        `and libvirt takes no internal snapshot that leaves a writable disk out ` +
        `('internal and full system snapshots require all disks to be selected for snapshot'). ` +
        `Include it (snapshot: 'internal'), or use kind: 'external'`,
    policyMixes: (d: DomainDisk, mode: string, others: string, p: DomainProbe) =>
        `disk ${d.target} (${d.source ?? d.type}) says snapshot='${mode}' in the domain XML, so it would be ${mode}, ` +
        `and the other disks are ${others}: libvirt ${p.version.libvirt} cannot mix internal and external disk snapshots ` +
        `in one snapshot. Use kind: '${mode}', or override it with disks: [{ name: '${d.target}', snapshot: '${others}' }]`,
    policyManual: (d: DomainDisk) =>
        `disk ${d.target} (${d.source ?? d.type}) says snapshot='manual' in the domain XML: libvirt would leave its snapshot ` +
        `to you and keep the domain paused until you resume it. Say what to take of it with disks: ` +
        `[{ name: '${d.target}', snapshot: 'external' }] ('internal' or 'no' as the other disks allow)`,
    blockDeviceOverlay: (d: DomainDisk) =>
        `disk ${d.target} is a block device (${d.source ?? "no source"}), ` +
        `and libvirt names an external snapshot's overlay only beside a regular file. ` +
        `Give its overlay a path with DomainSnapshot's disks: ` +
        `[{ name: '${d.target}', snapshot: 'external', file: '/path/to/${d.target}.overlay.qcow2' }]`,
    noMemoryToSave: (p: DomainProbe) =>
        `domain '${p.info.name}' is ${p.state}, so there is no memory state to save. Use memory: 'none', or leave memory unset`,
    diskOnlyInternalRunning: () =>
        `libvirt can't take a disk-only internal snapshot of a running domain ('active qemu domains require external disk snapshots'). ` +
        `Use memory: 'internal', or kind: 'external'`,
    internalDisksExternalMemory: (p: DomainProbe) =>
        `libvirt ${p.version.libvirt} does not support internal disk snapshots with an external memory file ` +
        `('mixing internal and external targets'). Use memory: 'internal', or kind: 'external'`,
    externalDisksInternalMemory: (p: DomainProbe) =>
        `libvirt ${p.version.libvirt} can't save memory inside the disk image when the disks are external. ` +
        `Use memory: 'external' with memoryFile, or memory: 'none'`,
    jobIdUnsafe: (p: DomainProbe, name: string) =>
        `libvirt ${p.version.libvirt} takes an internal snapshot of a running domain as a qemu job named after it, and qemu refuses ` +
        `'${name}' in a job ID ('Invalid job ID'): use only letters, digits, '-', '.' and '_', or take it while the domain is shut off`,
    checkpointsWhileOff: (p: DomainProbe, internalOnly: boolean, why: string) =>
        `domain '${p.info.name}' is ${p.state} and has checkpoints (${p.checkpointsWhileOff.join(", ")}): ` +
        `libvirt ${p.version.libvirt} takes no ` +
        `${internalOnly ? "" : "external "}snapshot of it then (${why}). Take the snapshot while the domain runs, ` +
        `${internalOnly ? "upgrade libvirt to 11.3 or newer, " : "take an internal one, "}or delete its checkpoints first`,
    liveNeedsExternal: () =>
        "live snapshots are only possible for full-system external snapshots of a running domain " +
        "(kind: 'external', memory: 'external')",
    cannotDeleteExternal: (p: DomainProbe) =>
        `libvirt ${p.version.libvirt} can't delete external snapshots (9.0 or newer can), so pulumi destroy would fail. ` +
        `Use deletion: 'metadata', or kind: 'internal'`,
    pflashBefore109: (firmware: string, p: DomainProbe) =>
        `${firmware}, and libvirt ${p.version.libvirt} takes no internal snapshot of such a domain ` +
        `('internal snapshots of a VM with pflash ` +
        `based firmware are not supported'; 10.9 and newer can, with the NVRAM in qcow2). Use kind: 'external'`,
    pflashRawNvram: (firmware: string, nvram: string | undefined, format: string) =>
        `${firmware}, and its UEFI variables (NVRAM ${nvram ?? "(none named)"}) are ${format}: ` +
        `libvirt saves them inside an internal snapshot ` +
        `of a running domain, which needs a qcow2 NVRAM ('require QCOW2 nvram format'). ` +
        `Use kind: 'external', take the snapshot while the ` +
        `domain is shut off (the NVRAM is then left out of it), or convert the NVRAM to qcow2 (<nvram format='qcow2'>)`,
    chainTooLong: (p: DomainProbe, target: string, chain: readonly string[], maxImages: number) =>
        `disk ${target} of domain '${p.info.name}' has ${chain.length} images in its chain (${chain[0]} and its backing files), ` +
        `and an external snapshot adds one: ` +
        `libvirt ${p.version.libvirt} can't start a domain whose chain has more than ${maxImages} ` +
        `('failed to parse JSON: nesting too deep'; ` +
        `libvirt 10.8 to 11.x, fixed in 12.0). Nothing was changed. ` +
        `Delete older external snapshots to merge the chain, take an internal snapshot, or upgrade libvirt`,
};

/** What a snapshot that was taken left to do by hand. */
export const takeSays = {
    overlayModeUnread: (name: string, file: string, p: DomainProbe, why: string) =>
        `snapshot '${name}' was created, but the mode of its overlay ${file} could not be read (${why}); ` +
        `libvirt ${p.version.libvirt} may have left it readable by everyone (CVE-2025-13193). Check it on the host (chmod go-rwx), ` +
        `or with sudo give the login user NOPASSWD rules for /usr/bin/stat and /usr/bin/chmod`,
    overlayNotPrivate: (name: string, file: string, mode: string, why: string) =>
        `snapshot '${name}' was created, but its overlay ${file} is readable by others (mode ${mode}) and could not be made private: ` +
        `${why}. Run chmod go-rwx on it, or with sudo give the login user a NOPASSWD rule for /usr/bin/chmod`,
};

/** Why a delete is refused before anything changes (the why and the what-to-do of an external snapshot), or what it left. */
export const deleteSays = {
    refusedExternal: (t: { snapshotName: string; domainName: string }, why: string, what: string) =>
        `cannot delete external snapshot '${t.snapshotName}' of domain '${t.domainName}': ${why}. Nothing was changed. ${what}`,
    branched: (children: number, libvirt: string) => [
        `it has ${children} child snapshots (a revert made a branch), ` +
            `and libvirt ${libvirt} deletes an external snapshot with at most one child`,
        `Delete the newer snapshots of all but one branch first, then run destroy again, or set deletion: 'metadata' to keep the files.`,
    ],
    nonLeafShutOff: (children: number, libvirt: string) => [
        `the domain is shut off and the snapshot has ${children} child snapshot(s). ` +
            `libvirt ${libvirt} can merge a non-leaf external snapshot only while the domain runs`,
        `Start the domain and run destroy again, delete the newer snapshots first, or set deletion: 'metadata' to keep the files.`,
    ],
    outsideChain: (overlays: string, libvirt: string, lossy: boolean) => [
        `its overlay ${overlays} is not in the domain's current disk chain: the domain was reverted to an earlier snapshot since. ` +
            (lossy
                ? `libvirt ${libvirt} would delete the base image with it (a data loss fixed in 11.0: libvirt #734, virt-manager #811)`
                : `libvirt ${libvirt} can't delete it ('could not find base disk source in disk source chain')`),
        `Set deletion: 'metadata' to drop libvirt's record and keep every file${lossy ? ", or upgrade libvirt to 11.0 or newer" : ""}.`,
    ],
    disksInactive: (libvirt: string) => [
        `the domain is paused, and qemu has kept its disks inactive since a snapshot saved its memory while it was paused: ` +
            `libvirt ${libvirt} can't merge the overlays until the domain runs again`,
        `Resume the domain (virsh resume) and run destroy again, or set deletion: 'metadata' to keep the files.`,
    ],
    internalWhileRunning: (t: { snapshotName: string; domainName: string }, libvirt: string) =>
        `cannot delete internal snapshot '${t.snapshotName}' of domain '${t.domainName}' while it runs: ` +
        `libvirt ${libvirt} deletes it as a qemu job ` +
        `named after the snapshot, and qemu refuses that name in a job ID ('Invalid job ID'). Nothing was changed. ` +
        `Shut the domain off and run destroy ` +
        `again, or set deletion: 'metadata' to keep the data in the image.`,
    memoryFileLeft: (name: string, file: string, why: string, libvirt: string) =>
        `snapshot '${name}' was deleted, but its memory file could not be removed: ${file} (${why}). ` +
        `Remove it by hand (libvirt ${libvirt} leaves it; with sudo, the login user needs a NOPASSWD rule for /usr/bin/rm); ` +
        `running destroy again is safe`,
};

/** What check and a snapshot that ran out of space say about room on the host. */
export const spaceSays = {
    tooLittle: (domainName: string, total: string, mount: string, free: string, needs: string, advice: string) =>
        `domain '${domainName}': the snapshot needs ${total} on the filesystem mounted on ${mount}, ` +
        `and ${free} is free there (${needs}). ` +
        `Nothing was changed. To take it, ${advice}`,
    ranOut: (name: string, domainName: string, first: string, lines: readonly string[]) =>
        `out of space: snapshot '${name}' of domain '${domainName}' failed part-way: ${first}\n  ${lines.join("\n  ")}`,
    orphanInImage: (image: string, name: string) =>
        `${image} holds an internal snapshot '${name}' that libvirt has no record of: ` +
        `remove it with qemu-img snapshot -d while the domain is shut off`,
};
