// Other tools undefine and define a domain again (`virsh undefine --snapshots-metadata
// --checkpoints-metadata`, a Terraform or Pulumi domain resource being replaced), sometimes under
// a new UUID. libvirt then has no record of the domain's snapshots and checkpoints, though the
// images still hold them. The same domain is the same name on the same connection; its snapshots
// and checkpoints are given back to libvirt from the XML kept in the state, with the domain's new
// identity. Diff only looks (`restore: false`; so does DomainSnapshot's refresh): a lost record
// whose data is still there is `restorable`, and diff plans the update that gives it back. Update
// and delete give it back (so does DomainCheckpoint's refresh, for now).
import { LibvirtError, isKind, notRunning } from "../errors";
import { hostFailure } from "../failures";
import { imageChain, listCheckpoints, listSnapshots, probeDomain, VERSIONS, type DomainProbe } from "../host/probe";
import type { Virsh } from "../host/virsh";
import {
    overlayLocation,
    parseCheckpointXml,
    parseSnapshotXml,
    withMomentIdentity,
    type CheckpointInfo,
    type SnapshotInfo,
} from "../host/xml";
import { observeSnapshot, type ObservedSnapshot } from "../snapshot/observe";

/** The domain a moment was recorded on, as the state keeps it. */
interface RecordedDomain {
    domain: string;
    domainName?: string;
    domainUuid?: string;
}

/**
 * The domain a snapshot or checkpoint was made on: by its recorded UUID, else (undefined and defined
 * again, perhaps under a new UUID) by its recorded name on the same connection. Throws domain-not-found
 * when neither exists.
 */
export async function probeRecordedDomain(virsh: Virsh, rec: RecordedDomain): Promise<DomainProbe> {
    const first = rec.domainUuid || rec.domain;
    try {
        return await probeDomain(virsh, first);
    } catch (e) {
        if (!isKind(e, "domain-not-found") || !rec.domainName || rec.domainName === first) throw e;
        return probeDomain(virsh, rec.domainName);
    }
}

/** Where a recorded snapshot's or checkpoint's libvirt record is, the same for both kinds. */
export type RecordStatus =
    | { status: "present" }
    /** Lost by libvirt, and nothing read shows its data gone: `restore` gives it back (and did, unless asked only to look). */
    | { status: "restorable" }
    /** Given back, with the names of the records given back (ancestors and re-attached children included). */
    | { status: "restored"; names: string[] }
    | { status: "gone"; reason: string };

/** An answer from libvirt, or undefined where it has no such moment or domain (under the UUID asked). */
async function unlessNotFound<T>(ask: () => Promise<T>): Promise<T | undefined> {
    try {
        return await ask();
    } catch (e) {
        if (isKind(e, "snapshot-not-found") || isKind(e, "checkpoint-not-found") || isKind(e, "domain-not-found")) return undefined;
        throw e;
    }
}

/**
 * The walk both kinds share: one exchange when libvirt lists the moment under the domain's recorded UUID (the usual
 * case, `listed` answers); else the domain found again (by UUID, else by name) and its record's status asked of it.
 * Undefined when the domain is gone.
 */
async function locate<T>(
    virsh: Virsh,
    rec: RecordedDomain,
    listed: (domainUuid: string) => Promise<T | undefined>,
    record: (probe: DomainProbe) => Promise<RecordStatus>,
): Promise<{ domain: string; probe?: DomainProbe; record: RecordStatus; listed?: T } | undefined> {
    const recorded = rec.domainUuid || rec.domain;
    const found = await listed(recorded);
    if (found !== undefined) return { domain: recorded, record: { status: "present" }, listed: found };
    let probe: DomainProbe;
    try {
        probe = await probeRecordedDomain(virsh, rec);
    } catch (e) {
        if (isKind(e, "domain-not-found")) return undefined;
        throw e;
    }
    return { domain: probe.info.uuid, probe, record: await record(probe) };
}

// ---- snapshots ---------------------------------------------------------------

/**
 * Snapshots given back while their parent had no record, keyed by domain UUID and the parent's name. A chain's
 * members are given back each by its own resource, in whatever order Pulumi runs them; when the parent comes
 * back later in the same run, its children are re-attached to it. Only each snapshot's own XML is kept in the
 * state: keeping every ancestor's grew the state and each create with the length of the chain.
 */
const orphans = new Map<string, Array<{ name: string; xml: string }>>();
const orphanKey = (domainUuid: string, parent: string) => `${domainUuid}\n${parent}`;

const PURPOSE_LOST = "to tell whether a lost snapshot's data is still there";

/**
 * Why a snapshot's data is no longer where its record says, as the host's images show it; empty when it is
 * all there. Internal: the snapshot is in the image chain of each of its disks as the domain has them now
 * (a snapshot deleted with qemu-img, or a disk replaced, is gone). External: each overlay file still opens,
 * and so does the memory file.
 */
export async function snapshotDataMissing(virsh: Virsh, probe: DomainProbe, s: SnapshotInfo): Promise<string[]> {
    const missing: string[] = [];
    for (const d of s.disks) {
        if (d.snapshot === "internal") {
            const disk = probe.info.disks.find((x) => x.target === d.name);
            if (!disk?.source || disk.type !== "file") {
                missing.push(`domain '${probe.info.name}' has no file-backed disk ${d.name} now`);
                continue;
            }
            const chain = await imageChain(virsh, disk.source, PURPOSE_LOST);
            if (!chain?.some((img) => img.snapshots?.some((x) => x.name === s.name)))
                missing.push(`no image in the chain of disk ${d.name} (${disk.source}) holds internal snapshot '${s.name}'`);
        } else if (d.snapshot === "external") {
            if (d.network) {
                // qemu-img on the host can't be trusted to reach it (rbd keys, iSCSI logins...): not checked, so never made up.
                missing.push(`the overlay of disk ${d.name} is on the network (${overlayLocation(d)}), where the host can't check it`);
            } else if (!d.file) missing.push(`the record names no overlay for disk ${d.name}`);
            else if (!(await imageChain(virsh, d.file, PURPOSE_LOST))) missing.push(`the overlay of disk ${d.name} (${d.file}) is gone`);
        }
    }
    const memoryFile = s.memory.snapshot === "external" ? s.memory.file : undefined;
    if (memoryFile) {
        // The same command (and sudo rule) as the overlays' mode check.
        const r = await virsh.host(["stat", "-c", "%a %u %g", "--", memoryFile]);
        if (r.code !== 0 && /No such file or directory/.test(r.stderr)) missing.push(`the memory file ${memoryFile} is gone`);
        else if (r.code !== 0) {
            throw hostFailure(
                "failed",
                `cannot tell whether the memory file ${memoryFile} of a lost snapshot is still there: ` +
                    (r.stderr.trim() || `stat exited with ${r.code}`) +
                    (/sudo:/.test(r.stderr) ? ` (with sudo, the login user needs a NOPASSWD rule for /usr/bin/stat)` : ""),
                r,
            );
        }
    }
    return missing;
}

/**
 * Whether libvirt still has this snapshot's record, and if not, whether the images still hold its data.
 * With `restore`, a lost record whose data is there is given back (`snapshot-create --redefine`) from the
 * kept XML, ancestors first, each re-parented onto its nearest ancestor that exists and fitted to the domain's
 * UUID now; `--current` when it was the current snapshot and the domain has none now. A snapshot whose data is
 * gone is never given back. Without `restore` the host is only read. Call inside the domain's lock.
 */
export async function snapshotRecord(
    virsh: Virsh,
    probe: DomainProbe,
    kept: { snapshotName: string; xml?: string; isCurrent?: boolean },
    opts: { restore: boolean },
): Promise<RecordStatus> {
    const domain = probe.info.uuid;
    const existing = new Set(await listSnapshots(virsh, domain));
    if (existing.has(kept.snapshotName)) return { status: "present" };
    if (!kept.xml)
        return {
            status: "gone",
            reason:
                "libvirt has no record of it, and the state holds no snapshot XML to give it back from " +
                "(it was recorded by provider 0.1.0, which did not keep it)",
        };
    const own = parseSnapshotXml(kept.xml);
    const missing = await snapshotDataMissing(virsh, probe, own);
    if (missing.length) return { status: "gone", reason: `libvirt has no record of it, and its data is gone: ${missing.join("; ")}` };
    if (!opts.restore) return { status: "restorable" };
    let hasCurrent = true;
    try {
        await virsh.query(["snapshot-current", "--domain", domain, "--name"]);
    } catch (e) {
        if (!(isKind(e, "snapshot-not-found") || (e instanceof LibvirtError && /has no current snapshot/.test(e.message)))) throw e;
        hasCurrent = false;
    }
    // The parent named in the kept XML, where libvirt has it now. Where it has not (its record is lost too and not
    // given back yet, or it is gone), the snapshot is given back without a parent, and re-attached when the parent's
    // own resource gives it back in this run; libvirt keeps a child's relations when its parent is redefined.
    const wanted = own.parent;
    const parent = wanted !== undefined && existing.has(wanted) ? wanted : undefined;
    const current = kept.isCurrent === true && !hasCurrent;
    await redefineSnapshot(virsh, domain, kept.xml, parent, current);
    if (wanted !== undefined && parent === undefined) {
        const key = orphanKey(domain, wanted);
        orphans.set(key, [
            ...(orphans.get(key) ?? []).filter((o) => o.name !== kept.snapshotName),
            { name: kept.snapshotName, xml: kept.xml },
        ]);
    }
    const names = [kept.snapshotName];
    const children = orphans.get(orphanKey(domain, kept.snapshotName)) ?? [];
    orphans.delete(orphanKey(domain, kept.snapshotName));
    for (const child of children) {
        if (!existing.has(child.name)) continue; // deleted since: a redefine would make it up again
        await redefineSnapshot(virsh, domain, child.xml, kept.snapshotName, false);
        names.push(child.name);
    }
    return { status: "restored", names };
}

/** `snapshot-create --redefine` from a kept XML, fitted to the domain's UUID now and to the given parent. */
async function redefineSnapshot(
    virsh: Virsh,
    domainUuid: string,
    xml: string,
    parent: string | undefined,
    current: boolean,
): Promise<void> {
    await virsh.run(
        ["snapshot-create", "--domain", domainUuid, "--xmlfile", "/dev/stdin", "--redefine", ...(current ? ["--current"] : [])],
        {
            stdin: withMomentIdentity(xml, "domainsnapshot", { parent, uuid: domainUuid }),
        },
    );
}

/** What a recorded snapshot needs from libvirt: a kept record, and the domain it was made on. */
export interface RecordedSnapshot extends RecordedDomain {
    snapshotName: string;
    xml?: string;
    isCurrent?: boolean;
}

/**
 * Where a recorded snapshot is now: its domain's UUID now (found by the recorded UUID, else by name), and
 * whether libvirt has its record; with `restore`, a lost record whose data is still there is given back
 * first (see snapshotRecord). One exchange when libvirt has it under the recorded UUID; with `read`, that
 * exchange also reads the snapshot (`observed`), for a caller that needs it next. Undefined when the domain
 * is gone.
 */
export async function locateSnapshot(
    virsh: Virsh,
    rec: RecordedSnapshot,
    opts: { restore: boolean; read?: boolean },
): Promise<{ domain: string; probe?: DomainProbe; record: RecordStatus; observed?: ObservedSnapshot } | undefined> {
    const name = rec.snapshotName;
    const at = await locate(
        virsh,
        rec,
        (uuid) =>
            unlessNotFound(async (): Promise<{ observed?: ObservedSnapshot }> => {
                if (opts.read) return { observed: await observeSnapshot(virsh, uuid, name) };
                await virsh.query(["snapshot-info", "--domain", uuid, "--snapshotname", name]);
                return {};
            }),
        (probe) => snapshotRecord(virsh, probe, rec, opts),
    );
    return at && { domain: at.domain, probe: at.probe, record: at.record, observed: at.listed?.observed };
}

// ---- checkpoints -------------------------------------------------------------

/**
 * A shut-off domain's images, read with `qemu-img info -U` on the libvirt host: which of the checkpoint's bitmaps
 * are missing or marked in-use (inconsistent). The read that tells whether a lost checkpoint's data is still there,
 * and the health check of a shut-off domain's checkpoint (refresh, DomainBackup).
 */
export async function bitmapsMissingOffline(virsh: Virsh, probe: DomainProbe, c: CheckpointInfo): Promise<string[]> {
    const missing: string[] = [];
    for (const d of c.disks) {
        if (d.checkpoint !== "bitmap") continue;
        const disk = probe.info.disks.find((x) => x.target === d.name);
        if (!disk) continue; // detached since: libvirt tolerates that too
        const bitmap = d.bitmap ?? c.name;
        if (!disk.source || (disk.type !== "file" && disk.type !== "block")) {
            throw new LibvirtError(
                "unsupported",
                `cannot check whether bitmap '${bitmap}' is still in disk ${d.name} of the shut-off domain '${probe.info.name}': ` +
                    `it is a ${disk.type} disk. Start the domain and try again, so libvirt can check it`,
            );
        }
        const images = await imageChain(
            virsh,
            disk.source,
            `to check whether bitmap '${bitmap}' is still in it ` +
                `(domain '${probe.info.name}' is shut off, so libvirt can't; start it and try again)`,
        );
        if (!images) {
            missing.push(`bitmap '${bitmap}' is not in disk ${d.name}: its image ${disk.source} is gone`);
            continue;
        }
        const found = images.flatMap((img) => img["format-specific"]?.data?.bitmaps ?? []).find((b) => b.name === bitmap);
        if (!found) missing.push(`bitmap '${bitmap}' is not in disk ${d.name} (${disk.source})`);
        else if (found.flags?.includes("in-use"))
            missing.push(`bitmap '${bitmap}' of disk ${d.name} is marked in-use (inconsistent: qemu did not close it cleanly)`);
    }
    return missing;
}

/** What a recorded checkpoint needs from libvirt: its kept record, its ancestors' (oldest first), and its domain. */
export interface RecordedCheckpoint extends RecordedDomain {
    checkpointName: string;
    xml?: string;
    lineage?: Array<{ name: string; xml: string }>;
}

/**
 * Whether libvirt still has this checkpoint's record, and if not, whether the images still hold its bitmaps.
 *
 * Without `restore` the host is only read. A shut-off domain's images show its bitmaps (qemu-img). A running
 * domain's don't: qemu keeps a bitmap made since it started in memory until it stops, and only libvirt's
 * `--redefine-validate` (a write) can tell; so there a lost record is `restorable`, and the update that gives it
 * back says if its bitmaps turn out gone.
 *
 * With `restore`, the record is given back from the kept XML, ancestors first (libvirt needs the parent to exist),
 * each re-parented onto its nearest ancestor that exists and fitted to the domain's UUID now; only where the
 * bitmaps are still in the images (`--redefine-validate` while the domain runs, qemu-img while it is shut off):
 * a checkpoint whose bitmap is gone is never resurrected. Call inside the domain's lock.
 */
export async function checkpointRecord(
    virsh: Virsh,
    probe: DomainProbe,
    kept: RecordedCheckpoint,
    opts: { restore: boolean },
): Promise<RecordStatus> {
    const domain = probe.info.uuid;
    const existing = new Set(await listCheckpoints(virsh, domain));
    if (existing.has(kept.checkpointName)) return { status: "present" };
    if (!kept.xml) return { status: "gone", reason: "the state holds no checkpoint XML to restore it from" };
    if (!opts.restore) {
        if (probe.active) return { status: "restorable" };
        const missing = await bitmapsMissingOffline(virsh, probe, parseCheckpointXml(kept.xml));
        return missing.length ? { status: "gone", reason: missing.join("; ") } : { status: "restorable" };
    }
    const chain = [...(kept.lineage ?? []), { name: kept.checkpointName, xml: kept.xml }];
    let parent: string | undefined;
    const names: string[] = [];
    for (const [i, entry] of chain.entries()) {
        if (existing.has(entry.name)) {
            parent = entry.name;
            continue;
        }
        // Re-parent onto the nearest ancestor that exists: one whose bitmap is gone stays gone.
        // Fitted to the domain's UUID now: libvirt refuses a record of another UUID, and the domain may have been defined
        // again under a new one.
        const result = await redefineIfBitmapsExist(
            virsh,
            probe,
            withMomentIdentity(entry.xml, "domaincheckpoint", { parent, uuid: domain }),
        );
        if (result === true) {
            names.push(entry.name);
            parent = entry.name;
        } else if (i === chain.length - 1) return { status: "gone", reason: result };
    }
    return { status: "restored", names };
}

/** true when redefined; else why not (the bitmaps are not in the images). */
async function redefineIfBitmapsExist(virsh: Virsh, probe: DomainProbe, xml: string): Promise<true | string> {
    const domain = probe.info.uuid;
    const redefine = ["checkpoint-create", "--domain", domain, "--xmlfile", "/dev/stdin", "--redefine"];
    if (probe.active) {
        const validate = probe.version.number >= VERSIONS.checkpointRedefineValidate;
        try {
            await virsh.run([...redefine, ...(validate ? ["--redefine-validate"] : [])], { stdin: xml });
            return true;
        } catch (e) {
            if (e instanceof LibvirtError && /checkpoint inconsistent|missing or broken bitmap/.test(e.message))
                return e.message.split("\n")[0]!;
            if (notRunning(e)) return redefineIfBitmapsExist(virsh, { ...probe, active: false, state: "shut off" }, xml);
            throw e;
        }
    }
    const missing = await bitmapsMissingOffline(virsh, probe, parseCheckpointXml(xml));
    if (missing.length) return missing.join("; ");
    await virsh.run(redefine, { stdin: xml });
    return true;
}

/**
 * Where a recorded checkpoint is now, only read (diff): its domain's UUID now, and whether libvirt has its record
 * (see checkpointRecord without `restore`). One exchange when libvirt has it under the recorded UUID. Undefined when
 * the domain is gone.
 */
export async function locateCheckpoint(
    virsh: Virsh,
    rec: RecordedCheckpoint,
): Promise<{ domain: string; record: RecordStatus } | undefined> {
    const name = rec.checkpointName;
    return locate(
        virsh,
        rec,
        (uuid) => unlessNotFound(() => virsh.query(["checkpoint-info", "--domain", uuid, "--checkpointname", name])),
        (probe) => checkpointRecord(virsh, probe, rec, { restore: false }),
    );
}
