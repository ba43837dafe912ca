// The disks a snapshot or checkpoint covers, as a plan (snapshot, checkpoint, backup) reads them.
import type { DomainDisk, DomainInfo } from "../host/xml";

export function isWritableDisk(d: DomainDisk): boolean {
    return d.device === "disk" && !d.readonly;
}

/**
 * The disks a `disks[i].name` names: by target, or by source (a file's or block device's path, a network disk's
 * `protocol://host/name`); else by a network disk's bare name, which may name several disks on different servers.
 */
export function diskNamed(dom: DomainInfo, name: string): DomainDisk[] {
    const exact = dom.disks.find((x) => x.target === name || x.source === name);
    if (exact) return [exact];
    return dom.disks.filter((x) => x.network?.name === name);
}

export type Fail = (property: string, reason: string) => void;

/**
 * The domain's disks a moment is planned for: every writable disk, and any
 * other disk a `disks[i]` entry names (by target or source path), each with
 * that entry. An entry that names no disk of the domain is a failure.
 */
export function coveredDisks<T extends { name: string }>(
    requested: readonly T[] | undefined,
    dom: DomainInfo,
    fail: Fail,
): Array<{ disk: DomainDisk; entry?: T; index?: number }> {
    const overrides = new Map<string, number>();
    requested?.forEach((d, i) => {
        const found = diskNamed(dom, d.name);
        if (found.length === 1) overrides.set(found[0]!.target, i);
        else if (found.length > 1)
            fail(
                `disks[${i}].name`,
                `'${d.name}' is the name of ${found.length} network disks of domain '${dom.name}' on different servers ` +
                    `(${found.map((x) => `${x.target}: ${x.source}`).join(", ")}): name one by its target or its full location`,
            );
        else
            fail(
                `disks[${i}].name`,
                `domain '${dom.name}' has no disk '${d.name}' (its disks: ${dom.disks.map((x) => x.target).join(", ") || "none"})`,
            );
    });
    const out: Array<{ disk: DomainDisk; entry?: T; index?: number }> = [];
    for (const disk of dom.disks) {
        const index = overrides.get(disk.target);
        if (index === undefined && !isWritableDisk(disk)) continue;
        out.push({ disk, ...(index === undefined ? {} : { entry: requested![index]!, index }) });
    }
    return out;
}
