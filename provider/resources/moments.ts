// What snapshots and checkpoints share ("domain moments", as libvirt calls
// both): the disks a moment covers, what a failed or cut-off create left
// behind, adopting an existing one or refusing to, and a new description.
// Then the snapshot operations that DomainSnapshot, RestorePoint and
// SnapshotRevert all use: plan, take, read back, delete. Free space is in
// freeSpace.ts, records libvirt lost in lostRecords.ts.
import * as path from "node:path";
import { LibvirtError, isKind, messageOf } from "../errors";
import { failureInsteadOf, hostFailure, initFailure, type InitFailure } from "../failures";
import type { CheckFailure } from "../inputs";
import { VERSIONS, diskChains, inRange, isJobIdSafe, stateOf, type DomainProbe } from "../host/probe";
import type { Virsh } from "../host/virsh";
import {
    buildSnapshotXml,
    parseSnapshotXml,
    withDescription,
    type DomainDisk,
    type DomainInfo,
    type SnapshotInfo,
    type SnapshotSpec,
} from "../host/xml";
import { existingFiles, filesMade, outOfSpace } from "./freeSpace";

export type MomentKind = "snapshot" | "checkpoint";

/** The virsh commands and XML root of each kind. */
const VIRSH = {
    snapshot: {
        info: "snapshot-info",
        dump: "snapshot-dumpxml",
        create: "snapshot-create",
        del: "snapshot-delete",
        nameFlag: "--snapshotname",
        root: "domainsnapshot",
    },
    checkpoint: {
        info: "checkpoint-info",
        dump: "checkpoint-dumpxml",
        create: "checkpoint-create",
        del: "checkpoint-delete",
        nameFlag: "--checkpointname",
        root: "domaincheckpoint",
    },
} as const;

/** libvirt refused because the domain is not running (it stopped between a look and the call). */
export function notRunning(e: unknown): boolean {
    return e instanceof LibvirtError && /domain is not running/.test(e.message);
}

// ---- the disks a moment covers ---------------------------------------------------

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

// ---- failed, cut-off and existing creates -------------------------------------------

/** After a failed create, say whether anything was left behind. */
export async function explainFailedCreate(virsh: Virsh, kind: MomentKind, domain: string, name: string, e: unknown): Promise<unknown> {
    if (!(e instanceof LibvirtError) || e.kind === "invalid") return e;
    const cmd = VIRSH[kind];
    try {
        await virsh.query([cmd.info, "--domain", domain, cmd.nameFlag, name]);
        return new LibvirtError(
            e.kind,
            `${e.message}\n  libvirt still lists ${kind} '${name}' after the failure; refresh, or delete it with virsh ${cmd.del} before retrying`,
        );
    } catch (probe) {
        if (!isKind(probe, `${kind}-not-found`)) return e;
        const [first, ...rest] = e.message.split("\n");
        return new LibvirtError(e.kind, [first, `  no ${kind} '${name}' was left behind.`, ...rest].join("\n"));
    }
}

/**
 * A create cut off by a lost connection or a timeout may or may not have
 * happened: it becomes an init failure that carries the resource's id and
 * what is known, so Pulumi keeps it in the state, the next `pulumi up` checks
 * the host and finishes the job, and `pulumi destroy` removes it if it exists.
 * Undefined for any other error.
 */
export function unknownOutcome(
    e: unknown,
    o: { kind: MomentKind; name: string; domainName: string; id: string; what: string; partial: object },
): (LibvirtError & InitFailure) | undefined {
    if (!(isKind(e, "connection-failed") || isKind(e, "timeout"))) return undefined;
    const message =
        `${messageOf(e)}\n  ${o.what}: whether ${o.kind} '${o.name}' of domain '${o.domainName}' exists now is unknown. ` +
        `Pulumi keeps it in the state: the next pulumi up checks the host and finishes (or re-creates) it, and pulumi destroy removes it if it exists.`;
    return initFailure(new LibvirtError(e.kind, message), { id: o.id, properties: o.partial });
}

/**
 * The declared name exists already: take it over only when `adopt` is set and
 * it matches what is declared (`differences` lists how it doesn't); else say why not.
 */
export async function adoptOrRefuse(o: {
    kind: MomentKind;
    name: string;
    domainName: string;
    where: string;
    adopt: boolean;
    error: LibvirtError;
    differences: () => Promise<string[]>;
}): Promise<void> {
    const nameInput = `${o.kind}Name`;
    if (!o.adopt) {
        throw failureInsteadOf(
            "already-exists",
            `${o.kind} '${o.name}' already exists on domain '${o.domainName}' (${o.where}). Set adopt: true to take it over, or choose another ${nameInput}.`,
            o.error,
            { exitCode: false },
        );
    }
    const diffs = await o.differences();
    if (diffs.length) {
        throw new LibvirtError(
            "already-exists",
            `cannot adopt ${o.kind} '${o.name}' of domain '${o.domainName}': it differs from what is declared: ${diffs.join("; ")}. ` +
                `Change the declaration to match, or choose another ${nameInput}.`,
        );
    }
}

/** A new description, in place: libvirt's own record of the moment, redefined with the text changed. */
export async function redefineDescription(
    virsh: Virsh,
    kind: MomentKind,
    domain: string,
    name: string,
    text: string | undefined,
): Promise<void> {
    const cmd = VIRSH[kind];
    // --security-info: the record libvirt keeps is the secure one; don't strip it by redefining.
    const [xml, info] = await Promise.all([
        virsh.run([cmd.dump, "--domain", domain, cmd.nameFlag, name, "--security-info"]),
        kind === "snapshot" ? virsh.run([cmd.info, "--domain", domain, cmd.nameFlag, name]) : Promise.resolve(""),
    ]);
    // A snapshot redefined without --current stops being the current one.
    const current = /^Current:\s+yes/m.test(info);
    await virsh.run([cmd.create, "--domain", domain, "--xmlfile", "/dev/stdin", "--redefine", ...(current ? ["--current"] : [])], {
        stdin: withDescription(xml, cmd.root, text),
    });
}

// ---- snapshots: plan ------------------------------------------------------------

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
 * The overlays libvirt made for an external snapshot of a shut-off domain are made private (no access for
 * group and others) where libvirt may have left them readable (CVE-2025-13193, before 11.10): a disk image
 * holds whatever the guest keeps on disk. Read first with stat on the host; changed only when the overlay has
 * the owner and group of the image under it, which qemu opens as that owner (or as root): the owner keeps its
 * access, so qemu's own user can still open it. An overlay owned otherwise is left as libvirt made it.
 * Returns the files it changed.
 */
export async function makeOverlaysPrivate(virsh: Virsh, probe: DomainProbe, plan: SnapshotPlan, made: SnapshotInfo): Promise<string[]> {
    if (plan.kind !== "external" || probe.active || probe.version.number >= VERSIONS.offlineOverlayPrivate) return [];
    const changed: string[] = [];
    for (const d of made.disks) {
        const base = probe.info.disks.find((x) => x.target === d.name)?.source;
        if (d.snapshot !== "external" || !d.file || !base) continue;
        const r = await virsh.host(["stat", "-c", "%a %u %g", "--", d.file, base]);
        const lines = r.stdout.trim().split("\n");
        if (r.code !== 0 || lines.length !== 2) {
            throw hostFailure(
                "failed",
                `snapshot '${made.name}' was created, but the mode of its overlay ${d.file} could not be read (${r.stderr.trim() || `stat exited with ${r.code}`}); ` +
                    `libvirt ${probe.version.libvirt} may have left it readable by everyone (CVE-2025-13193). Check it on the host (chmod go-rwx), ` +
                    `or with sudo give the login user NOPASSWD rules for /usr/bin/stat and /usr/bin/chmod`,
                r,
            );
        }
        const [overlay, under] = lines.map((l) => l.split(" "));
        const mode = parseInt(overlay![0]!, 8);
        if ((mode & 0o077) === 0 || overlay![1] !== under![1] || overlay![2] !== under![2]) continue;
        const c = await virsh.host(["chmod", "go-rwx", "--", d.file]);
        if (c.code !== 0) {
            throw hostFailure(
                "failed",
                `snapshot '${made.name}' was created, but its overlay ${d.file} is readable by others (mode ${overlay![0]}) and could not be made private: ` +
                    `${c.stderr.trim() || `chmod exited with ${c.code}`}. Run chmod go-rwx on it, or with sudo give the login user a NOPASSWD rule for /usr/bin/chmod`,
                c,
            );
        }
        changed.push(d.file);
    }
    return changed;
}

// ---- snapshots: take, read back, delete ------------------------------------------------

/** What a snapshot's failure handling needs beyond the plan: the domain as it was planned, and check's margin. */
export interface SnapshotContext {
    probe: DomainProbe;
    marginMiB?: number;
    /** Who else paused the domain for this snapshot (a restore point), so the error doesn't blame the user. */
    pausedBy?: string;
}

/**
 * Run the planned snapshot-create; on failure, say whether anything was left behind. With a context, a
 * snapshot that runs out of space part-way is cleaned up (see outOfSpace) and fails as an OutOfSpaceError.
 */
export async function takeSnapshot(virsh: Virsh, plan: SnapshotPlan, ctx?: SnapshotContext): Promise<void> {
    const files = ctx ? filesMade(ctx.probe, plan) : [];
    const existedBefore = files.length ? await existingFiles(virsh, files) : new Set<string>();
    try {
        await virsh.run(plan.argv, { stdin: plan.xml });
    } catch (e) {
        // After a lost connection or a timeout libvirt may still be working: asking now could hang or mislead.
        if (isKind(e, "already-exists") || isKind(e, "connection-failed") || isKind(e, "timeout")) throw e;
        const full = ctx && (await outOfSpace(virsh, plan, ctx, e, files, existedBefore));
        if (full) throw full;
        throw await explainFailedCreate(virsh, "snapshot", plan.domain, plan.spec.name, e);
    }
}

export interface ObservedSnapshot {
    info: SnapshotInfo;
    isCurrent: boolean;
    children: number;
    /** libvirt's snapshot XML with its <domain>, as `snapshot-create --redefine` takes it (dumped without --security-info). */
    xml: string;
}

export async function observeSnapshot(virsh: Virsh, domain: string, name: string): Promise<ObservedSnapshot> {
    const [xml, info] = await Promise.all([
        virsh.run(["snapshot-dumpxml", "--domain", domain, "--snapshotname", name]),
        virsh.run(["snapshot-info", "--domain", domain, "--snapshotname", name]),
    ]);
    return {
        info: parseSnapshotXml(xml),
        isCurrent: /^Current:\s+yes/m.test(info),
        children: Number(/^Children:\s+(\d+)/m.exec(info)?.[1] ?? 0),
        xml,
    };
}

export function kindOf(s: SnapshotInfo): "internal" | "external" {
    return s.memory.snapshot === "external" || s.disks.some((d) => d.snapshot === "external") ? "external" : "internal";
}

export function memoryOf(s: SnapshotInfo): "none" | "internal" | "external" {
    return s.memory.snapshot === "no" ? "none" : s.memory.snapshot === "external" ? "external" : "internal";
}

/**
 * Delete one snapshot safely (the caller holds the domain's lock): never with
 * --children, which crashes libvirtd 9.0 when there are several children;
 * an external snapshot libvirt can't delete, or would delete losing data, is
 * refused before anything changes; the memory file libvirt 9.0 leaves behind is
 * removed (9.1 and newer remove it themselves, and then nothing else is run:
 * the file is never removed twice, and no rule beyond virsh is needed).
 * A snapshot that is already gone is deleted successfully.
 */
export async function deleteSnapshot(
    virsh: Virsh,
    t: { domain: string; domainName: string; snapshotName: string; deletion: "delete" | "metadata" },
    /** The snapshot as read just now, inside the same lock (asked together with the caller's own questions). */
    readNow?: ObservedSnapshot,
): Promise<void> {
    let observed: ObservedSnapshot;
    try {
        observed = readNow ?? (await observeSnapshot(virsh, t.domain, t.snapshotName));
    } catch (e) {
        if (isKind(e, "snapshot-not-found") || isKind(e, "domain-not-found")) return;
        throw e;
    }
    if (t.deletion === "metadata") {
        await virsh.run(["snapshot-delete", "--domain", t.domain, "--snapshotname", t.snapshotName, "--metadata"]);
        return;
    }
    const version = await virsh.version(); // cached per host
    const refuse = (why: string, what: string) =>
        new LibvirtError(
            "unsupported",
            `cannot delete external snapshot '${t.snapshotName}' of domain '${t.domainName}': ${why}. Nothing was changed. ${what}`,
        );
    if (kindOf(observed.info) === "external") {
        const externalSnapshot = (await virsh.capabilities()).externalSnapshot;
        if (observed.children > 1) {
            // Measured on 11.3: 'deletion of external disk snapshot with multiple children snapshots not supported'.
            throw refuse(
                `it has ${observed.children} child snapshots (a revert made a branch), and libvirt ${version.libvirt} deletes an external snapshot with at most one child`,
                `Delete the newer snapshots of all but one branch first, then run destroy again, or set deletion: 'metadata' to keep the files.`,
            );
        }
        // Without <externalSnapshot/> (9.0 measured), libvirt merges a non-leaf external snapshot only while the domain runs; 11.3 does it in every position.
        if (observed.children > 0 && !externalSnapshot && (await stateOf(virsh, t.domain)) === "shut off") {
            throw refuse(
                `the domain is shut off and the snapshot has ${observed.children} child snapshot(s). libvirt ${version.libvirt} can merge a non-leaf external snapshot only while the domain runs`,
                `Start the domain and run destroy again, delete the newer snapshots first, or set deletion: 'metadata' to keep the files.`,
            );
        }
        const lossy = inRange(version.number, VERSIONS.deleteAfterRevertDataLoss);
        if (!externalSnapshot || lossy) {
            // Its overlays are in the domain's current chains exactly when it is the current snapshot or an ancestor of it;
            // a revert to an earlier snapshot (or its internal parent) takes them out. Asked of libvirt: no host command beyond virsh.
            const outside = (await isCurrentOrAncestor(virsh, t.domain, t.snapshotName))
                ? []
                : observed.info.disks.filter((d) => d.snapshot === "external");
            // A delete whose client was cut off goes on in libvirt: midway, the record is still there and the current
            // snapshot already cleared (measured on 9.0; its end is not always a job domjobinfo or blockjob shows). Judge
            // what it leaves, not its middle: after its block commit, and for a few seconds more, before refusing.
            if (outside.length) {
                await waitForBlockJobs(
                    virsh,
                    t.domain,
                    outside.map((d) => d.name),
                );
                for (const until = Date.now() + SETTLE_MS; outside.length;) {
                    try {
                        await observeSnapshot(virsh, t.domain, t.snapshotName);
                    } catch (e) {
                        if (isKind(e, "snapshot-not-found")) return; // that delete finished it
                        throw e;
                    }
                    if (await isCurrentOrAncestor(virsh, t.domain, t.snapshotName)) outside.length = 0;
                    else if (Date.now() >= until) break;
                    else await new Promise((r) => setTimeout(r, 500));
                }
            }
            if (outside.length) {
                throw refuse(
                    `its overlay ${outside.map((d) => `${d.file ?? "?"} (${d.name})`).join(", ")} is not in the domain's current disk chain: the domain was reverted to an earlier snapshot since. ` +
                        (lossy
                            ? `libvirt ${version.libvirt} would delete the base image with it (a data loss fixed in 11.0: libvirt #734, virt-manager #811)`
                            : `libvirt ${version.libvirt} can't delete it ('could not find base disk source in disk source chain')`),
                    `Set deletion: 'metadata' to drop libvirt's record and keep every file${lossy ? ", or upgrade libvirt to 11.0 or newer" : ""}.`,
                );
            }
        }
    }
    // The domain's state is asked only where the rule can apply.
    if (
        kindOf(observed.info) === "internal" &&
        !isJobIdSafe(t.snapshotName) &&
        version.number >= VERSIONS.internalSnapshotJobIds &&
        (await stateOf(virsh, t.domain)) !== "shut off"
    ) {
        throw new LibvirtError(
            "unsupported",
            `cannot delete internal snapshot '${t.snapshotName}' of domain '${t.domainName}' while it runs: libvirt ${version.libvirt} deletes it as a qemu job ` +
                `named after the snapshot, and qemu refuses that name in a job ID ('Invalid job ID'). Nothing was changed. Shut the domain off and run destroy ` +
                `again, or set deletion: 'metadata' to keep the data in the image.`,
        );
    }
    try {
        await virsh.run(["snapshot-delete", "--domain", t.domain, "--snapshotname", t.snapshotName]);
    } catch (e) {
        // Gone since it was read: another client's delete finished it (libvirt goes on with one whose client was cut off).
        if (!isKind(e, "snapshot-not-found")) throw e;
    }
    const memoryFile = observed.info.memory.snapshot === "external" ? observed.info.memory.file : undefined;
    if (memoryFile && version.number < VERSIONS.snapshotDeleteRemovesMemoryFile) {
        const r = await virsh.host(["rm", "-f", "--", memoryFile]);
        if (r.code !== 0) {
            throw hostFailure(
                "failed",
                `snapshot '${t.snapshotName}' was deleted, but its memory file could not be removed: ${memoryFile} (${r.stderr.trim() || `rm exited with ${r.code}`}). ` +
                    `Remove it by hand (libvirt ${version.libvirt} leaves it; with sudo, the login user needs a NOPASSWD rule for /usr/bin/rm); running destroy again is safe`,
                r,
            );
        }
    }
}

/** How long a delete waits for block jobs already running on the snapshot's disks before it judges the snapshot. */
const BLOCK_JOB_WAIT_MS = 300_000;
/** Then how long it looks again before refusing a snapshot outside the current chain (another delete's end). */
const SETTLE_MS = 10_000;

/** Wait while a block job runs on any of these disks (`blockjob --info`), up to BLOCK_JOB_WAIT_MS. */
async function waitForBlockJobs(virsh: Virsh, domain: string, disks: readonly string[]): Promise<void> {
    for (const until = Date.now() + BLOCK_JOB_WAIT_MS; Date.now() < until;) {
        const infos = await Promise.all(
            disks.map((d) => virsh.run(["blockjob", "--domain", domain, "--path", d, "--info"], { timeoutMs: 60_000 }).catch(() => "")),
        );
        if (!infos.some((i) => /Block (Commit|Pull|Copy)|Active Block/i.test(i))) return;
        await new Promise((r) => setTimeout(r, 500));
    }
}

/** Whether NAME is the domain's current snapshot or one of its ancestors (the snapshots the current state descends from). */
async function isCurrentOrAncestor(virsh: Virsh, domain: string, name: string): Promise<boolean> {
    let at: string;
    try {
        // Names are compared exactly (a name may start or end with a space): only virsh's own newline is dropped.
        at = (await virsh.query(["snapshot-current", "--domain", domain, "--name"])).replace(/\n$/, "");
    } catch (e) {
        if (isKind(e, "snapshot-not-found") || (e instanceof LibvirtError && /has no current snapshot/.test(e.message))) return false;
        throw e;
    }
    for (let depth = 0; at && depth < 10_000; depth++) {
        if (at === name) return true;
        try {
            at = (await virsh.query(["snapshot-parent", "--domain", domain, "--snapshotname", at])).replace(/\n$/, "");
        } catch (e) {
            // A root snapshot has no parent: virsh exits 1 ("snapshot 'X' has no parent").
            if (e instanceof LibvirtError && /has no parent/.test(e.message)) return false;
            throw e;
        }
    }
    return false;
}
