// A snapshot's plan: the XML and the virsh command that DomainSnapshot and each member of a
// RestorePoint take, decided against the live domain and this libvirt, or the failures that say
// exactly why it can't be taken (check reports them; create throws them).
import * as path from "node:path";
import type { CheckFailure } from "../inputs";
import { VERSIONS, diskChains, inRange, isJobIdSafe, type DomainProbe } from "../host/probe";
import type { Virsh } from "../host/virsh";
import { buildSnapshotXml, type DomainDisk, type MakerMark, type SnapshotSpec } from "../host/xml";
import { coveredDisks, isWritableDisk, type Fail } from "../moments/disks";
import { guestAgentMissing } from "../moments/messages";
import { planSays } from "./messages";

/** What a snapshot is asked to be: DomainSnapshot's inputs, or one member of a RestorePoint. */
export interface SnapshotRequest {
    snapshotName: string;
    description?: string;
    kind: "internal" | "external";
    memory?: "none" | "internal" | "external";
    memoryFile?: string;
    disks?: Array<{ name: string; snapshot: "internal" | "external" | "no"; file?: string; driverType?: "qcow2" | "raw" | "qed" }>;
    quiesce: boolean;
    atomic: boolean;
    live: boolean;
    halt: boolean;
    deletion: "delete" | "metadata";
}

export interface SnapshotPlan {
    spec: SnapshotSpec;
    xml: string;
    /** The whole virsh argument vector; the XML goes on its stdin. */
    argv: string[];
    /** The domain's UUID. */
    domain: string;
    memory: "none" | "internal" | "external";
    kind: "internal" | "external";
}

function defaultMemoryFile(probe: DomainProbe, snapshotName: string): string | undefined {
    // Beside an image file only: a block device's folder is /dev.
    const first = probe.info.disks.find((d) => isWritableDisk(d) && d.type === "file" && d.source?.startsWith("/"));
    if (!first?.source) return undefined;
    const safe = snapshotName.replace(/[^A-Za-z0-9._-]/g, "_");
    return path.posix.join(path.posix.dirname(first.source), `${probe.info.name.replace(/[^A-Za-z0-9._-]/g, "_")}.${safe}.mem`);
}

/** The domain's own snapshot policy for a disk (<disk snapshot=...>), where it names one libvirt knows. */
function policyOf(d: DomainDisk): "no" | "internal" | "external" | "manual" | undefined {
    const p = d.snapshot;
    return p === "no" || p === "internal" || p === "external" || p === "manual" ? p : undefined;
}

/**
 * Decide the snapshot XML and the virsh command, or say exactly why this
 * domain and this libvirt can't take it. Check reports the failures; create throws them.
 */
export function planSnapshot(v: SnapshotRequest, probe: DomainProbe): { plan?: SnapshotPlan; failures: CheckFailure[] } {
    const failures: CheckFailure[] = [];
    const fail: Fail = (property, reason) => failures.push({ property, reason });
    const dom = probe.info;
    const running = probe.active;
    // Where an external memory state goes unless memoryFile says: beside the first disk image, whatever the disks decide.
    const besideFirstDisk = defaultMemoryFile(probe, v.snapshotName);

    // Per-disk mode: a disks[] entry, else the domain's own policy for the disk (<disk snapshot=...>), else the kind;
    // cdroms and read-only disks are left to libvirt.
    const disks: SnapshotSpec["disks"] = [];
    /** Why each disk got its mode, for the messages: the property that asked for it, and whether the domain's policy did. */
    const why = new Map<string, { prop: string; policy?: string; index?: number; disk: DomainDisk }>();
    /** The property that asked for the first internal disk snapshot. */
    let internalProp: string | undefined;
    for (const { disk: d, entry: o, index: i } of coveredDisks(v.disks, dom, fail)) {
        const policy = o ? undefined : policyOf(d);
        // 'manual' (libvirt 8.2 and newer): libvirt leaves the disk to the user and keeps the domain paused until then
        // (read in libvirt's qemuSnapshotPrepare, has_manual; the pause as formatsnapshot documents it). Not measured.
        if (policy === "manual") {
            fail("disks", planSays.policyManual(d));
            continue;
        }
        const mode = o?.snapshot ?? policy ?? v.kind;
        const prop = i === undefined ? "kind" : `disks[${i}].snapshot`;
        why.set(d.target, { prop, disk: d, ...(policy ? { policy } : {}), ...(i !== undefined ? { index: i } : {}) });
        if (mode === "internal" && d.format !== "qcow2") {
            fail(prop, planSays.internalNeedsQcow2(d));
        }
        if (mode === "internal") internalProp ??= prop;
        // Measured on 9.0 and 11.3: 'source for disk 'vda' is not a regular file; refusing to generate external snapshot name'.
        if (mode === "external" && d.type === "block" && !o?.file) {
            fail(i === undefined ? "kind" : `disks[${i}].file`, planSays.blockDeviceOverlay(d));
        }
        disks.push({
            name: d.target,
            snapshot: mode,
            ...(o?.file ? { file: o.file } : {}),
            ...(o?.driverType ? { driverType: o.driverType } : {}),
        });
    }
    const modes = new Set(disks.map((d) => d.snapshot).filter((m) => m !== "no"));
    if (modes.size === 0) fail(v.disks ? "disks" : "kind", `no disk of domain '${dom.name}' would be snapshotted`);
    if (modes.has("internal") && modes.has("external")) {
        // libvirt gives a disk the snapshot XML doesn't name its own policy (virDomainSnapshotAlignDisks) and refuses
        // the mix ('mixing internal and external targets', qemuSnapshotPrepare): read in libvirt's code, not measured.
        // A disk whose mode came from the domain's policy is named, with its attribute; else the mix is the entries' own.
        const byPolicy = disks.find((d) => why.get(d.name)?.policy === d.snapshot);
        const others = byPolicy?.snapshot === "internal" ? "external" : "internal";
        if (byPolicy) fail("kind", planSays.policyMixes(why.get(byPolicy.name)!.disk, byPolicy.snapshot, others, probe));
        else fail("disks", `libvirt ${probe.version.libvirt} cannot mix internal and external disk snapshots in one snapshot`);
    } else if (modes.has("internal")) {
        // libvirt takes no internal snapshot that leaves out a writable disk with a source: 'internal and full system
        // snapshots require all disks to be selected for snapshot' (measured on 9.0 and 11.3, running and shut off, with
        // <disk snapshot='no'>; an explicit --diskspec vdb,snapshot=no is refused on both too: read in libvirt's
        // qemuSnapshotPrepare and virDomainSnapshotAlignDisks). An external one leaves such a disk without an overlay (measured).
        for (const d of disks) {
            const w = why.get(d.name)!;
            if (d.snapshot !== "no" || !isWritableDisk(w.disk) || !w.disk.source) continue;
            if (w.policy) fail("kind", planSays.policyNoInternal(w.disk));
            else fail(w.prop, planSays.entryNoInternal(w.disk, w.index!));
        }
    }
    const kind: "internal" | "external" = modes.has("external") ? "external" : "internal";

    // Memory: saved by default while the domain runs, in the same place as the disks.
    const memory = v.memory ?? (running ? (kind === "internal" ? "internal" : "external") : "none");
    const memProp = v.memory ? "memory" : "kind";
    if (memory !== "none" && !running) {
        fail("memory", planSays.noMemoryToSave(probe));
    }
    if (running && memory === "none" && kind === "internal") {
        fail(memProp, planSays.diskOnlyInternalRunning());
    }
    if (memory === "external" && kind === "internal") {
        fail(memProp, planSays.internalDisksExternalMemory(probe));
    }
    if (memory === "internal" && kind === "external") {
        fail(memProp, planSays.externalDisksInternalMemory(probe));
    }
    if (internalProp) pflashFailures(probe, internalProp, fail);
    let memoryFile: string | undefined;
    if (memory === "external") {
        memoryFile = v.memoryFile ?? besideFirstDisk;
        if (!memoryFile) fail("memoryFile", "is required with memory: 'external' when the domain has no file-backed disk to put it beside");
    }
    if (v.quiesce) {
        if (!running) fail("quiesce", `domain '${dom.name}' is ${probe.state}: quiescing needs a running guest agent`);
        else if (dom.guestAgent !== "connected") {
            fail("quiesce", guestAgentMissing(dom));
        }
        if (memory !== "none")
            fail("quiesce", "libvirt quiesces only disk-only snapshots: set memory: 'none' (with kind: 'external' on a running domain)");
    }
    if (v.live && !(running && memory === "external" && kind === "external")) {
        fail("live", planSays.liveNeedsExternal());
    }
    if (v.halt && !running) fail("halt", `domain '${dom.name}' is already ${probe.state}`);
    if (running && modes.has("internal") && !isJobIdSafe(v.snapshotName) && probe.version.number >= VERSIONS.internalSnapshotJobIds) {
        fail("snapshotName", planSays.jobIdUnsafe(probe, v.snapshotName));
    }
    // Measured on 9.0 and 11.3: external snapshots of such a domain are refused by both (11.3: 'support for
    // offline external snapshots while checkpoint exists was not yet implemented'); internal ones by 9.0 only.
    const internalOnly = !modes.has("external") && memory !== "external";
    if (probe.checkpointsWhileOff.length && (!internalOnly || probe.version.number < VERSIONS.internalSnapshotWithCheckpointsOffline)) {
        const why = internalOnly
            ? "'cannot perform block operations while checkpoint exists'"
            : "external snapshots of a shut-off domain with checkpoints are not implemented in libvirt";
        fail("domain", planSays.checkpointsWhileOff(probe, internalOnly, why));
    }
    if (kind === "external" && v.deletion === "delete" && probe.version.number < VERSIONS.externalSnapshotDelete) {
        fail("kind", planSays.cannotDeleteExternal(probe));
    }
    if (failures.length) return { failures };

    const spec: SnapshotSpec = {
        name: v.snapshotName,
        description: v.description,
        memory: { snapshot: memory === "none" ? "no" : memory, ...(memoryFile ? { file: memoryFile } : {}) },
        disks,
    };
    const argv = ["snapshot-create", "--domain", dom.uuid, "--xmlfile", "/dev/stdin"];
    if (memory === "none" && (running || kind === "external")) argv.push("--disk-only");
    if (v.atomic) argv.push("--atomic");
    if (v.quiesce) argv.push("--quiesce");
    if (v.live) argv.push("--live");
    if (v.halt) argv.push("--halt");
    return { plan: { spec, xml: buildSnapshotXml(spec), argv, domain: dom.uuid, memory, kind }, failures };
}

/**
 * An internal snapshot of a domain whose firmware runs from pflash (UEFI), keyed on its XML (<loader type='pflash'>,
 * <nvram format=...>) and libvirt's version (VERSIONS.pflashInternalSnapshot): none before 10.9; from 10.9 a running
 * domain's only when its NVRAM is qcow2, since the UEFI variables go into the snapshot with the RAM.
 */
function pflashFailures(probe: DomainProbe, property: string, fail: Fail): void {
    const fw = probe.info.pflash;
    if (!fw) return;
    const dom = probe.info;
    const firmware = `domain '${dom.name}' boots UEFI firmware from pflash (<loader type='pflash'>${fw.loader ? ` ${fw.loader}` : ""})`;
    if (probe.version.number < VERSIONS.pflashInternalSnapshot) {
        fail(property, planSays.pflashBefore109(firmware, probe));
    } else if (probe.active && fw.nvramFormat !== "qcow2") {
        fail(property, planSays.pflashRawNvram(firmware, fw.nvram, fw.nvramFormat));
    }
}

/**
 * On libvirt 10.8 to 11.x (chainJsonLimit), an external snapshot that would make a disk's chain longer than
 * a domain can start with is refused: the snapshot itself may be taken, but the domain would never start again.
 * The chains are read with qemu-img on the host, only where the rule applies; empty elsewhere.
 */
export async function chainLimitFailures(virsh: Virsh, probe: DomainProbe, plan: SnapshotPlan): Promise<CheckFailure[]> {
    const limit = VERSIONS.chainJsonLimit;
    if (plan.kind !== "external" || !inRange(probe.version.number, limit)) return [];
    const disks = probe.info.disks.filter((d) => plan.spec.disks.some((s) => s.name === d.target && s.snapshot === "external"));
    const failures: CheckFailure[] = [];
    for (const [target, chain] of await diskChains(virsh, probe.info.uuid, disks)) {
        if (chain.length + 1 <= limit.maxImages) continue;
        failures.push({
            property: "kind",
            reason: planSays.chainTooLong(probe, target, chain, limit.maxImages),
        });
    }
    return failures;
}

/**
 * The plan as this host can take it: planSnapshot, then for a plan its chain limit (chainLimitFailures, which reads
 * the host only where the rule applies). Check reports the failures; create throws them.
 */
export async function planOnHost(
    virsh: Virsh,
    probe: DomainProbe,
    v: SnapshotRequest,
): Promise<{ plan?: SnapshotPlan; failures: CheckFailure[] }> {
    const planned = planSnapshot(v, probe);
    if (!planned.plan) return planned;
    const tooLong = await chainLimitFailures(virsh, probe, planned.plan);
    return tooLong.length ? { failures: tooLong } : planned;
}

/** What taking a snapshot needs beyond the plan: the domain as it was planned, check's margin, and the maker's mark. */
export interface SnapshotContext {
    probe: DomainProbe;
    marginMiB?: number;
    /** Who else paused the domain for this snapshot (a restore point), so the error doesn't blame the user. */
    pausedBy?: string;
    /** The resource's mark, set in the domain's metadata for the create (moments/maker.ts); none without a URN. */
    mark?: MakerMark;
}
