// DomainBackup: the whole life of one libvirt push-mode backup.
//   inputs (zod) → plan (backup XML + checkpoint XML, checked against the live
//   domain, its checkpoint chain and the files on the host)
//   → virsh backup-begin (the new checkpoint made atomically with it)
//   → wait for the job (domjobinfo) → read the files back → outputs
// A backup is data that outlives the stack: refresh only reports drift
// (a missing or changed file), and nothing ever takes a new backup under an
// existing checkpoint name, which would break every later incremental.
import * as path from "node:path";
import type * as pulumi from "@pulumi/pulumi";
import { z } from "zod";
import type { Connection } from "../connection";
import { LibvirtError, isKind, messageOf } from "../errors";
import { hostFailure } from "../failures";
import { imageInfo } from "../qemuImg";
import { InputError, domainRef, hostFolder, timeoutSeconds, trueOrFalse, type CheckFailure } from "../inputs";
import { withDomainLock } from "../locks";
import { BACKUP_ABORT_WAIT_MS, BACKUP_POLL_MS, JOB_DATA_RETRIES, JOB_DATA_RETRY_MS, READ_TIMEOUT_MS, sleep } from "../timing";
import { common, field, spec } from "../spec";
import {
    askAboutDomain,
    checkInputs,
    compareInputs,
    lockKey,
    parseOrThrow,
    replacesInPlace,
    virshFor,
    withoutConnection,
} from "../resource";
import { listCheckpoints, names, probeDomain, type DomainProbe } from "../host/probe";
import { withPrivateFolder } from "../host/privateFolder";
import { withFrozenGuest } from "../host/thawGuard";
import type { Virsh } from "../host/virsh";
import { buildBackupXml, buildCheckpointXml, parseBackupXml, parseCheckpointXml, type CheckpointSpec } from "../host/xml";
import { deleteCheckpoint } from "../checkpoint/delete";
import { checkpointName } from "./domainCheckpoint";
import { bitmapsMissingOffline } from "./lostRecords";
import { backupSays } from "./messages";
import { coveredDisks, type Fail } from "../moments/disks";
import { guestAgentMissing } from "../moments/messages";

/** A whole backup job of real disks can take a while: the default bound for it. */
export const DEFAULT_BACKUP_TIMEOUT_SECONDS = 3600;

// ---- inputs ----------------------------------------------------------------

export const BackupDiskSchema = z.strictObject({
    name: z.string({ error: "must be a string (a disk target such as vda, or its source path)" }).min(1, { error: "must not be empty" }),
    backup: z.enum(["yes", "no"], { error: "must be 'yes' (copy the disk) or 'no' (leave it out)" }),
});

/** Each input once: its schema (and default), what a change of it does, and its doc (DomainBackupArgs says the same). */
export const DomainBackupSpec = spec({
    connection: common.connection,
    domain: field("replace", domainRef, "The domain's name or UUID; it must be running or paused."),
    targetDir: field(
        "replace",
        hostFolder,
        "The folder on the libvirt host for the backup files (made if missing). Each disk goes to " +
            "`DOMAIN.CHECKPOINT.DISK.qcow2`; an incremental finds its base there by the same rule.",
    ),
    incrementalFrom: field(
        "replace",
        checkpointName.optional(),
        "The checkpoint of an earlier backup (typically its `checkpointName` output): only the " +
            "blocks written since are copied. Default: a full backup.",
    ),
    disks: field(
        "replace",
        z.array(BackupDiskSchema, { error: "must be a list of { name, backup }" }).optional(),
        "Per-disk choices. Default: every writable disk is backed up.",
    ),
    checkpointName: field(
        "replace",
        checkpointName,
        "The checkpoint this backup creates, atomically with it. Default: the resource's logical name. Same rules as DomainCheckpoint's.",
    ),
    quiesce: field(
        "replace",
        trueOrFalse.default(false),
        "Freeze the guest's filesystems (guest agent) while the job starts; a guard on the host " +
            "thaws them if the provider is cut off. Default false.",
    ),
    deletion: field(
        "update",
        z
            .enum(["checkpoint", "files"], {
                error: "must be 'checkpoint' (remove the checkpoint, keep the backup files) or 'files' (remove both)",
            })
            .default("checkpoint"),
        "`checkpoint` (the default) removes the checkpoint on destroy and keeps the files; `files` removes the files too.",
    ),
    timeoutSeconds: field(
        "update",
        timeoutSeconds.default(DEFAULT_BACKUP_TIMEOUT_SECONDS),
        "The bound for the whole backup job; a job that outlives it is aborted and its partial files removed. Default 3600.",
    ),
});

export const DomainBackupSchema = DomainBackupSpec.object.superRefine((v, ctx) => {
    if (v.incrementalFrom !== undefined && v.incrementalFrom === v.checkpointName)
        ctx.addIssue({
            code: "custom",
            path: ["incrementalFrom"],
            message: "must name an earlier checkpoint, not the one this backup creates (checkpointName)",
        });
    const seen = new Set<string>();
    v.disks?.forEach((d, i) => {
        if (seen.has(d.name)) ctx.addIssue({ code: "custom", path: ["disks", i, "name"], message: `names disk '${d.name}' twice` });
        seen.add(d.name);
    });
});

type Inputs = z.infer<typeof DomainBackupSchema>;

/** One disk's backup file. */
export interface BackupFile {
    /** Disk target, e.g. vda. */
    disk: string;
    /** The qcow2 file on the libvirt host. */
    file: string;
    /** Its size in bytes when the backup completed. */
    size: number;
    /** The data the backup wrote into it (its allocated clusters), in bytes. */
    bytesCopied: number;
    /** For an incremental: the backup file it builds on (restore rebases onto it); null for a full backup. */
    basedOn: string | null;
}

/** What a DomainBackup exposes. */
export interface DomainBackupOutputs {
    /** The connection it was made through (stored as a secret). */
    connection?: Connection;
    /** The domain as declared: name or UUID. */
    domain: string;
    targetDir: string;
    /** The checkpoint an incremental starts from, as declared. */
    incrementalFrom?: string;
    /** The checkpoint this backup created. */
    checkpointName: string;
    /** What destroy does: `checkpoint` removes the checkpoint and keeps the files; `files` removes both. */
    deletion: "checkpoint" | "files";
    domainName: string;
    domainUuid: string;
    /** `full`, or `incremental` (only the blocks written since incrementalFrom). */
    kind: "full" | "incremental";
    /** Per disk: the file it builds on (an incremental), else null. */
    basedOn: Record<string, string> | null;
    /** Per disk: the file, its size and the bytes the job copied. */
    files: BackupFile[];
    /** What libvirt's job reported it processed, over all disks. */
    bytesProcessed: number;
    /** When the job completed (ISO 8601). */
    completedAt: string;
    /** How long the guest's filesystems were frozen (quiesce), else null. */
    frozenMilliseconds: number | null;
    /** True when create found this backup's own job already running (an earlier, interrupted run) and took its result. */
    adopted: boolean;
    libvirtVersion: string;
    /** Every file is there with the size it had when the backup completed (checked again by every refresh). */
    intact: boolean;
    /** Why not intact, or a problem with the checkpoint's bitmaps; null when all is well. */
    drift: string | null;
    /** When intact and drift were last checked (ISO 8601). */
    checkedAt: string;
}

interface Recorded extends DomainBackupOutputs {
    declared: Omit<Inputs, "connection">;
}

// ---- facts from the host, and the plan ----------------------------------------------

/** The file a disk's backup goes to: named after the domain, the checkpoint and the disk, so an incremental finds its base. */
export function backupFileName(targetDir: string, domainName: string, checkpoint: string, disk: string): string {
    const safe = (s: string) => s.replace(/[^A-Za-z0-9._-]/g, "_");
    return path.posix.join(targetDir, `${safe(domainName)}.${checkpoint}.${safe(disk)}.qcow2`);
}

interface JobInfo {
    /** none, bounded, unbounded, completed, failed, cancelled */
    type: string;
    /** backup, snapshot, migration-out... or a number libvirt added later. */
    operation: string;
    processed?: number;
    total?: number;
    error?: string;
}

const JOB_TYPES = ["none", "bounded", "unbounded", "completed", "failed", "cancelled"];
const JOB_OPERATIONS = [
    "unknown",
    "start",
    "save",
    "restore",
    "incoming migration",
    "outgoing migration",
    "snapshot",
    "snapshot revert",
    "dump",
    "backup",
];

/** `virsh domjobinfo --rawstats`: the numbers as libvirt gives them. */
export function parseJobInfo(out: string): JobInfo {
    const kv = new Map<string, string>();
    for (const line of out.split("\n")) {
        const m = /^\s*([^:]+?):\s*(.*?)\s*$/.exec(line);
        if (m) kv.set(m[1]!.toLowerCase(), m[2]!);
    }
    const type = Number(kv.get("job type") ?? 0);
    const op = kv.get("operation");
    const num = (k: string) => (kv.has(k) && /^\d+$/.test(kv.get(k)!) ? Number(kv.get(k)) : undefined);
    return {
        type: JOB_TYPES[type] ?? String(type),
        operation: op === undefined ? "unknown" : (JOB_OPERATIONS[Number(op)] ?? `operation ${op}`),
        processed: num("disk_processed") ?? num("data_processed"),
        total: num("disk_total") ?? num("data_total"),
        error: kv.get("errmsg"),
    };
}

async function jobInfo(virsh: Virsh, domain: string, completed = false): Promise<JobInfo> {
    const extra = completed ? ["--completed", "--keep-completed", "--anystats"] : [];
    for (let attempt = 0; ; attempt++) {
        try {
            return parseJobInfo(
                await virsh.run(["domjobinfo", "--domain", domain, "--rawstats", ...extra], { timeoutMs: READ_TIMEOUT_MS }),
            );
        } catch (e) {
            // libvirt 11.3 answers this for a moment while a backup job starts or ends (measured): ask again.
            if (!/backup job data missing/.test(messageOf(e)) || attempt >= JOB_DATA_RETRIES) throw e;
            await sleep(JOB_DATA_RETRY_MS);
        }
    }
}

/** Sizes of files on the host; a missing file has none. Paths hold no newline (hostFolder refuses control characters). */
async function fileSizes(virsh: Virsh, files: string[]): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    if (!files.length) return out;
    const r = await virsh.host(["stat", "-L", "-c", "%s %n", "--", ...files]);
    for (const line of r.stdout.split("\n")) {
        const m = /^(\d+) (.*)$/.exec(line);
        if (m) out.set(m[2]!, Number(m[1]));
    }
    if (r.code !== 0 && out.size === 0 && !/No such file/.test(r.stderr))
        throw hostFailure("failed", `cannot read the backup files on the libvirt host: ${r.stderr.trim()}`, r);
    return out;
}

/** The data a qcow2 file holds itself (not its backing file): `qemu-img map` entries at depth 0. */
async function allocatedBytes(virsh: Virsh, file: string): Promise<number> {
    const r = await virsh.host(["qemu-img", "map", "-U", "--output=json", "--", file]);
    if (r.code !== 0) throw hostFailure("failed", `cannot read backup file ${file}: ${r.stderr.trim()}`, r);
    const entries = JSON.parse(r.stdout) as Array<{ length: number; depth: number; data: boolean }>;
    return entries.filter((e) => e.depth === 0 && e.data).reduce((n, e) => n + e.length, 0);
}

/**
 * Problems with the bitmaps an incremental from `base` needs: `base` and
 * every checkpoint after it (libvirt merges them all), read with
 * `checkpoint-dumpxml --size`, which has no size where a bitmap is missing or broken.
 */
export async function chainProblems(virsh: Virsh, domain: string, base: string, disks: readonly string[]): Promise<string[]> {
    const later = names(await virsh.query(["checkpoint-list", "--domain", domain, "--from", base, "--descendants", "--name"]));
    const problems: string[] = [];
    for (const name of [base, ...later]) {
        const c = parseCheckpointXml(
            await virsh.run(["checkpoint-dumpxml", "--domain", domain, "--checkpointname", name, "--size", "--no-domain"]),
        );
        for (const d of c.disks) {
            if (d.checkpoint !== "bitmap" || !disks.includes(d.name)) continue;
            if (d.size === undefined)
                problems.push(`bitmap '${d.bitmap ?? name}' of checkpoint '${name}' on disk ${d.name} is missing or broken`);
        }
    }
    return problems;
}

/**
 * The job running on the domain and, for a backup, the files it writes; undefined when none runs.
 * A backup that ends between domjobinfo and backup-dumpxml is asked about again.
 */
async function runningJob(virsh: Virsh, domain: string): Promise<{ job: JobInfo; files: string[] } | undefined> {
    for (let attempt = 0; ; attempt++) {
        const job = await jobInfo(virsh, domain);
        if (job.type === "none") return undefined;
        if (job.operation !== "backup") return { job, files: [] };
        try {
            const xml = await virsh.run(["backup-dumpxml", "--domain", domain], { timeoutMs: READ_TIMEOUT_MS });
            return { job, files: parseBackupXml(xml).disks.flatMap((d) => (d.file ? [d.file] : [])) };
        } catch (e) {
            if (!/no domain backup job/i.test(messageOf(e)) || attempt >= 3) return { job, files: [] };
        }
    }
}

interface HostFacts {
    checkpoints: string[];
    /**
     * This backup's own job (the same target files) is running, or has completed with its checkpoint
     * and every file in place: an earlier run was interrupted after backup-begin. Its result is taken.
     */
    ownJob: false | "running" | "completed";
    /** Another job holds the domain: why this backup can't start. */
    otherJob?: string;
    /** Target files that exist already. */
    existing: string[];
    /** With incrementalFrom: what is wrong with its chain or its base files. */
    baseProblems: string[];
    /** With incrementalFrom: the disks its checkpoint covers with a bitmap. */
    baseDisks?: string[];
}

export interface BackupPlan {
    domain: string;
    kind: "full" | "incremental";
    backupXml: string;
    checkpointXml: string;
    files: Array<{ disk: string; file: string; basedOn: string | null }>;
}

/** The disks to back up, with their target files; failures for disks that can't be. */
function plannedDisks(v: Inputs, probe: DomainProbe, fail: Fail): Array<{ disk: string; file?: string }> {
    const out: Array<{ disk: string; file?: string }> = [];
    for (const { disk: d, entry: o, index: i } of coveredDisks(v.disks, probe.info, fail)) {
        if ((o?.backup ?? "yes") === "no") {
            out.push({ disk: d.target });
            continue;
        }
        if (d.format !== "qcow2") {
            fail(i === undefined ? "disks" : `disks[${i}].backup`, backupSays.notQcow2(d));
        }
        out.push({ disk: d.target, file: backupFileName(v.targetDir, probe.info.name, v.checkpointName, d.target) });
    }
    return out;
}

async function gatherFacts(virsh: Virsh, v: Inputs, probe: DomainProbe): Promise<HostFacts> {
    const domain = probe.info.uuid;
    const facts: HostFacts = { checkpoints: [], ownJob: false, existing: [], baseProblems: [] };
    if (!probe.active) return facts;
    const planned = plannedDisks(v, probe, () => undefined).filter((d) => d.file);
    const [checkpoints, running] = await Promise.all([listCheckpoints(virsh, domain), runningJob(virsh, domain)]);
    facts.checkpoints = checkpoints;
    if (running) {
        const { job, files } = running;
        const mine = planned.map((d) => d.file!).sort();
        if (files.length && JSON.stringify([...files].sort()) === JSON.stringify(mine)) facts.ownJob = "running";
        else facts.otherJob = backupSays.otherJob(probe.info.name, job.operation, files);
    }
    const job = running?.job ?? { type: "none" };
    const sizes = await fileSizes(
        virsh,
        planned.map((d) => d.file!),
    );
    facts.existing = [...sizes.keys()];
    // backup-begin makes the checkpoint and the files at once, and libvirt removes the files of a job that
    // fails or is aborted: all of them there, with the checkpoint, after a completed backup job, are that job's.
    if (
        job.type === "none" &&
        planned.length > 0 &&
        facts.existing.length === planned.length &&
        checkpoints.includes(v.checkpointName) &&
        (await jobInfo(virsh, domain, true).then((j) => j.type === "completed" && j.operation === "backup"))
    )
        facts.ownJob = "completed";
    if (v.incrementalFrom !== undefined && checkpoints.includes(v.incrementalFrom) && !facts.ownJob) {
        const base = parseCheckpointXml(
            await virsh.run(["checkpoint-dumpxml", "--domain", domain, "--checkpointname", v.incrementalFrom, "--no-domain"]),
        );
        facts.baseDisks = base.disks.filter((d) => d.checkpoint === "bitmap").map((d) => d.name);
        const disks = planned.map((d) => d.disk);
        facts.baseProblems.push(...(await chainProblems(virsh, domain, v.incrementalFrom, disks)));
        const baseFiles = disks.map((d) => backupFileName(v.targetDir, probe.info.name, v.incrementalFrom!, d));
        const baseSizes = await fileSizes(virsh, baseFiles);
        for (const f of baseFiles) {
            if (!baseSizes.has(f)) facts.baseProblems.push(`its backup file ${f} is missing`);
            else {
                const { result: r } = await imageInfo(virsh, f, "backupFile");
                if (r.code !== 0)
                    facts.baseProblems.push(`its backup file ${f} is not a readable image (${r.stderr.trim().split("\n")[0]})`);
            }
        }
    }
    return facts;
}

/** Decide the backup, or say exactly why it can't be taken. Check reports the failures; create throws them. */
export function planBackup(v: Inputs, probe: DomainProbe, facts: HostFacts): { plan?: BackupPlan; failures: CheckFailure[] } {
    const failures: CheckFailure[] = [];
    const fail: Fail = (property, reason) => failures.push({ property, reason });
    const dom = probe.info;
    if (!probe.active) {
        fail("domain", backupSays.notRunning(probe));
        return { failures };
    }
    const disks = plannedDisks(v, probe, fail);
    const backedUp = disks.filter((d) => d.file);
    if (!backedUp.length) fail(v.disks ? "disks" : "domain", `no disk of domain '${dom.name}' would be backed up`);
    if (facts.otherJob) fail("domain", facts.otherJob);
    if (!facts.ownJob) {
        if (facts.checkpoints.includes(v.checkpointName)) {
            fail("checkpointName", backupSays.checkpointTaken(dom.name, v.checkpointName));
        }
        for (const f of facts.existing) {
            fail("targetDir", backupSays.fileExists(f));
        }
        if (v.incrementalFrom !== undefined) {
            const base = v.incrementalFrom;
            if (!facts.checkpoints.includes(base)) {
                failures.push({ property: "incrementalFrom", reason: backupSays.noBase(dom.name, base, facts.checkpoints), absent: true });
            } else {
                for (const d of backedUp) {
                    if (facts.baseDisks && !facts.baseDisks.includes(d.disk)) fail("incrementalFrom", backupSays.noBitmap(base, d.disk));
                }
                if (facts.baseProblems.length) {
                    fail("incrementalFrom", backupSays.brokenChain(base, facts.baseProblems));
                }
            }
        }
    }
    if (v.quiesce) {
        if (probe.state !== "running")
            fail("quiesce", `domain '${dom.name}' is ${probe.state}: its guest agent can freeze filesystems only while it runs`);
        else if (dom.guestAgent !== "connected") fail("quiesce", guestAgentMissing(dom));
    }
    if (failures.length) return { failures };
    const kind = v.incrementalFrom === undefined ? "full" : "incremental";
    const checkpoint: CheckpointSpec = {
        name: v.checkpointName,
        disks: disks.map((d) => (d.file ? { name: d.disk, checkpoint: "bitmap" } : { name: d.disk, checkpoint: "no" })),
    };
    return {
        plan: {
            domain: dom.uuid,
            kind,
            backupXml: buildBackupXml({ incremental: v.incrementalFrom, disks: disks.map((d) => ({ name: d.disk, file: d.file })) }),
            checkpointXml: buildCheckpointXml(checkpoint),
            files: backedUp.map((d) => ({
                disk: d.disk,
                file: d.file!,
                basedOn: kind === "incremental" ? backupFileName(v.targetDir, dom.name, v.incrementalFrom!, d.disk) : null,
            })),
        },
        failures,
    };
}

// ---- the job ---------------------------------------------------------------------

/** Undo a backup that did not complete: libvirt's partial files and the checkpoint made with it. */
async function discard(virsh: Virsh, plan: BackupPlan, checkpoint: string): Promise<string[]> {
    const problems: string[] = [];
    const r = await virsh.host(["rm", "-f", "--", ...plan.files.map((f) => f.file)]);
    if (r.code !== 0)
        problems.push(
            `the partial files could not be removed (${r.stderr.trim()}): remove ${plan.files.map((f) => f.file).join(", ")} by hand`,
        );
    try {
        if ((await listCheckpoints(virsh, plan.domain)).includes(checkpoint))
            await virsh.run(["checkpoint-delete", "--domain", plan.domain, "--checkpointname", checkpoint]);
    } catch (e) {
        problems.push(
            `checkpoint '${checkpoint}' could not be deleted (${messageOf(e).split("\n")[0]}): delete it with virsh checkpoint-delete`,
        );
    }
    return problems;
}

/** Wait for the running backup job; abort it at the deadline. Returns what libvirt reports of the completed job. */
async function waitForJob(virsh: Virsh, plan: BackupPlan, v: Inputs, domainName: string, deadline: number): Promise<JobInfo> {
    let last: JobInfo | undefined;
    for (;;) {
        const job = await jobInfo(virsh, plan.domain);
        if (job.type === "none") break;
        last = job;
        if (Date.now() >= deadline) {
            try {
                await virsh.run(["domjobabort", "--domain", plan.domain]);
            } catch (e) {
                // It may have finished in between: then its result decides.
                if (!/no job is active/i.test(messageOf(e))) throw e;
            }
            for (const until = Date.now() + BACKUP_ABORT_WAIT_MS; Date.now() < until; await sleep(BACKUP_POLL_MS)) {
                if ((await jobInfo(virsh, plan.domain)).type === "none") break;
            }
            const done = await jobInfo(virsh, plan.domain, true);
            if (done.type === "completed" && done.operation === "backup") return done;
            const problems = await discard(virsh, plan, v.checkpointName);
            const progress = last.total ? ` after ${last.processed ?? 0} of ${last.total} bytes` : "";
            const files = plan.files.map((f) => f.file);
            const o = { domainName, timeoutSeconds: v.timeoutSeconds, progress, problems, files, checkpoint: v.checkpointName };
            throw new LibvirtError("timeout", backupSays.outlived(o));
        }
        await sleep(BACKUP_POLL_MS);
    }
    const done = await jobInfo(virsh, plan.domain, true);
    if (done.type === "completed" && done.operation === "backup") return done;
    const problems = await discard(virsh, plan, v.checkpointName);
    throw new LibvirtError(
        "failed",
        backupSays.jobEnded({ domainName, type: done.type, error: done.error, problems, checkpoint: v.checkpointName }),
    );
}

async function createLocked(v: Inputs, virsh: Virsh): Promise<Recorded> {
    const started = Date.now();
    const probe = await probeDomain(virsh, v.domain);
    const facts = await gatherFacts(virsh, v, probe);
    const { plan, failures } = planBackup(v, probe, facts);
    if (!plan) throw new InputError(failures);
    let frozenMilliseconds: number | null = null;
    if (!facts.ownJob) {
        const mkdir = await virsh.host(["mkdir", "-p", "--", v.targetDir]);
        if (mkdir.code !== 0)
            throw hostFailure("failed", `cannot make targetDir ${v.targetDir} on ${virsh.where}: ${mkdir.stderr.trim()}`, mkdir);
        await withPrivateFolder(virsh, async (folder) => {
            // virsh takes one document on stdin: the checkpoint goes through the private folder.
            const checkpointFile = await folder.write("checkpoint.xml", plan.checkpointXml);
            const begin = () =>
                virsh.run(["backup-begin", "--domain", plan.domain, "--backupxml", "/dev/stdin", "--checkpointxml", checkpointFile], {
                    stdin: plan.backupXml,
                });
            if (v.quiesce) frozenMilliseconds = (await withFrozenGuest(virsh, plan.domain, begin)).frozenMilliseconds;
            else await begin();
        });
    }
    const job = await waitForJob(virsh, plan, v, probe.info.name, (facts.ownJob ? Date.now() : started) + v.timeoutSeconds * 1000);
    const sizes = await fileSizes(
        virsh,
        plan.files.map((f) => f.file),
    );
    const files: BackupFile[] = [];
    for (const f of plan.files) {
        const size = sizes.get(f.file);
        if (size === undefined)
            throw new LibvirtError("failed", `the backup job completed, but its file ${f.file} is missing on ${virsh.where}`);
        files.push({ disk: f.disk, file: f.file, size, bytesCopied: await allocatedBytes(virsh, f.file), basedOn: f.basedOn });
    }
    const now = new Date().toISOString();
    return {
        ...(v.connection ? { connection: v.connection } : {}),
        domain: v.domain,
        targetDir: v.targetDir,
        ...(v.incrementalFrom !== undefined ? { incrementalFrom: v.incrementalFrom } : {}),
        checkpointName: v.checkpointName,
        deletion: v.deletion,
        domainName: probe.info.name,
        domainUuid: probe.info.uuid,
        kind: plan.kind,
        basedOn: plan.kind === "incremental" ? Object.fromEntries(files.map((f) => [f.disk, f.basedOn!])) : null,
        files,
        bytesProcessed: job.processed ?? 0,
        completedAt: now,
        frozenMilliseconds,
        adopted: facts.ownJob !== false,
        libvirtVersion: probe.version.libvirt,
        intact: true,
        drift: null,
        checkedAt: now,
        declared: withoutConnection(v),
    };
}

/** Are the files still what the backup wrote, and is its checkpoint still usable for an incremental? */
async function checkDrift(virsh: Virsh, props: Recorded): Promise<{ intact: boolean; drift: string | null }> {
    const sizes = await fileSizes(
        virsh,
        props.files.map((f) => f.file),
    );
    const fileProblems: string[] = [];
    for (const f of props.files) {
        const now = sizes.get(f.file);
        if (now === undefined) fileProblems.push(`${f.file} is missing`);
        else if (now !== f.size) fileProblems.push(`${f.file} is ${now} bytes, but the backup wrote ${f.size}`);
    }
    const chain: string[] = [];
    try {
        const probe = await probeDomain(virsh, props.domainUuid);
        if (!probe.active) {
            // Shut off: the images themselves, read with qemu-img info -U (missing, or in-use: not closed cleanly).
            if (!probe.checkpointsWhileOff.includes(props.checkpointName))
                chain.push(backupSays.checkpointGone(props.checkpointName, probe.info.name));
            else {
                const xml = await virsh.run([
                    "checkpoint-dumpxml",
                    "--domain",
                    probe.info.uuid,
                    "--checkpointname",
                    props.checkpointName,
                    "--no-domain",
                ]);
                chain.push(...(await bitmapsMissingOffline(virsh, probe, parseCheckpointXml(xml)).catch(() => [])));
            }
        } else {
            if (!(await listCheckpoints(virsh, probe.info.uuid)).includes(props.checkpointName))
                chain.push(backupSays.checkpointGone(props.checkpointName, probe.info.name));
            else
                chain.push(
                    ...(await chainProblems(
                        virsh,
                        probe.info.uuid,
                        props.checkpointName,
                        props.files.map((f) => f.disk),
                    )),
                );
        }
    } catch (e) {
        if (!isKind(e, "domain-not-found")) throw e;
        chain.push(`domain '${props.domainName}' is gone: its checkpoint with it (the files remain)`);
    }
    const all = [...fileProblems, ...chain];
    return { intact: fileProblems.length === 0, drift: all.length ? all.join("; ") : null };
}

// ---- the provider ------------------------------------------------------------

export const domainBackup = {
    check(olds: Record<string, unknown>, news: Record<string, unknown>): Promise<pulumi.dynamic.CheckResult> {
        return checkInputs(DomainBackupSchema, olds, news, {
            planKeys: DomainBackupSpec.checkedKeys,
            createKeys: DomainBackupSpec.createKeys,
            ask: (v) =>
                askAboutDomain({ connection: v.connection, domain: v.domain }, "the backup", async (virsh, probe) => {
                    return planBackup(v, probe, await gatherFacts(virsh, v, probe)).failures;
                }),
        });
    },

    async diff(_id: string, olds: Recorded, news: Record<string, unknown>): Promise<pulumi.dynamic.DiffResult> {
        const { v, replaces, updates, credentialsChanged } = compareInputs(DomainBackupSchema, olds, news, {
            replace: DomainBackupSpec.replaceKeys,
            update: DomainBackupSpec.updateKeys,
        });
        // Drift (a missing file) is reported, never repaired by a new backup under the same name.
        return {
            changes: replaces.length > 0 || updates.length > 0 || credentialsChanged,
            replaces,
            deleteBeforeReplace: replacesInPlace(replaces, olds, v.domain, olds.checkpointName === v.checkpointName),
        };
    },

    async create(news: Record<string, unknown>): Promise<pulumi.dynamic.CreateResult> {
        const v = parseOrThrow(DomainBackupSchema, news);
        const virsh = virshFor(v, { wholeJob: true });
        return withDomainLock(lockKey(v), async () => {
            const outs = await createLocked(v, virsh);
            return { id: `${outs.domainUuid}/backup/${outs.checkpointName}`, outs };
        });
    },

    async read(id: string, props: Recorded): Promise<pulumi.dynamic.ReadResult> {
        const virsh = virshFor(props, { wholeJob: true });
        return withDomainLock(lockKey(props), async () => {
            const { intact, drift } = await checkDrift(virsh, props);
            return { id, props: { ...props, intact, drift, checkedAt: new Date().toISOString() } };
        });
    },

    async update(_id: string, olds: Recorded, news: Record<string, unknown>): Promise<pulumi.dynamic.UpdateResult> {
        const v = parseOrThrow(DomainBackupSchema, news);
        // Only how to reach the host, what destroy does and the time limit change: the backup stays as it is.
        const { connection: _old, ...kept } = olds;
        const outs: Recorded = {
            ...kept,
            ...(v.connection ? { connection: v.connection } : {}),
            deletion: v.deletion,
            declared: withoutConnection(v),
        };
        return { outs };
    },

    async delete(_id: string, props: Recorded): Promise<void> {
        const virsh = virshFor(props, { wholeJob: true });
        await withDomainLock(lockKey(props), async () => {
            let probe: DomainProbe | undefined;
            try {
                probe = await probeDomain(virsh, props.domainUuid || props.domain);
            } catch (e) {
                if (!isKind(e, "domain-not-found")) throw e; // gone: its checkpoints with it
            }
            if (probe && (await listCheckpoints(virsh, probe.info.uuid)).includes(props.checkpointName)) {
                if (!probe.active) {
                    throw new LibvirtError("unsupported", backupSays.deleteWhileOff(props.checkpointName, probe));
                }
                await deleteCheckpoint(virsh, probe.info.uuid, props.checkpointName);
            }
            if (props.deletion === "files") {
                const files = props.files.map((f) => f.file);
                const r = await virsh.host(["rm", "-f", "--", ...files]);
                if (r.code !== 0)
                    throw hostFailure("failed", `the backup's checkpoint was removed, but its files could not be: ${r.stderr.trim()}`, r);
            }
        });
    },
};
