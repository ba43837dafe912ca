// The disks a snapshot or checkpoint covers, as a plan (snapshot, checkpoint, backup) reads them.
import type { DomainDisk, DomainInfo } from "../host/xml";

export function isWritableDisk(d: DomainDisk): boolean {
    return d.device === "disk" && !d.readonly;
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
        const disk = dom.disks.find((x) => x.target === d.name || x.source === d.name);
        if (!disk)
            fail(
                `disks[${i}].name`,
                `domain '${dom.name}' has no disk '${d.name}' (its disks: ${dom.disks.map((x) => x.target).join(", ") || "none"})`,
            );
        else overrides.set(disk.target, i);
    });
    const out: Array<{ disk: DomainDisk; entry?: T; index?: number }> = [];
    for (const disk of dom.disks) {
        const index = overrides.get(disk.target);
        if (index === undefined && !isWritableDisk(disk)) continue;
        out.push({ disk, ...(index === undefined ? {} : { entry: requested![index]!, index }) });
    }
    return out;
}
