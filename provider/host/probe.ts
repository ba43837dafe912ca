// Read-only questions to the libvirt host, shared by every resource: what a
// domain looks like right now, and what this libvirt can do. Preview asks
// only these, so it never changes a VM.
import { LibvirtError } from "../errors";
import { hostFailure } from "../failures";
import { Virsh, type LibvirtVersion } from "./virsh";
import { diskChainsOf, parseDomainXml, type DomainDisk, type DomainInfo } from "./xml";

export type DomainState =
    "running" | "paused" | "shut off" | "crashed" | "pmsuspended" | "in shutdown" | "idle" | "blocked" | "no state" | string;

export interface DomainProbe {
    info: DomainInfo;
    state: DomainState;
    /** running, paused and the like: qemu is up, so memory exists. */
    active: boolean;
    version: LibvirtVersion;
    /** Checkpoints of a shut-off domain, which limit the snapshots libvirt takes of it. Not asked of a running domain. */
    checkpointsWhileOff: string[];
}

/** A name qemu takes in a job ID (util/id.c), after libvirt's own prefix. */
export function isJobIdSafe(name: string): boolean {
    return /^[A-Za-z0-9._-]+$/.test(name);
}

export async function probeDomain(virsh: Virsh, domain: string): Promise<DomainProbe> {
    const [xml, state, version] = await Promise.all([
        virsh.query(["dumpxml", "--domain", domain]),
        stateOf(virsh, domain),
        virsh.version(),
    ]);
    const info = parseDomainXml(xml);
    const active = state !== "shut off" && state !== "crashed" && state !== "no state";
    const checkpointsWhileOff = !active && version.number >= VERSIONS.checkpoints ? await listCheckpoints(virsh, info.uuid) : [];
    return { info, state, active, version, checkpointsWhileOff };
}

/** The domain's state as `virsh domstate` names it: running, paused, shut off... */
export async function stateOf(virsh: Virsh, domain: string): Promise<DomainState> {
    return (await virsh.query(["domstate", "--domain", domain])).trim().split("\n")[0]!.trim();
}

/** The names virsh lists, one per line (`--name` listings end with a blank line). */
export function names(out: string): string[] {
    return out
        .split("\n")
        .map((l) => l.trim())
        .filter(Boolean);
}

export async function listCheckpoints(virsh: Virsh, domain: string): Promise<string[]> {
    return names(await virsh.query(["checkpoint-list", "--domain", domain, "--name"]));
}

export async function listSnapshots(virsh: Virsh, domain: string): Promise<string[]> {
    return names(await virsh.query(["snapshot-list", "--domain", domain, "--name"]));
}

// Capabilities (virsh.capabilities()) decide where libvirt says what it can do;
// these versions decide where it doesn't.
export const VERSIONS = {
    /** libvirt deletes external snapshots itself from 9.0 on (a leaf, or any snapshot of a running domain; NEWS 9.0). */
    externalSnapshotDelete: 9_000_000,
    /**
     * An internal snapshot of a shut-off domain that has checkpoints: 9.0 refuses it ('cannot perform
     * block operations while checkpoint exists'), 11.3 takes it (both measured). No NEWS entry says
     * when it changed, so the versions between are treated as 9.0.
     */
    internalSnapshotWithCheckpointsOffline: 11_003_000,
    /**
     * libvirt 10.9 runs internal snapshots of a running domain as qemu jobs named after the snapshot
     * (NEWS 10.9: snapshot-save/snapshot-delete), and qemu takes only letters, digits, '-', '.' and '_'
     * in a job ID: 11.3 measured ('Invalid job ID'), 9.0 takes any name.
     */
    internalSnapshotJobIds: 10_009_000,
    /**
     * Internal snapshots of a domain whose firmware runs from pflash (UEFI): none before 10.9 (measured on 9.0, running or shut
     * off: 'internal snapshots of a VM with pflash based firmware are not supported'); from 10.9 (NEWS 10.9/10.10) a running
     * domain's only with a qcow2 NVRAM, which gets the snapshot too (11.3 measured; a raw one: 'require QCOW2 nvram format'),
     * a shut-off domain's with any NVRAM, which is then left out of the snapshot (11.3 measured).
     */
    pflashInternalSnapshot: 10_009_000,
    /** Checkpoints arrived in 5.6. */
    checkpoints: 5_006_000,
    /** `checkpoint-create --redefine-validate` arrived in 6.10. */
    checkpointRedefineValidate: 6_010_000,
    /** From 7.0 a checkpoint can be redefined without its <domain> (`checkpoint-dumpxml --no-domain`). */
    checkpointWithoutDomain: 7_000_000,
    /**
     * libvirt removes an external snapshot's memory file when it deletes the snapshot from 9.1 on
     * (NEWS 9.1; 9.0 keeps it, 11.3 removes it: measured).
     */
    snapshotDeleteRemovesMemoryFile: 9_001_000,
    /**
     * libvirt 10.8 to 11.x parse qemu's answers with json-c, whose nesting limit a long backing chain passes:
     * the domain then fails to start ('failed to parse JSON: nesting too deep'); 12.0 fixes it (NEWS).
     * Measured on 11.3: a disk whose chain holds 25 images (the base's own backing files counted) starts, 26 don't.
     */
    chainJsonLimit: { from: 10_008_000, fixedIn: 12_000_000, maxImages: 25 },
    /**
     * libvirt 9.9 (external revert) to 10.x deleted the base image when an external snapshot was deleted
     * after a revert to its internal parent (virt-manager #811, libvirt #734); 11.0 fixes it (NEWS). Neither lab host
     * is in the range: 9.0 refuses that delete ('could not find base disk source'), 11.3 keeps every file (measured).
     */
    deleteAfterRevertDataLoss: { from: 9_009_000, fixedIn: 11_000_000 },
    /**
     * CVE-2025-13193: before 11.10 the overlays of an external snapshot of a shut-off domain were created 0644, readable
     * by everyone (NEWS 11.10). Measured: 9.0 makes them 0644; Debian's 11.3 build carries the fix (0600). Memory
     * files, overlays of running domains, revert overlays and backup files are 0600 on both.
     */
    offlineOverlayPrivate: 11_010_000,
} as const;

/** True when libvirt's version lies in [from, fixedIn). */
export function inRange(version: number, r: { from: number; fixedIn: number }): boolean {
    return version >= r.from && version < r.fixedIn;
}

/** One image as `qemu-img info --output=json` describes it: the fields the provider reads. */
export interface ImageInfo {
    filename: string;
    snapshots?: Array<{ name: string }>;
    "format-specific"?: { data?: { bitmaps?: Array<{ name: string; flags?: string[] }> } };
}

/**
 * An image and its backing files on the host, top first, with `qemu-img info -U --backing-chain` (read-only,
 * also while qemu holds the image). undefined when the file does not exist; any other failure (a permission
 * problem, sudo) is an error that says what the provider wanted to know (`purpose`), never "gone".
 */
export async function imageChain(virsh: Virsh, file: string, purpose: string): Promise<ImageInfo[] | undefined> {
    const r = await virsh.host(["qemu-img", "info", "--output=json", "-U", "--backing-chain", "--", file]);
    if (r.code !== 0) {
        if (/No such file or directory/.test(r.stderr)) return undefined;
        throw hostFailure(
            "failed",
            `cannot read ${file} on the host ${purpose}: ${r.stderr.trim() || `qemu-img exited with ${r.code}`}` +
                (/sudo:/.test(r.stderr) ? ` (with sudo, the login user needs a NOPASSWD rule for /usr/bin/qemu-img info)` : ""),
            r,
        );
    }
    const parsed = JSON.parse(r.stdout) as ImageInfo | ImageInfo[];
    return Array.isArray(parsed) ? parsed : [parsed];
}

/**
 * Each file-backed disk's chain of images, top first: from libvirt's XML where it records the whole chain
 * (a running domain), else read on the host with imageChain (a shut-off domain's XML may name only the top).
 * A disk that is not a file is left out.
 */
export async function diskChains(virsh: Virsh, domain: string, disks: readonly DomainDisk[]): Promise<Map<string, string[]>> {
    const recorded = diskChainsOf(await virsh.query(["dumpxml", "--domain", domain]));
    const out = new Map<string, string[]>();
    for (const d of disks) {
        if (d.type !== "file" || !d.source) continue;
        const known = recorded.get(d.target);
        if (known?.complete) {
            out.set(d.target, known.files);
            continue;
        }
        const chain = await imageChain(virsh, d.source, `to measure the backing chain of disk ${d.target}`);
        if (!chain) throw new LibvirtError("failed", `disk ${d.target}'s image ${d.source} does not exist on the host`);
        out.set(
            d.target,
            chain.map((i) => i.filename),
        );
    }
    return out;
}

/** `virsh domstate --reason`: "running (booted)", "paused (I/O error)", "paused (user)"... */
export async function stateWithReason(virsh: Virsh, domain: string): Promise<string> {
    return (await virsh.query(["domstate", "--domain", domain, "--reason"])).trim().split("\n")[0]!.trim();
}
