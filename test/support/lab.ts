// Helpers for tests that run against the lab brought up by scripts/lab.sh.
// Everything here runs locally as root: virsh, qemu-img and qemu-io through execFile
// (never a shell), with LC_ALL=C so error texts are stable.
import * as fs from "node:fs";
import * as path from "node:path";
import * as crypto from "node:crypto";
import * as os from "node:os";
import { execFile } from "node:child_process";

export const PACKAGE_NAME = "pulumi-libvirt-snapshots";
/** <title> prefix of throwaway domains; scripts/lab/lib.sh knows it too (status). */
export const TMP_TITLE = "pulumi-libvirt-lab-tmp";
export const DEFAULT_TMP_PREFIX = "labtmp-";
const VIRSH = "/usr/bin/virsh";

export interface LabDomain {
    name: string;
    state: "running" | "shut off";
    disk: string;
    format: "qcow2" | "raw";
    writer: boolean;
    /** The real Linux guest with qemu-guest-agent (scripts/lab/guest). */
    guest?: boolean;
}

/** Where the writer guest puts its counter; see scripts/lab/bootsector.cjs. */
export interface WriterLayout {
    magic: string;
    counterOffset: number;
    firstLba: number;
    strideSectors: number;
    slots: number;
    sectorSize: number;
    intervalMs: number;
}

export interface LabInfo {
    host: string;
    port: number;
    user: string;
    privateKeyPath: string;
    encryptedKeyPath: string;
    keyPassphrase: string;
    /** "ssh-ed25519 AAAA..." (type and base64 blob, no comment) */
    hostKey: string;
    hostKeyPath: string;
    knownHostsPath: string;
    libvirtUri: string;
    virtType: "kvm" | "qemu";
    libvirtVersion: string;
    qemuVersion: string;
    sudoUser: { user: string; password: string };
    bootSectorPath: string;
    writerLayout: WriterLayout;
    labDir: string;
    tmpDiskDir: string;
    domains: LabDomain[];
    /** Every lab host; the top-level fields are the Debian 12 host's. */
    hosts?: LabHost[];
    // The fields below describe the host this test run is on (LAB_HOST), filled in by loadLab().
    /** "debian12", "debian13". */
    name: string;
    /** This machine: the provider can also reach its libvirt without SSH. */
    local: boolean;
    /** A host in its own root: tests run its own virsh, qemu-img and qemu-io through `chroot rootDir`. */
    rootDir?: string; /** The pid file of the host's sshd, whose children are the SSH sessions (tests cut them). */
    sshdPidPath: string;
}

export type LabHost = Pick<
    LabInfo,
    | "name"
    | "host"
    | "port"
    | "user"
    | "privateKeyPath"
    | "encryptedKeyPath"
    | "hostKey"
    | "hostKeyPath"
    | "knownHostsPath"
    | "libvirtUri"
    | "libvirtVersion"
    | "qemuVersion"
    | "virtType"
    | "tmpDiskDir"
    | "bootSectorPath"
    | "writerLayout"
    | "domains"
    | "local"
    | "rootDir"
    | "sshdPidPath"
>;

/** The first host of lab.json, whose fields are also lab.json's top-level ones. */
export const DEFAULT_HOST = "debian12";

/** The host this run tests: LAB_HOST names one of lab.json's hosts (default: the first, Debian 12). */
export function currentHostName(): string {
    return process.env.LAB_HOST ?? DEFAULT_HOST;
}

let cachedRoot: string | undefined;

/** The repository root: the nearest ancestor of this file with our package.json. */
export function repoRoot(): string {
    if (cachedRoot) return cachedRoot;
    for (let dir = __dirname; ; dir = path.dirname(dir)) {
        const pj = path.join(dir, "package.json");
        try {
            if (JSON.parse(fs.readFileSync(pj, "utf8")).name === PACKAGE_NAME) return (cachedRoot = dir);
        } catch {
            // no or unreadable package.json here: keep walking up
        }
        if (path.dirname(dir) === dir) throw new Error(`no package.json named ${PACKAGE_NAME} above ${__dirname}`);
    }
}

export function labJsonPath(): string {
    return path.join(repoRoot(), ".lab", "lab.json");
}

/** Reads .lab/lab.json (written by `npm run lab`). Fresh on every call: `lab.sh reset` may rewrite it. */
export function loadLab(): LabInfo {
    const file = labJsonPath();
    let text: string;
    try {
        text = fs.readFileSync(file, "utf8");
    } catch (e) {
        throw new Error(`${file} is missing: bring the lab up with 'npm run lab' (${(e as Error).message})`);
    }
    const top = JSON.parse(text) as LabInfo;
    for (const k of [
        "host",
        "port",
        "privateKeyPath",
        "hostKey",
        "knownHostsPath",
        "libvirtUri",
        "virtType",
        "domains",
        "hosts",
    ] as const) {
        if (top[k] === undefined) throw new Error(`${file} lacks "${k}": re-run 'npm run lab'`);
    }
    const want = currentHostName();
    const host = top.hosts!.find((h) => h.name === want);
    if (!host) throw new Error(`LAB_HOST=${want}: ${file} has no such host (it has ${top.hosts!.map((h) => h.name).join(", ")})`);
    return { ...top, ...host };
}

/** Every lab host, each as loadLab() would return it with LAB_HOST set to its name. */
export function allLabHosts(): LabInfo[] {
    const lab = loadLab();
    return lab.hosts!.map((h) => ({ ...lab, rootDir: undefined, ...h }));
}

/** The command line that runs FILE on the lab host itself (through its root, for a host that has one). */
export function onHost(file: string, args: readonly string[], lab: Pick<LabInfo, "rootDir"> = loadLab()): [string, string[]] {
    return lab.rootDir ? ["/usr/sbin/chroot", [lab.rootDir, file, ...args]] : [file, [...args]];
}

/** Like run(), but on the lab host this run tests. */
export function hostRun(
    file: string,
    args: readonly string[],
    opts: ExecOptions & { lab?: Pick<LabInfo, "rootDir"> } = {},
): Promise<ExecResult> {
    const [f, a] = onHost(file, args, opts.lab);
    return run(f, a, opts);
}

// ------------------------------------------------------------------ exec ---

export interface ExecResult {
    code: number;
    stdout: string;
    stderr: string;
}

export interface ExecOptions {
    timeoutMs?: number;
    env?: NodeJS.ProcessEnv;
    cwd?: string;
}

/** execFile without a shell; resolves with the exit code instead of rejecting on non-zero. */
export function run(file: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return new Promise((resolve, reject) => {
        execFile(
            file,
            args,
            {
                encoding: "utf8",
                maxBuffer: 64 * 1024 * 1024,
                timeout: opts.timeoutMs ?? 60_000,
                killSignal: "SIGKILL",
                cwd: opts.cwd,
                env: { ...process.env, ...opts.env, LC_ALL: "C" },
            },
            (err, stdout, stderr) => {
                if (!err) return resolve({ code: 0, stdout, stderr });
                const e = err as NodeJS.ErrnoException & { code?: number | string; signal?: string; killed?: boolean };
                if (typeof e.code === "number") return resolve({ code: e.code, stdout, stderr });
                if (e.signal) {
                    return resolve({
                        code: -1,
                        stdout,
                        stderr: `${stderr}\n(${file} killed by ${e.signal}${e.killed ? ", timeout" : ""})`,
                    });
                }
                reject(new Error(`cannot run ${file}: ${e.message}`));
            },
        );
    });
}

/** On the lab host; throws on a non-zero exit. */
export async function runOk(
    file: string,
    args: readonly string[],
    opts?: ExecOptions & { lab?: Pick<LabInfo, "rootDir"> },
): Promise<string> {
    const r = await hostRun(file, args, opts);
    if (r.code !== 0) {
        throw new Error(`${path.basename(file)} ${args.join(" ")} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim()}`);
    }
    return r.stdout;
}

export interface VirshOptions extends ExecOptions {
    uri?: string;
}

/** Runs /usr/bin/virsh -c qemu:///system ARGS on the lab host, as root, without SSH. */
export function virshLocal(args: readonly string[], opts: VirshOptions & { lab?: Pick<LabInfo, "rootDir"> } = {}): Promise<ExecResult> {
    return hostRun(VIRSH, ["-c", opts.uri ?? "qemu:///system", ...args], opts);
}

/** Like virshLocal, but throws (with virsh's stderr) on a non-zero exit; returns stdout. */
export async function virshOk(args: readonly string[], opts: VirshOptions & { lab?: Pick<LabInfo, "rootDir"> } = {}): Promise<string> {
    const r = await virshLocal(args, opts);
    if (r.code !== 0) throw new Error(`virsh ${args.join(" ")} failed (exit ${r.code}): ${r.stderr.trim()}`);
    return r.stdout;
}

/** `virsh domstate NAME` ("running", "shut off", ...), or undefined if there is no such domain. */
export async function domState(name: string): Promise<string | undefined> {
    const r = await virshLocal(["domstate", name]);
    return r.code === 0 ? r.stdout.trim() : undefined;
}

// ------------------------------------------------------------ disk tools ---

export interface QemuImgInfo {
    filename: string;
    format: string;
    "virtual-size": number;
    "actual-size"?: number;
    "backing-filename"?: string;
    "full-backing-filename"?: string;
    "backing-filename-format"?: string;
    snapshots?: Array<{ id: string; name: string; "vm-state-size": number; "date-sec": number; icount?: number }>;
    "format-specific"?: {
        type: string;
        data: Record<string, unknown> & { bitmaps?: Array<{ name: string; granularity: number; flags: string[] }> };
    };
    [key: string]: unknown;
}

/** `qemu-img info --output=json -U`; with backingChain, one entry per image, top first. */
export function qemuImgInfo(disk: string): Promise<QemuImgInfo>;
export function qemuImgInfo(disk: string, opts: { backingChain: true }): Promise<QemuImgInfo[]>;
export function qemuImgInfo(disk: string, opts: { backingChain?: boolean }): Promise<QemuImgInfo | QemuImgInfo[]>;
export async function qemuImgInfo(disk: string, opts: { backingChain?: boolean } = {}): Promise<QemuImgInfo | QemuImgInfo[]> {
    const args = ["info", "--output=json", "-U", ...(opts.backingChain ? ["--backing-chain"] : []), disk];
    return JSON.parse(await runOk("/usr/bin/qemu-img", args)) as QemuImgInfo | QemuImgInfo[];
}

export interface QemuImgCheck {
    /** qemu-img check's exit code: 0 clean, 1 not checked (error), 2 corruptions, 3 leaked clusters only. */
    code: number;
    ok: boolean;
    result?: Record<string, unknown> & { "check-errors"?: number; corruptions?: number; leaks?: number };
    stderr: string;
}

/** `qemu-img check --output=json`. Pass forceShare for an image a running qemu holds (results may then be stale). */
export async function qemuImgCheck(disk: string, opts: { forceShare?: boolean } = {}): Promise<QemuImgCheck> {
    const r = await hostRun("/usr/bin/qemu-img", ["check", "--output=json", ...(opts.forceShare ? ["-U"] : []), disk]);
    let result: QemuImgCheck["result"];
    try {
        result = r.stdout.trim() ? JSON.parse(r.stdout) : undefined;
    } catch {
        result = undefined;
    }
    return { code: r.code, ok: r.code === 0, result, stderr: r.stderr.trim() };
}

async function diskFormat(disk: string, format?: string): Promise<string> {
    return format ?? (await qemuImgInfo(disk)).format;
}

function hexByte(pattern: number): string {
    if (!Number.isInteger(pattern) || pattern < 0 || pattern > 255) throw new Error(`pattern must be a byte, got ${pattern}`);
    return "0x" + pattern.toString(16).padStart(2, "0");
}

/** Fills [offset, offset+len) with the byte `pattern`. Offline only: a running qemu holds the write lock. */
export async function qemuIoWrite(
    disk: string,
    pattern: number,
    offset: number,
    len: number,
    opts: { format?: string } = {},
): Promise<void> {
    const fmt = await diskFormat(disk, opts.format);
    const out = await runOk("/usr/bin/qemu-io", ["-f", fmt, "-c", `write -P ${hexByte(pattern)} ${offset} ${len}`, disk]);
    if (!/^wrote /m.test(out)) throw new Error(`qemu-io write on ${disk} did not report a write: ${out.trim()}`);
}

/**
 * True if every byte of [offset, offset+len) equals `pattern`. Opens the image read-only
 * with -U (force share), so it also works while a domain runs.
 */
export async function qemuIoRead(
    disk: string,
    pattern: number,
    offset: number,
    len: number,
    opts: { format?: string } = {},
): Promise<boolean> {
    const fmt = await diskFormat(disk, opts.format);
    const r = await hostRun("/usr/bin/qemu-io", ["-U", "-r", "-f", fmt, "-c", `read -P ${hexByte(pattern)} ${offset} ${len}`, disk]);
    const out = r.stdout + r.stderr;
    if (/Pattern verification failed/.test(out)) return false;
    if (r.code === 0 && /^read /m.test(out)) return true;
    throw new Error(`qemu-io read on ${disk} failed (exit ${r.code}): ${out.trim()}`);
}

/**
 * The highest counter the writer guest has put on this disk (0 if none). Follows the
 * backing chain, works while the domain runs: the image is copied with `convert -U`
 * to a sparse raw file first.
 */
export async function readGuestCounter(disk: string, layout: WriterLayout = loadLab().writerLayout): Promise<number> {
    // Under LABDIR, which a host in its own root sees at the same path (its /tmp is its own).
    const lab = loadLab();
    fs.mkdirSync(lab.tmpDiskDir, { recursive: true });
    const tmpDir = fs.mkdtempSync(path.join(lab.tmpDiskDir, ".counter-"));
    try {
        const raw = path.join(tmpDir, "disk.raw");
        await runOk("/usr/bin/qemu-img", ["convert", "-U", "-O", "raw", disk, raw]);
        const fd = fs.openSync(raw, "r");
        try {
            const magic = Buffer.from(layout.magic, "latin1");
            const buf = Buffer.alloc(layout.counterOffset + 4);
            let best = 0;
            for (let slot = 0; slot < layout.slots; slot++) {
                const pos = (layout.firstLba + slot * layout.strideSectors) * layout.sectorSize;
                if (fs.readSync(fd, buf, 0, buf.length, pos) !== buf.length) continue;
                if (!buf.subarray(0, magic.length).equals(magic)) continue;
                best = Math.max(best, buf.readUInt32LE(layout.counterOffset));
            }
            return best;
        } finally {
            fs.closeSync(fd);
        }
    } finally {
        fs.rmSync(tmpDir, { recursive: true, force: true });
    }
}

/** Polls until the writer's counter exceeds `above` (or timeout); returns the last value read. */
export async function waitGuestCounter(disk: string, above: number, timeoutMs = 20_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const c = await readGuestCounter(disk);
        if (c > above || Date.now() > deadline) return c;
        await sleep(200);
    }
}

export function sleep(ms: number): Promise<void> {
    return new Promise((r) => setTimeout(r, ms));
}

// --------------------------------------------------------- test domains ---

export interface MakeDomainOptions {
    /** Name prefix; a random suffix is appended. Default "labtmp-". */
    prefix?: string;
    /** Start it after defining it. Default false. */
    running?: boolean;
    /** Put the counter-writing boot sector on the disk. Default false. */
    writer?: boolean;
    format?: "qcow2" | "raw";
    /** Disk size in MiB. Default 64 (the writer needs 64: its slots end just below 64 MiB). */
    sizeMB?: number;
    /** An exact name instead of prefix + random suffix (recorded state names its domains). */
    name?: string;
    /** A fixed UUID instead of libvirt's random one. */
    uuid?: string;
    /** Another lab host than the one this run tests (allLabHosts()). */
    lab?: LabInfo;
    /** More qcow2 disks after vda (disk-TARGET.qcow2 in its folder, sizeMB each), with the domain's snapshot policy for each. */
    extraDisks?: Array<{ target: string; snapshot?: "no" | "internal" | "external" | "manual" }>;
}

export interface TestDomain {
    name: string;
    uuid: string;
    /** Path of its disk image (the base image, even after external snapshots). */
    disk: string;
    format: "qcow2" | "raw";
    /** Its own folder: put overlays and memory files here, dispose() removes it. */
    dir: string;
    dispose(): Promise<void>;
}

/** Identifies a process across PID reuse: its start time from /proc/PID/stat. */
function procStart(pid: number): string | undefined {
    let stat: string;
    try {
        stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    } catch {
        return undefined;
    }
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (fields[0] === "Z" || fields[0] === "X") return undefined; // zombies are dead
    return fields[19]; // field 22 of stat: starttime
}

export function ownerTag(): string {
    return `pid=${process.pid} start=${procStart(process.pid) ?? "0"}`;
}

function parseOwner(tag: string): { pid: number; start: string } | undefined {
    const m = /pid=(\d+) start=(\d+)/.exec(tag);
    return m ? { pid: Number(m[1]), start: m[2] } : undefined;
}

/** True if the owner tag names a process that is still alive (and is the same process). */
export function ownerAlive(tag: string): boolean {
    const o = parseOwner(tag);
    return o !== undefined && procStart(o.pid) === o.start;
}

function ownedByMe(tag: string): boolean {
    const o = parseOwner(tag);
    return o !== undefined && o.pid === process.pid && o.start === procStart(process.pid);
}

/** The same shape as the lab domains (scripts/lab.sh): 64 MiB, 1 vcpu, pc, virtio disk, no NIC. */
export function domainXml(o: {
    name: string;
    title: string;
    virtType: string;
    disk: string;
    format: string;
    uuid?: string;
    /** The special domains' options (test/support/specialDomains.ts). */
    diskType?: "file" | "block";
    uefi?: { loader: string; nvram: string; nvramFormat?: string } | { auto: true };
    tpm?: boolean;
    extraDisks?: Array<{ file: string; format: string; target: string; snapshot?: string }>;
}): string {
    // The one shape every lab host's domains have, shared with scripts/lab.sh and host13.sh.
    const { labDomainXml } = require(path.join(repoRoot(), "scripts", "lab", "domain-xml.cjs")) as { labDomainXml(x: typeof o): string };
    return labDomainXml(o);
}

async function removeDomain(name: string, lab: LabInfo): Promise<void> {
    await virshLocal(["destroy", name], { lab }); // fails harmlessly when not running
    // --nvram: a UEFI domain's variable store goes with it (libvirt refuses to undefine one without it or --keep-nvram).
    const r = await virshLocal(["undefine", name, "--snapshots-metadata", "--checkpoints-metadata", "--nvram"], { lab });
    if (r.code !== 0 && !/failed to get domain|Domain not found/i.test(r.stderr)) {
        throw new Error(`virsh undefine ${name} failed: ${r.stderr.trim()}`);
    }
}

/** Where a throwaway domain's folder records the loop device its disk is on (test/support/specialDomains.ts). */
export const LOOP_RECORD = "loop-device";

/**
 * Detaches the loop device DIR records ("DEVICE<TAB>FILE"), once its domain is gone, and only while the device
 * still shows that file: a device detached by someone else may by now be another's.
 */
async function detachRecordedLoop(dir: string): Promise<void> {
    let device: string | undefined, file: string | undefined;
    try {
        [device, file] = fs.readFileSync(path.join(dir, LOOP_RECORD), "utf8").trim().split("\t");
    } catch {
        return; // no loop device
    }
    if (!device || !file) return;
    const shows = await run("/usr/sbin/losetup", ["--noheadings", "--output", "BACK-FILE", device]);
    if (shows.stdout.trim().replace(/ \(deleted\)$/, "") !== file) return;
    const r = await run("/usr/sbin/losetup", ["--detach", device]);
    if (r.code !== 0) throw new Error(`losetup --detach ${device} failed: ${r.stderr.trim()}`);
}

/** The folder of throwaway domain NAME, and how to remove the domain and the folder. */
export function throwawayFolder(name: string, lab: LabInfo): { dir: string; dispose(): Promise<void> } {
    const dir = path.join(lab.tmpDiskDir, name);
    fs.mkdirSync(dir, { recursive: true });
    // Written first, so disposeAllTestDomains() can tell a live run's folder from a crashed one's.
    fs.writeFileSync(path.join(dir, "owner"), ownerTag() + "\n");
    return {
        dir,
        dispose: async () => {
            await removeDomain(name, lab);
            await detachRecordedLoop(dir);
            fs.rmSync(dir, { recursive: true, force: true });
        },
    };
}

/** A fresh throwaway domain with its own disk under .lab/disks/tmp/NAME/. */
export async function makeDomain(opts: MakeDomainOptions = {}): Promise<TestDomain> {
    const lab = opts.lab ?? loadLab();
    const prefix = opts.prefix ?? DEFAULT_TMP_PREFIX;
    if (!/^[A-Za-z0-9_.+-]*$/.test(prefix)) throw new Error(`makeDomain: prefix ${JSON.stringify(prefix)} has unsafe characters`);
    const format = opts.format ?? "qcow2";
    const sizeMB = opts.sizeMB ?? 64;
    const name = opts.name ?? prefix + crypto.randomBytes(4).toString("hex");
    if (opts.name !== undefined && !/^[A-Za-z0-9_.+-]+$/.test(opts.name))
        throw new Error(`makeDomain: name ${JSON.stringify(opts.name)} has unsafe characters`);
    const { dir, dispose } = throwawayFolder(name, lab);
    const disk = path.join(dir, `disk.${format}`);
    try {
        await runOk("/usr/bin/qemu-img", ["create", "-q", "-f", format, disk, `${sizeMB}M`], { lab });
        if (opts.writer) {
            await runOk("/usr/bin/qemu-io", ["-f", format, "-c", `write -q -s ${lab.bootSectorPath} 0 512`, disk], { lab });
        }
        const extraDisks = (opts.extraDisks ?? []).map((d) => ({ ...d, file: path.join(dir, `disk-${d.target}.qcow2`), format: "qcow2" }));
        for (const d of extraDisks) await runOk("/usr/bin/qemu-img", ["create", "-q", "-f", "qcow2", d.file, `${sizeMB}M`], { lab });
        const xmlPath = path.join(dir, "domain.xml");
        fs.writeFileSync(
            xmlPath,
            domainXml({ name, title: `${TMP_TITLE} ${ownerTag()}`, virtType: lab.virtType, disk, format, uuid: opts.uuid, extraDisks }),
        );
        await virshOk(["define", xmlPath], { lab });
        if (opts.running) await virshOk(["start", name], { lab });
        const uuid = (await virshOk(["domuuid", name], { lab })).trim();
        return { name, uuid, disk, format, dir, dispose };
    } catch (e) {
        await dispose().catch(() => undefined);
        throw e;
    }
}

/** Throwaway domains (by title) as [name, title]; optionally only those whose name starts with prefix. */
export async function listTestDomains(prefix?: string): Promise<Array<{ name: string; title: string }>> {
    const out = await virshOk(["list", "--all", "--title"]);
    const found: Array<{ name: string; title: string }> = [];
    for (const line of out.split("\n").slice(2)) {
        const m = /^\s*\S+\s+(\S+)\s+.*?\s{2,}(\S.*?)\s*$/.exec(line);
        if (!m || !m[2].startsWith(TMP_TITLE + " ")) continue;
        if (prefix !== undefined && !m[1].startsWith(prefix)) continue;
        found.push({ name: m[1], title: m[2] });
    }
    return found;
}

/**
 * Removes throwaway domains and folders left behind by crashed runs: those whose owner
 * process is gone, plus this process's own. Domains of other live test processes are
 * left alone unless includeLive. Returns the names it removed.
 */
export async function disposeAllTestDomains(opts: { prefix?: string; includeLive?: boolean } = {}): Promise<string[]> {
    const lab = loadLab();
    const doomed = (tag: string) => opts.includeLive || ownedByMe(tag) || !ownerAlive(tag);
    const removed: string[] = [];
    for (const d of await listTestDomains(opts.prefix)) {
        if (!doomed(d.title)) continue;
        await removeDomain(d.name, loadLab());
        await detachRecordedLoop(path.join(lab.tmpDiskDir, d.name));
        fs.rmSync(path.join(lab.tmpDiskDir, d.name), { recursive: true, force: true });
        removed.push(d.name);
    }
    // Folders whose domain is gone (crash between mkdir and define, or after undefine).
    let entries: string[] = [];
    try {
        entries = fs.readdirSync(lab.tmpDiskDir);
    } catch {
        entries = [];
    }
    for (const name of entries) {
        if (opts.prefix !== undefined && !name.startsWith(opts.prefix)) continue;
        const dir = path.join(lab.tmpDiskDir, name);
        let tag = "";
        try {
            tag = fs.readFileSync(path.join(dir, "owner"), "utf8");
        } catch {
            // no owner file: not made by makeDomain, or crashed before writing it
        }
        if (!doomed(tag)) continue;
        if ((await domState(name)) !== undefined) await removeDomain(name, loadLab());
        await detachRecordedLoop(dir);
        fs.rmSync(dir, { recursive: true, force: true });
        if (!removed.includes(name)) removed.push(name);
    }
    return removed;
}

// ------------------------------------------------------------------ ssh ---

/** Arguments for the system ssh client against the lab sshd, strict host key checking on. */
export function sshArgs(lab: LabInfo = loadLab(), keyPath: string = lab.privateKeyPath): string[] {
    return [
        "-F",
        "/dev/null",
        "-p",
        String(lab.port),
        "-i",
        keyPath,
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        `UserKnownHostsFile=${lab.knownHostsPath}`,
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "LogLevel=ERROR",
        `${lab.user}@${lab.host}`,
    ];
}

// ------------------------------------------------------------ real guest ---

/** A throwaway copy of the lab's real Linux guest (scripts/lab/guest): running, its agent answering. */
export async function makeGuestDomain(opts: { prefix?: string } = {}): Promise<TestDomain> {
    const lab = loadLab();
    const prefix = opts.prefix ?? DEFAULT_TMP_PREFIX;
    const name = prefix + crypto.randomBytes(4).toString("hex");
    const { dir, dispose } = throwawayFolder(name, lab);
    const disk = path.join(dir, "disk.qcow2");
    try {
        // Empty: the guest makes its ext4 on first boot.
        await runOk("/usr/bin/qemu-img", ["create", "-q", "-f", "qcow2", disk, "256M"]);
        const { guestDomainXml } = require(path.join(repoRoot(), "scripts", "lab", "guest", "domain.cjs")) as {
            guestDomainXml(o: Record<string, unknown>): string;
        };
        const xmlPath = path.join(dir, "domain.xml");
        const guestDir = path.join(lab.labDir, "guest");
        fs.writeFileSync(
            xmlPath,
            guestDomainXml({
                name,
                title: `${TMP_TITLE} ${ownerTag()}`,
                kernel: path.join(guestDir, "vmlinux"),
                initrd: path.join(guestDir, "initramfs.gz"),
                disk,
                virtType: "qemu",
            }),
        );
        await virshOk(["define", xmlPath]);
        await virshOk(["start", name]);
        const deadline = Date.now() + 90_000;
        while ((await virshLocal(["qemu-agent-command", name, '{"execute":"guest-ping"}'])).code !== 0) {
            if (Date.now() > deadline) throw new Error(`the guest agent of ${name} did not answer within 90 s`);
            await sleep(200);
        }
        const uuid = (await virshOk(["domuuid", name])).trim();
        return { name, uuid, disk, format: "qcow2", dir, dispose };
    } catch (e) {
        await dispose().catch(() => undefined);
        throw e;
    }
}

/** The real guest's writer, read from its disk on the host: the raw counter, and whether the ext4 there is clean. */
export function guestDisk(disk: string): { counter: number; clean: boolean } {
    const { readRawCounter, readFileCounter } = require(path.join(repoRoot(), "scripts", "lab", "guest", "counter.cjs")) as {
        readRawCounter(d: string): { counter: number } | null;
        readFileCounter(d: string, o: { tmpDir: string }): { clean: boolean };
    };
    const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), "guest-disk-"));
    try {
        return { counter: readRawCounter(disk)?.counter ?? 0, clean: readFileCounter(disk, { tmpDir }).clean };
    } finally {
        fs.rmSync(tmpDir, { recursive: true, force: true });
    }
}
