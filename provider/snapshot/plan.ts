// A snapshot's plan: the XML and the virsh command that DomainSnapshot and each member of a
// RestorePoint take, decided against the live domain and this libvirt, or the failures that say
// exactly why it can't be taken (check reports them; create throws them).
import * as path from "node:path";
import type { CheckFailure } from "../inputs";
import { VERSIONS, diskChains, inRange, isJobIdSafe, type DomainProbe } from "../host/probe";
import type { Virsh } from "../host/virsh";
import { buildSnapshotXml, type SnapshotSpec } from "../host/xml";
import { coveredDisks, isWritableDisk, type Fail } from "../moments/disks";

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

/**
 * Decide the snapshot XML and the virsh command, or say exactly why this
 * domain and this libvirt can't take it. Check reports the failures; create throws them.
 */
export function planSnapshot(v: SnapshotRequest, probe: DomainProbe): { plan?: SnapshotPlan; failures: CheckFailure[] } {
    const failures: CheckFailure[] = [];
    const fail: Fail = (property, reason) => failures.push({ property, reason });
    const dom = probe.info;
    const running = probe.active;

    // Per-disk mode: explicit override, else the kind; cdroms and read-only disks are left to libvirt.
    const disks: SnapshotSpec["disks"] = [];
    /** The property that asked for the first internal disk snapshot. */
    let internalProp: string | undefined;
    for (const { disk: d, entry: o, index: i } of coveredDisks(v.disks, dom, fail)) {
        const mode = o?.snapshot ?? v.kind;
        const prop = i === undefined ? "kind" : `disks[${i}].snapshot`;
        if (mode === "internal" && d.format !== "qcow2") {
            fail(
                prop,
                `an internal snapshot lives inside a qcow2 image, but disk ${d.target} (${d.source ?? d.type}) is ${d.format ?? "of unknown format"}. ` +
                    `Use kind: 'external', or leave the disk out with disks: [{ name: '${d.target}', snapshot: 'no' }]`,
            );
        }
        if (mode === "internal") internalProp ??= prop;
        // Measured on 9.0 and 11.3: 'source for disk 'vda' is not a regular file; refusing to generate external snapshot name'.
        if (mode === "external" && d.type === "block" && !o?.file) {
            fail(
                i === undefined ? "kind" : `disks[${i}].file`,
                `disk ${d.target} is a block device (${d.source ?? "no source"}), and libvirt names an external snapshot's overlay only beside a regular file. ` +
                    `Give its overlay a path with DomainSnapshot's disks: [{ name: '${d.target}', snapshot: 'external', file: '/path/to/${d.target}.overlay.qcow2' }]`,
            );
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
        fail("disks", `libvirt ${probe.version.libvirt} cannot mix internal and external disk snapshots in one snapshot`);
    }
    const kind: "internal" | "external" = modes.has("external") ? "external" : "internal";

    // Memory: saved by default while the domain runs, in the same place as the disks.
    const memory = v.memory ?? (running ? (kind === "internal" ? "internal" : "external") : "none");
    const memProp = v.memory ? "memory" : "kind";
    if (memory !== "none" && !running) {
        fail(
            "memory",
            `domain '${dom.name}' is ${probe.state}, so there is no memory state to save. Use memory: 'none', or leave memory unset`,
        );
    }
    if (running && memory === "none" && kind === "internal") {
        fail(
            memProp,
            `libvirt can't take a disk-only internal snapshot of a running domain ('active qemu domains require external disk snapshots'). ` +
                `Use memory: 'internal', or kind: 'external'`,
        );
    }
    if (memory === "external" && kind === "internal") {
        fail(
            memProp,
            `libvirt ${probe.version.libvirt} does not support internal disk snapshots with an external memory file ('mixing internal and external targets'). Use memory: 'internal', or kind: 'external'`,
        );
    }
    if (memory === "internal" && kind === "external") {
        fail(
            memProp,
            `libvirt ${probe.version.libvirt} can't save memory inside the disk image when the disks are external. Use memory: 'external' with memoryFile, or memory: 'none'`,
        );
    }
    if (internalProp) pflashFailures(probe, internalProp, fail);
    let memoryFile: string | undefined;
    if (memory === "external") {
        memoryFile = v.memoryFile ?? defaultMemoryFile(probe, v.snapshotName);
        if (!memoryFile) fail("memoryFile", "is required with memory: 'external' when the domain has no file-backed disk to put it beside");
    }
    if (v.quiesce) {
        if (!running) fail("quiesce", `domain '${dom.name}' is ${probe.state}: quiescing needs a running guest agent`);
        else if (dom.guestAgent !== "connected") {
            fail(
                "quiesce",
                dom.guestAgent === "none"
                    ? `domain '${dom.name}' has no QEMU guest agent channel, so its filesystems can't be frozen. Add a guest agent, or set quiesce: false`
                    : `the QEMU guest agent of domain '${dom.name}' is not connected. Start qemu-guest-agent in the guest, or set quiesce: false`,
            );
        }
        if (memory !== "none")
            fail("quiesce", "libvirt quiesces only disk-only snapshots: set memory: 'none' (with kind: 'external' on a running domain)");
    }
    if (v.live && !(running && memory === "external" && kind === "external")) {
        fail(
            "live",
            "live snapshots are only possible for full-system external snapshots of a running domain (kind: 'external', memory: 'external')",
        );
    }
    if (v.halt && !running) fail("halt", `domain '${dom.name}' is already ${probe.state}`);
    if (running && modes.has("internal") && !isJobIdSafe(v.snapshotName) && probe.version.number >= VERSIONS.internalSnapshotJobIds) {
        fail(
            "snapshotName",
            `libvirt ${probe.version.libvirt} takes an internal snapshot of a running domain as a qemu job named after it, and qemu refuses ` +
                `'${v.snapshotName}' in a job ID ('Invalid job ID'): use only letters, digits, '-', '.' and '_', or take it while the domain is shut off`,
        );
    }
    // Measured on 9.0 and 11.3: external snapshots of such a domain are refused by both (11.3: 'support for
    // offline external snapshots while checkpoint exists was not yet implemented'); internal ones by 9.0 only.
    const internalOnly = !modes.has("external") && memory !== "external";
    if (probe.checkpointsWhileOff.length && (!internalOnly || probe.version.number < VERSIONS.internalSnapshotWithCheckpointsOffline)) {
        const why = internalOnly
            ? "'cannot perform block operations while checkpoint exists'"
            : "external snapshots of a shut-off domain with checkpoints are not implemented in libvirt";
        fail(
            "domain",
            `domain '${dom.name}' is ${probe.state} and has checkpoints (${probe.checkpointsWhileOff.join(", ")}): libvirt ${probe.version.libvirt} takes no ` +
                `${internalOnly ? "" : "external "}snapshot of it then (${why}). Take the snapshot while the domain runs, ` +
                `${internalOnly ? "upgrade libvirt to 11.3 or newer, " : "take an internal one, "}or delete its checkpoints first`,
        );
    }
    if (kind === "external" && v.deletion === "delete" && probe.version.number < VERSIONS.externalSnapshotDelete) {
        fail(
            "kind",
            `libvirt ${probe.version.libvirt} can't delete external snapshots (9.0 or newer can), so pulumi destroy would fail. Use deletion: 'metadata', or kind: 'internal'`,
        );
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
        fail(
            property,
            `${firmware}, and libvirt ${probe.version.libvirt} takes no internal snapshot of such a domain ('internal snapshots of a VM with pflash ` +
                `based firmware are not supported'; 10.9 and newer can, with the NVRAM in qcow2). Use kind: 'external'`,
        );
    } else if (probe.active && fw.nvramFormat !== "qcow2") {
        fail(
            property,
            `${firmware}, and its UEFI variables (NVRAM ${fw.nvram ?? "(none named)"}) are ${fw.nvramFormat}: libvirt saves them inside an internal snapshot ` +
                `of a running domain, which needs a qcow2 NVRAM ('require QCOW2 nvram format'). Use kind: 'external', take the snapshot while the ` +
                `domain is shut off (the NVRAM is then left out of it), or convert the NVRAM to qcow2 (<nvram format='qcow2'>)`,
        );
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
            reason:
                `disk ${target} of domain '${probe.info.name}' has ${chain.length} images in its chain (${chain[0]} and its backing files), and an external snapshot adds one: ` +
                `libvirt ${probe.version.libvirt} can't start a domain whose chain has more than ${limit.maxImages} ('failed to parse JSON: nesting too deep'; ` +
                `libvirt 10.8 to 11.x, fixed in 12.0). Nothing was changed. Delete older external snapshots to merge the chain, take an internal snapshot, or upgrade libvirt`,
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

/** What a snapshot's failure handling needs beyond the plan: the domain as it was planned, and check's margin. */
export interface SnapshotContext {
    probe: DomainProbe;
    marginMiB?: number;
    /** Who else paused the domain for this snapshot (a restore point), so the error doesn't blame the user. */
    pausedBy?: string;
}
