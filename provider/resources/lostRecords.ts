// Other tools undefine and define a domain again (`virsh undefine --snapshots-metadata
// --checkpoints-metadata`, a Terraform or Pulumi domain resource being replaced), sometimes under
// a new UUID. libvirt then has no record of the domain's snapshots and checkpoints, though the
// images still hold them. The same domain is the same name on the same connection; its snapshots
// are given back to libvirt from the XML kept in the state, with the domain's new identity.
import { LibvirtError, isKind } from "../errors";
import { imageChain, listSnapshots, probeDomain, type DomainProbe } from "../host/probe";
import type { Virsh } from "../host/virsh";
import { parseSnapshotXml, withMomentIdentity, type SnapshotInfo } from "../host/xml";
import { observeSnapshot, type ObservedSnapshot } from "./moments";

/**
 * The domain a snapshot or checkpoint was made on: by its recorded UUID, else (undefined and defined
 * again, perhaps under a new UUID) by its recorded name on the same connection. Throws domain-not-found
 * when neither exists.
 */
export async function probeRecordedDomain(
    virsh: Virsh,
    rec: { domainUuid?: string; domainName?: string; domain: string },
): Promise<DomainProbe> {
    const first = rec.domainUuid || rec.domain;
    try {
        return await probeDomain(virsh, first);
    } catch (e) {
        if (!isKind(e, "domain-not-found") || !rec.domainName || rec.domainName === first) throw e;
        return probeDomain(virsh, rec.domainName);
    }
}

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
            if (!d.file || !(await imageChain(virsh, d.file, PURPOSE_LOST)))
                missing.push(`the overlay of disk ${d.name} (${d.file ?? "unnamed"}) is gone`);
        }
    }
    const memoryFile = s.memory.snapshot === "external" ? s.memory.file : undefined;
    if (memoryFile) {
        // The same command (and sudo rule) as the overlays' mode check.
        const r = await virsh.host(["stat", "-c", "%a %u %g", "--", memoryFile]);
        if (r.code !== 0 && /No such file or directory/.test(r.stderr)) missing.push(`the memory file ${memoryFile} is gone`);
        else if (r.code !== 0) {
            throw new LibvirtError(
                "failed",
                `cannot tell whether the memory file ${memoryFile} of a lost snapshot is still there: ${r.stderr.trim() || `stat exited with ${r.code}`}` +
                    (/sudo:/.test(r.stderr) ? ` (with sudo, the login user needs a NOPASSWD rule for /usr/bin/stat)` : ""),
                { command: r.command, exitCode: r.code, stderr: r.stderr },
            );
        }
    }
    return missing;
}

export type SnapshotRecordStatus =
    | { status: "present" }
    /** Lost by libvirt, still in the images: `restore` gives it back (and did, unless asked only to look). */
    | { status: "restorable" }
    | { status: "restored"; names: string[] }
    | { status: "gone"; reason: string };

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
): Promise<SnapshotRecordStatus> {
    const domain = probe.info.uuid;
    const existing = new Set(await listSnapshots(virsh, domain));
    if (existing.has(kept.snapshotName)) return { status: "present" };
    if (!kept.xml)
        return {
            status: "gone",
            reason: "libvirt has no record of it, and the state holds no snapshot XML to give it back from (it was recorded by provider 0.1.0, which did not keep it)",
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

/**
 * One exchange: whether libvirt lists the snapshot under the domain's recorded UUID (the usual case, so the rest
 * is asked only when not); with `read`, the snapshot as libvirt has it, in that same exchange.
 */
async function listedUnderRecordedUuid(
    virsh: Virsh,
    domainUuid: string,
    name: string,
    read: boolean,
): Promise<{ observed?: ObservedSnapshot } | undefined> {
    try {
        if (read) return { observed: await observeSnapshot(virsh, domainUuid, name) };
        await virsh.query(["snapshot-info", "--domain", domainUuid, "--snapshotname", name]);
        return {};
    } catch (e) {
        if (isKind(e, "snapshot-not-found") || isKind(e, "domain-not-found")) return undefined;
        throw e;
    }
}

/** What a recorded snapshot needs from libvirt: a kept record, and the domain it was made on. */
export interface RecordedSnapshot {
    domain: string;
    domainName?: string;
    domainUuid?: string;
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
): Promise<{ domain: string; probe?: DomainProbe; record: SnapshotRecordStatus; observed?: ObservedSnapshot } | undefined> {
    const recorded = rec.domainUuid || rec.domain;
    const listed = await listedUnderRecordedUuid(virsh, recorded, rec.snapshotName, opts.read ?? false);
    if (listed) return { domain: recorded, record: { status: "present" }, observed: listed.observed };
    let probe: DomainProbe;
    try {
        probe = await probeRecordedDomain(virsh, rec);
    } catch (e) {
        if (isKind(e, "domain-not-found")) return undefined;
        throw e;
    }
    return { domain: probe.info.uuid, probe, record: await snapshotRecord(virsh, probe, rec, opts) };
}
