// Free space: what a snapshot will write, against the room where each file goes (check, measured with df on the host), and what a
// snapshot that still runs out of space part-way leaves behind (after its create failed): the memory
// file and overlays it made are removed, and the domain's state is told.
import * as path from "node:path";
import { LibvirtError, isCutOff, isKind, messageOf } from "../errors";
import { failureInsteadOf, hostFailure } from "../failures";
import type { CheckFailure } from "../inputs";
import { stateWithReason, type DomainProbe } from "../host/probe";
import type { Virsh } from "../host/virsh";
import { diskChainsOf } from "../host/xml";
import { imageInfo } from "../qemuImg";
import { spaceSays } from "./messages";
import type { SnapshotContext, SnapshotPlan } from "./plan";

/**
 * The room check asks for on the filesystem of each overlay a snapshot makes, unless spaceMarginMiB says
 * otherwise. A new qcow2 overlay takes about 192 KiB (header, L1 and refcount tables at 64 KiB clusters;
 * 196616 bytes measured), then grows by a 64 KiB cluster each time the guest first writes a cluster after the
 * snapshot. 64 MiB is 1024 such clusters: room for the guest to go on writing for a while (a full overlay
 * pauses it with an I/O error), not a promise for the overlay's whole life.
 */
export const DEFAULT_SPACE_MARGIN_MIB = 64;

const MIB = 1024 * 1024;

/** One thing a snapshot writes on the host, and how much room check asks for it. */
export interface SpaceNeed {
    /** What it is, for messages. */
    what: string;
    /** The file it goes into, and the directory whose filesystem must hold it. */
    file: string;
    dir: string;
    bytes: number;
    /** The input to change for it. */
    property: string;
}

/** Bytes in binary units, for messages: "64.0 MiB", "512 KiB". */
export function humanBytes(n: number): string {
    const units: Array<[number, string]> = [
        [1024 ** 4, "TiB"],
        [1024 ** 3, "GiB"],
        [MIB, "MiB"],
    ];
    for (const [size, unit] of units) if (n >= size) return `${(n / size).toFixed(1)} ${unit}`;
    return n >= 1024 ? `${Math.round(n / 1024)} KiB` : `${n} bytes`;
}

/** Where libvirt puts an external disk snapshot that names no file: the image's name with its suffix replaced by the snapshot's name. */
export function defaultOverlayFile(source: string, snapshotName: string): string {
    const dir = path.posix.dirname(source);
    const base = path.posix.basename(source);
    const dot = base.lastIndexOf(".");
    return path.posix.join(dir, `${dot > 0 ? base.slice(0, dot) : base}.${snapshotName}`);
}

/**
 * What a planned snapshot writes, and the room each needs: the guest's RAM (its current memory) for the
 * memory state, in the memory file or (internal) inside the qcow2 image that takes the vmstate, which grows by
 * as much; the margin for each overlay. The RAM is an upper bound: qemu writes zero pages as a few bytes each.
 */
export function spaceNeeds(probe: DomainProbe, plan: SnapshotPlan, marginMiB: number = DEFAULT_SPACE_MARGIN_MIB): SpaceNeed[] {
    const needs: SpaceNeed[] = [];
    const ram = probe.info.memoryBytes ?? 0;
    const diskOf = (target: string) => probe.info.disks.find((d) => d.target === target);
    const memoryFile = plan.spec.memory.file;
    if (plan.memory === "external" && memoryFile) {
        needs.push({
            what: `the memory state (the guest's ${humanBytes(ram)} of RAM) in ${memoryFile}`,
            file: memoryFile,
            dir: path.posix.dirname(memoryFile),
            bytes: ram,
            property: "memoryFile",
        });
    }
    if (plan.memory === "internal") {
        // libvirt has qemu save the vmstate into the first disk that takes an internal snapshot.
        const first = plan.spec.disks.find((d) => d.snapshot === "internal");
        const disk = first && diskOf(first.name);
        if (disk?.type === "file" && disk.source) {
            needs.push({
                what: `the memory state (the guest's ${humanBytes(ram)} of RAM) inside ${disk.source} (disk ${disk.target})`,
                file: disk.source,
                dir: path.posix.dirname(disk.source),
                bytes: ram,
                property: "memory",
            });
        }
    }
    for (const d of plan.spec.disks) {
        if (d.snapshot !== "external") continue;
        const disk = diskOf(d.name);
        const file = d.file ?? (disk?.type === "file" && disk.source ? defaultOverlayFile(disk.source, plan.spec.name) : undefined);
        if (!file) continue;
        needs.push({
            what: `the overlay ${file} of disk ${d.name} (spaceMarginMiB: ${marginMiB})`,
            file,
            dir: path.posix.dirname(file),
            bytes: marginMiB * MIB,
            property: "spaceMarginMiB",
        });
    }
    return needs;
}

/** The free space of the filesystem that holds a directory on the host, as `df` measures it. */
export interface FreeSpace {
    /** Where that filesystem is mounted: directories with the same mount share its space. */
    mount: string;
    /** Bytes that unprivileged writers may still use (df's Avail). */
    availableBytes: number;
}

/**
 * Each directory's free space, with `df -B1 --output=avail,target` on the host (one run per directory, so
 * one missing directory doesn't hide the others). df reads no file, only the filesystem's counters: it runs as
 * the login user, and through sudo only where the login user can't reach the directory. Left out: a directory
 * that does not exist (what would be made there fails in libvirt with its own message), and one that only a
 * sudo rule for df would let us measure when sudo refuses it (the README's host-command table says so).
 */
export async function freeSpace(virsh: Virsh, dirs: readonly string[]): Promise<Map<string, FreeSpace>> {
    const out = new Map<string, FreeSpace>();
    await Promise.all(
        [...new Set(dirs)].map(async (dir) => {
            const f = await dfShared(virsh, dir);
            if (f) out.set(dir, f);
        }),
    );
    return out;
}

/** df runs in flight, per host and folder: checks asked at once (a fan-out's previews) share one answer, never an older one. */
const dfInFlight = new Map<string, Promise<FreeSpace | undefined>>();

function dfShared(virsh: Virsh, dir: string): Promise<FreeSpace | undefined> {
    const key = `${virsh.where}\n${virsh.connection.sudo ? 1 : 0}\n${dir}`;
    let p = dfInFlight.get(key);
    if (!p) {
        p = df(virsh, dir).finally(() => dfInFlight.delete(key));
        dfInFlight.set(key, p);
    }
    return p;
}

async function df(virsh: Virsh, dir: string): Promise<FreeSpace | undefined> {
    const argv = ["df", "-B1", "--output=avail,target", "--", dir];
    let r = await virsh.host(argv, { asLoginUser: true, readOnly: true });
    if (r.code !== 0 && virsh.connection.sudo && !/No such file or directory/.test(r.stderr)) r = await virsh.host(argv);
    const m = /^\s*(\d+)\s(.*)$/.exec(r.stdout.split("\n")[1] ?? "");
    if (r.code === 0 && m) return { availableBytes: Number(m[1]), mount: m[2]!.trim() };
    if (/No such file or directory/.test(r.stderr) || /^sudo: /m.test(r.stderr)) return undefined;
    throw hostFailure("failed", `cannot measure the free space in ${dir}: ${r.stderr.trim() || `df exited with ${r.code}`}`, r);
}

interface FilesystemNeed {
    mount: string;
    free: FreeSpace;
    needs: SpaceNeed[];
    total: number;
}

/** The needs summed per filesystem (two files on one filesystem add up), with its free space. */
async function needsPerFilesystem(virsh: Virsh, needs: readonly SpaceNeed[]): Promise<FilesystemNeed[]> {
    if (!needs.length) return [];
    const free = await freeSpace(
        virsh,
        needs.map((n) => n.dir),
    );
    const out = new Map<string, FilesystemNeed>();
    for (const n of needs) {
        const f = free.get(n.dir);
        if (!f) continue;
        const g = out.get(f.mount) ?? { mount: f.mount, free: f, needs: [], total: 0 };
        g.needs.push(n);
        g.total += n.bytes;
        out.set(f.mount, g);
    }
    return [...out.values()];
}

function spaceAdvice(needs: readonly SpaceNeed[]): string {
    const ways = ["free space there"];
    if (needs.some((n) => n.property === "memoryFile")) ways.push("put memoryFile on another filesystem");
    if (needs.some((n) => n.property === "memory"))
        ways.push("take it with memory: 'none' (kind: 'external'), or while the domain is shut off");
    if (needs.some((n) => n.property === "spaceMarginMiB")) ways.push("put the overlays elsewhere (disks[].file)", "lower spaceMarginMiB");
    return ways.join(", ");
}

/**
 * Check's estimate: each filesystem the snapshot writes to must have the room its needs add up to, measured
 * with df on the host. A failure names the domain and gives both figures.
 */
export async function spaceFailures(virsh: Virsh, probe: DomainProbe, plan: SnapshotPlan, marginMiB?: number): Promise<CheckFailure[]> {
    const failures: CheckFailure[] = [];
    for (const g of await needsPerFilesystem(virsh, spaceNeeds(probe, plan, marginMiB))) {
        if (g.total <= g.free.availableBytes) continue;
        failures.push({
            property: g.needs[0]!.property,
            reason: spaceSays.tooLittle(
                probe.info.name,
                humanBytes(g.total),
                g.free.mount,
                humanBytes(g.free.availableBytes),
                g.needs.map((n) => `${n.what}: ${humanBytes(n.bytes)}`).join("; "),
                spaceAdvice(g.needs),
            ),
        });
    }
    return failures;
}

/**
 * Run a snapshot's create so that one that runs out of space part-way is cleaned up: which of the files it makes
 * exist already is read first, and a failure for want of space becomes outOfSpace's error. Any other failure is
 * thrown as it came.
 */
export async function withSpaceCleanup(
    virsh: Virsh,
    plan: SnapshotPlan,
    ctx: SnapshotContext,
    create: () => Promise<unknown>,
): Promise<void> {
    const files = filesMade(ctx.probe, plan);
    const existedBefore = files.length ? await existingFiles(virsh, files) : new Set<string>();
    try {
        await create();
    } catch (e) {
        // After a lost connection or a timeout libvirt may still be working: asking now could hang or mislead.
        if (isKind(e, "already-exists") || isCutOff(e)) throw e;
        throw (await outOfSpace(virsh, plan, ctx, e, files, existedBefore)) ?? e;
    }
}

/**
 * The files a snapshot creates: its memory file and its overlays (libvirt refuses an overlay that exists, but writes
 * over a memory file).
 */
function filesMade(probe: DomainProbe, plan: SnapshotPlan): string[] {
    return spaceNeeds(probe, plan, 0)
        .filter((n) => n.property !== "memory")
        .map((n) => n.file);
}

/** Which of these files exist on the host (stat); undefined when that can't be read, so nothing is ever removed on a guess. */
async function existingFiles(virsh: Virsh, files: readonly string[]): Promise<Set<string> | undefined> {
    if (!files.length) return new Set();
    const r = await virsh.host(["stat", "-c", "%n", "--", ...files]);
    // stat exits 1 when some file is missing; each missing one says so, and anything else is a failure to read.
    const unexplained = r.stderr.split("\n").filter((l) => l.trim() && !/No such file or directory/.test(l));
    if ((r.code !== 0 && r.code !== 1) || unexplained.length) return undefined;
    return new Set(r.stdout.split("\n").filter((l) => files.includes(l)));
}

const NO_SPACE = /No space left on device|ENOSPC/i;
/** qemu reports a vmstate that could not be written as an I/O error (measured on 9.0 and 11.3 with a full filesystem). */
const MAYBE_NO_SPACE = /Input\/output error|I\/O error|writing VM state/i;

/**
 * A snapshot that failed for want of space (ENOSPC in libvirt's message, or an I/O error while a filesystem it
 * writes to is now short of what check estimates) is cleaned up: the memory file and overlays it made are
 * removed (only files that did not exist before it ran, and never one the domain's disks use), an internal
 * snapshot left in a qcow2 image without libvirt's record is named, and a domain that libvirt left paused by the
 * snapshot is resumed (never one the user or the guest's I/O error paused). Measured on 9.0 and 11.3: libvirt
 * itself removes its memory file and overlays and resumes the domain, so this mostly confirms it; the vmstate
 * clusters qemu already wrote into a qcow2 image stay there (nothing outside qemu may touch an image it holds).
 * Returns the typed error, or undefined when the failure was not about space.
 */
async function outOfSpace(
    virsh: Virsh,
    plan: SnapshotPlan,
    ctx: SnapshotContext,
    e: unknown,
    files: readonly string[],
    existedBefore: Set<string> | undefined,
): Promise<LibvirtError | undefined> {
    const said = e instanceof LibvirtError ? `${e.stderr ?? ""}\n${e.message}` : messageOf(e);
    const enospc = NO_SPACE.test(said);
    if (!enospc && !MAYBE_NO_SPACE.test(said)) return undefined;
    const needs = spaceNeeds(ctx.probe, plan, ctx.marginMiB);
    const measure = () => needsPerFilesystem(virsh, needs).catch(() => [] as FilesystemNeed[]);
    const short = (await measure()).filter((g) => g.free.availableBytes < g.total);
    if (!enospc && !short.length) return undefined;

    const domain = plan.domain;
    const name = plan.spec.name;
    const lines: string[] = [];
    let recorded = false;
    try {
        await virsh.query(["snapshot-info", "--domain", domain, "--snapshotname", name]);
        recorded = true;
    } catch (x) {
        if (!isKind(x, "snapshot-not-found")) throw x;
    }
    if (recorded) {
        lines.push(`libvirt still lists snapshot '${name}': nothing was removed; refresh, or delete it with virsh snapshot-delete`);
    } else {
        const removed: string[] = [];
        if (existedBefore) {
            const inUse = new Set([...diskChainsOf(await virsh.query(["dumpxml", "--domain", domain])).values()].flatMap((c) => c.files));
            const made = files.filter((f) => !existedBefore.has(f) && !inUse.has(f));
            for (const f of (await existingFiles(virsh, made)) ?? []) {
                const r = await virsh.host(["rm", "-f", "--", f]);
                if (r.code === 0) removed.push(f);
                else lines.push(`could not remove ${f} (${r.stderr.trim() || `rm exited with ${r.code}`}): remove it by hand`);
            }
        } else if (files.length) {
            lines.push(`whether ${files.join(", ")} existed before could not be read (stat), so none was removed: check them by hand`);
        }
        lines.push(
            removed.length
                ? `removed what the snapshot had made: ${removed.join(", ")}`
                : `libvirt left no ${files.length ? "memory file, overlay or " : ""}snapshot record behind`,
        );
        for (const orphan of await orphanSnapshots(virsh, ctx.probe, plan)) lines.push(orphan);
    }

    let state = await stateWithReason(virsh, domain);
    // libvirt pauses a running domain for the snapshot ('saving', 'snapshot'); a user's or an I/O error's pause is not ours.
    if (ctx.probe.state === "running" && /^paused \((saving|snapshot)\)$/.test(state)) {
        await virsh.run(["resume", "--domain", domain]);
        state = `${await stateWithReason(virsh, domain)} (resumed: the snapshot had paused it)`;
    } else if (/^paused \(I\/O error\)$/.test(state)) {
        const blk = (await virsh.query(["domblkerror", "--domain", domain]).catch(() => ""))
            .split("\n")
            .map((l) => l.trim())
            .filter(Boolean)
            .join(", ");
        state += `: the guest's own writes hit the full disk${blk ? ` (${blk})` : ""}. Free space there, then resume it (virsh resume)`;
    } else if (ctx.pausedBy && /^paused/.test(state)) {
        state += ` (paused by ${ctx.pausedBy}, which resumes it)`;
    }
    lines.push(`domain state: ${state}`);
    for (const g of await measure()) {
        lines.push(
            `${humanBytes(g.free.availableBytes)} is free now on the filesystem mounted on ${g.free.mount}, ` +
                `where the snapshot needs about ${humanBytes(g.total)} (${g.needs.map((n) => n.what).join("; ")})`,
        );
    }
    const first = messageOf(e)
        .split("\n")[0]!
        .replace(/\s*\r\s*/g, " ");
    const message = spaceSays.ranOut(name, ctx.probe.info.name, first, lines);
    return e instanceof LibvirtError ? failureInsteadOf("no-space", message, e, { exitCode: true }) : new LibvirtError("no-space", message);
}

/** An internal snapshot by this name inside a qcow2 image of the plan, though libvirt has no record of it. */
async function orphanSnapshots(virsh: Virsh, probe: DomainProbe, plan: SnapshotPlan): Promise<string[]> {
    const out: string[] = [];
    for (const d of plan.spec.disks) {
        const disk = probe.info.disks.find((x) => x.target === d.name);
        if (d.snapshot !== "internal" || disk?.type !== "file" || !disk.source) continue;
        const image = (await imageInfo(virsh, disk.source, "image")).image();
        if (!image) continue;
        const snaps = (image.snapshots ?? []).map((x) => x.name);
        if (snaps.includes(plan.spec.name)) out.push(spaceSays.orphanInImage(disk.source, plan.spec.name));
    }
    return out;
}
