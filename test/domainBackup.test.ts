// DomainBackup through the engine path, on real lab domains whose guest writes
// to its own disk: full and incremental push backups, each checked against a
// reference taken independently of the backup (the paused guest's disk, copied
// with `qemu-img convert -U`), a restore done exactly as the README shows it,
// drift on refresh, a broken bitmap chain refused at preview, a job that
// outlives its timeout, and a job left running by an interrupted provider.
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { DomainBackupProvider, DomainCheckpointProvider } from "pulumi-libvirt-snapshots";
import { DYNAMIC_TYPE, EngineHarness, PACKAGE_ROOT, type ResourceState } from "./harness/engine";
import { engineSuite, stackConfigFor } from "./support/fixture";
import { MiB, checkpointNames, domstate, expectCallError, re, sameHostConnection } from "./support/helpers";
import { stopWhenStartedInWorker } from "./support/stopWhenStarted";
import {
    guestDisk,
    hostRun,
    loadLab,
    makeGuestDomain,
    readGuestCounter,
    sleep,
    virshOk,
    waitGuestCounter,
    type TestDomain,
} from "./support/lab";
import { startThawGuard } from "../provider/host/thawGuard";
import { Virsh } from "../provider/host/virsh";

const lab = loadLab();

async function qemuImg(args: string[]): Promise<string> {
    const r = await hostRun("/usr/bin/qemu-img", args, { timeoutMs: 300_000 });
    if (r.code !== 0) throw new Error(`qemu-img ${args.join(" ")} failed (exit ${r.code}): ${r.stderr.trim()}`);
    return r.stdout;
}

/** `qemu-img compare`: true when the guest-visible contents are identical. */
async function sameContents(a: string, b: string): Promise<boolean> {
    const r = await hostRun("/usr/bin/qemu-img", ["compare", "-U", a, b], { timeoutMs: 300_000 });
    if (r.code === 0) return true;
    if (r.code === 1) return false;
    throw new Error(`qemu-img compare ${a} ${b} failed (exit ${r.code}): ${r.stderr.trim()}`);
}

/** The reference: the paused guest's disk, copied independently of any backup. */
async function reference(dom: TestDomain, name: string): Promise<string> {
    assert.equal(await domstate(dom.name), "paused");
    const out = path.join(dom.dir, `${name}.raw`);
    await qemuImg(["convert", "-U", "-O", "raw", dom.disk, out]);
    return out;
}

async function guestWrites(dom: TestDomain, n: number): Promise<void> {
    const start = await readGuestCounter(dom.disk);
    const reached = await waitGuestCounter(dom.disk, start + n - 1, 30_000);
    assert.ok(reached >= start + n, `the writer guest of ${dom.name} wrote ${reached - start} counters in 30 s, wanted ${n}`);
}

async function jobType(dom: TestDomain): Promise<string> {
    for (let attempt = 0; ; attempt++) {
        const r = await hostRun("/usr/bin/virsh", ["-c", "qemu:///system", "domjobinfo", "--domain", dom.name]);
        if (r.code === 0) return /Job type:\s+(\S+)/.exec(r.stdout)?.[1] ?? "";
        // libvirt 11.3 says this for a moment while a backup job starts or ends.
        if (!/backup job data missing/.test(r.stderr) || attempt >= 10) throw new Error(`virsh domjobinfo ${dom.name}: ${r.stderr.trim()}`);
        await sleep(200);
    }
}

function exists(file: string): boolean {
    return fs.existsSync(file);
}

/** Remove a dirty bitmap through QMP, as if it had been lost (the test's own throwaway domain). */
async function removeBitmap(dom: TestDomain, name: string): Promise<void> {
    const qmp = (cmd: object) => virshOk(["qemu-monitor-command", "--domain", dom.name, "--cmd", JSON.stringify(cmd)]);
    const nodes = (
        JSON.parse(await qmp({ execute: "query-named-block-nodes", arguments: { flat: true } })) as {
            return: Array<{ "node-name": string; "dirty-bitmaps"?: Array<{ name: string }> }>;
        }
    ).return;
    const node = nodes.find((n) => n["dirty-bitmaps"]?.some((b) => b.name === name));
    assert.ok(node, `no node holds bitmap ${name}`);
    await qmp({ execute: "block-dirty-bitmap-remove", arguments: { node: node["node-name"], name } });
}

/**
 * Drop the host's page cache of a disk image, so a backup reads it from the device: with the
 * data cached, copying a few hundred MiB can finish in well under a second on an idle machine.
 */
async function uncache(file: string): Promise<void> {
    for (const [cmd, args] of [
        ["/usr/bin/sync", [file]],
        ["/usr/bin/dd", [`if=${file}`, "iflag=nocache", "count=0", "status=none"]],
    ] as const) {
        const r = await hostRun(cmd, args);
        assert.equal(r.code, 0, `${cmd}: ${r.stderr}`);
    }
}

interface FileOut {
    disk: string;
    file: string;
    size: number;
    bytesCopied: number;
    basedOn: string | null;
}

describe("DomainBackup (engine path, real lab)", function () {
    this.timeout(600_000);
    const suite = engineSuite("labtmp-bkup-");
    const up = (name: string, inputs: Record<string, unknown>) => suite.up(name, DomainBackupProvider, inputs);
    const failuresOf = (inputs: Record<string, unknown>) => suite.failuresOf(DomainBackupProvider, inputs);

    it("a full backup and two incrementals of a writing guest, each restored as the README shows and compared with the paused guest's disk", async () => {
        const dom = await suite.newDomain({ running: true, writer: true });
        const targetDir = path.join(dom.dir, "backups");
        await guestWrites(dom, 2);
        const states: ResourceState[] = [];
        const refs: string[] = [];
        for (const [i, name] of ["full", "inc1", "inc2"].entries()) {
            if (i > 0) {
                await virshOk(["resume", "--domain", dom.name]);
                await guestWrites(dom, 3);
            }
            await virshOk(["suspend", "--domain", dom.name]);
            refs.push(await reference(dom, name));
            states.push(
                await up(name, {
                    domain: dom.name,
                    targetDir,
                    checkpointName: name,
                    ...(i > 0 ? { incrementalFrom: states[i - 1]!.outs.checkpointName } : {}),
                    ...(name === "inc2" ? { deletion: "files" } : {}),
                }),
            );
            assert.equal(await domstate(dom.name), "paused", "a backup leaves a paused domain paused");
        }
        await virshOk(["resume", "--domain", dom.name]);
        const [full, inc1, inc2] = states as [ResourceState, ResourceState, ResourceState];
        const fileOf = (s: ResourceState) => (s.outs.files as FileOut[])[0]!;

        assert.equal(full.id, `${dom.uuid}/backup/full`);
        assert.equal(full.outs.kind, "full");
        assert.equal(full.outs.basedOn, null);
        assert.equal(full.outs.domainUuid, dom.uuid);
        assert.equal(full.outs.libvirtVersion, lab.libvirtVersion);
        assert.equal(full.outs.intact, true);
        assert.equal(full.outs.drift, null);
        assert.equal(full.outs.adopted, false);
        assert.ok(Date.parse(full.outs.completedAt as string) > 0);
        assert.deepEqual(
            (full.outs.files as FileOut[]).map((f) => [f.disk, f.file, f.basedOn]),
            [["vda", path.join(targetDir, `${dom.name}.full.vda.qcow2`), null]],
        );
        assert.equal(inc1.outs.kind, "incremental");
        assert.deepEqual(inc1.outs.basedOn, { vda: fileOf(full).file });
        assert.equal(fileOf(inc1).basedOn, fileOf(full).file);
        assert.deepEqual(inc2.outs.basedOn, { vda: fileOf(inc1).file });
        for (const s of states) {
            const f = fileOf(s);
            assert.equal(fs.statSync(f.file).size, f.size, `${f.file}'s recorded size`);
            assert.ok(f.bytesCopied > 0);
        }
        // The incrementals hold only the clusters the guest wrote in between (each write is a fresh 64 KiB cluster),
        // not the boot sector in cluster 0, which the full backup holds and nothing wrote since.
        assert.ok(fileOf(inc1).bytesCopied >= 3 * 65536, `inc1 copied ${fileOf(inc1).bytesCopied}`);
        const ownAt0 = async (file: string) => {
            const map = JSON.parse(await qemuImg(["map", "-U", "--output=json", file])) as Array<{
                start: number;
                depth: number;
                data: boolean;
            }>;
            const first = map.find((m) => m.start === 0)!;
            return first.depth === 0 && first.data;
        };
        assert.equal(await ownAt0(fileOf(full).file), true, "the full backup holds cluster 0");
        assert.equal(await ownAt0(fileOf(inc1).file), false, "inc1 does not: it was not written since the full backup");
        // libvirt made one checkpoint per backup, a chain.
        assert.deepEqual(await checkpointNames(dom.name), ["full", "inc1", "inc2"]);
        assert.equal((await virshOk(["checkpoint-parent", "--domain", dom.name, "--checkpointname", "inc2"])).trim(), "inc1");
        // As libvirt writes them: the full backup stands alone, an incremental's backing file is the live disk.
        const fullInfo = JSON.parse(await qemuImg(["info", "-U", "--output=json", fileOf(full).file])) as Record<string, unknown>;
        const incInfo = JSON.parse(await qemuImg(["info", "-U", "--output=json", fileOf(inc1).file])) as Record<string, unknown>;
        assert.equal(fullInfo["backing-filename"], undefined);
        assert.equal(incInfo["backing-filename"], dom.disk);

        // The full backup alone is the disk as it was.
        assert.equal(await sameContents(refs[0]!, fileOf(full).file), true, "the full backup equals the paused disk");

        // The README's restore: copies of the files, each incremental rebased onto the one before, then converted.
        const restore = path.join(dom.dir, "restore");
        fs.mkdirSync(restore);
        const copies = states.map((s, i) => {
            const to = path.join(restore, `vda.${i}.qcow2`);
            fs.copyFileSync(fileOf(s).file, to);
            return to;
        });
        await qemuImg(["rebase", "-u", "-F", "qcow2", "-b", copies[0]!, copies[1]!]);
        await qemuImg(["rebase", "-u", "-F", "qcow2", "-b", copies[1]!, copies[2]!]);
        for (const i of [1, 2]) {
            const restored = path.join(restore, `restored-${i}.qcow2`);
            await qemuImg(["convert", "-O", "qcow2", copies[i]!, restored]);
            assert.equal(
                await sameContents(refs[i]!, restored),
                true,
                `the disk rebuilt from the full backup and ${i} incremental(s) equals the paused disk then`,
            );
            // The control: the other point in time differs, so the comparison can fail.
            assert.equal(await sameContents(refs[i === 1 ? 2 : 1]!, restored), false, `restored-${i} differs from the other reference`);
        }

        // Refresh: intact. Then a file goes missing: drift, no new backup.
        const r2 = (await suite.engine.refresh(inc2))!;
        assert.equal(r2.outs.intact, true);
        assert.equal(r2.outs.drift, null);
        fs.truncateSync(fileOf(inc1).file, fileOf(inc1).size + 512);
        const r1 = (await suite.engine.refresh(inc1))!;
        assert.equal(r1.outs.intact, false);
        assert.match(
            r1.outs.drift as string,
            new RegExp(`${re(fileOf(inc1).file)} is ${fileOf(inc1).size + 512} bytes, but the backup wrote ${fileOf(inc1).size}`),
        );
        fs.truncateSync(fileOf(inc1).file, fileOf(inc1).size);
        const gone = fileOf(inc2).file;
        fs.renameSync(gone, `${gone}.moved`);
        const r2b = (await suite.engine.refresh(inc2))!;
        assert.equal(r2b.outs.intact, false);
        assert.match(r2b.outs.drift as string, new RegExp(`${re(gone)} is missing`));
        assert.deepEqual(await checkpointNames(dom.name), ["full", "inc1", "inc2"], "refresh takes no new backup");
        // An incremental from a backup whose file is gone could never be restored: refused at preview.
        assert.match(
            await failuresOf({ domain: dom.name, targetDir, checkpointName: "inc3", incrementalFrom: "inc2" }),
            new RegExp(
                `incrementalFrom: the chain from checkpoint 'inc2' is broken: its backup file ${re(gone)} is missing\\..*Take a full backup instead`,
            ),
        );
        fs.renameSync(`${gone}.moved`, gone);

        // Destroy: inc2 (deletion: files) takes its files; the others keep theirs.
        await suite.engine.destroy(r2b);
        assert.equal(exists(gone), false);
        await suite.engine.destroy(inc1);
        await suite.engine.destroy(full);
        assert.deepEqual(await checkpointNames(dom.name), []);
        assert.equal(exists(fileOf(full).file), true, "backups outlive the stack by default");
        assert.equal(exists(fileOf(inc1).file), true);
        assert.equal(await domstate(dom.name), "running");
    });

    it("preview refuses what can't be backed up, naming the property and what to do", async () => {
        const [off, running] = await Promise.all([suite.newDomain({}), suite.newDomain({ running: true, writer: true })]);
        const targetDir = path.join(running.dir, "backups");
        assert.match(
            await failuresOf({ domain: off.name, targetDir, checkpointName: "c" }),
            new RegExp(`domain: domain '${off.name}' is shut off: libvirt .* backs up only a running or paused domain`),
        );
        assert.match(
            await failuresOf({ domain: running.name, targetDir: "backups", checkpointName: "c" }),
            /targetDir: must be an absolute path on the libvirt host/,
        );
        assert.match(
            await failuresOf({ domain: running.name, targetDir: "/a/../b", checkpointName: "c" }),
            /targetDir: must be a normal absolute path/,
        );
        assert.match(
            await failuresOf({ domain: running.name, targetDir, checkpointName: "x", incrementalFrom: "x" }),
            /incrementalFrom: must name an earlier checkpoint, not the one this backup creates/,
        );
        assert.match(
            await failuresOf({ domain: running.name, targetDir, checkpointName: "with space" }),
            /checkpointName: may contain only letters/,
        );
        assert.match(
            await failuresOf({ domain: running.name, targetDir, checkpointName: "i1", incrementalFrom: "nope" }),
            new RegExp(
                `incrementalFrom: domain '${running.name}' has no checkpoint 'nope' \\(its checkpoints: none\\)\\. Take a full backup`,
            ),
        );
        assert.match(
            await failuresOf({ domain: running.name, targetDir, checkpointName: "q", quiesce: true }),
            new RegExp(`quiesce: domain '${running.name}' has no QEMU guest agent channel`),
        );
        assert.match(
            await failuresOf({ domain: running.name, targetDir, checkpointName: "c", disks: [{ name: "vdz", backup: "yes" }] }),
            /disks\[0\]\.name: domain '.*' has no disk 'vdz' \(its disks: vda\)/,
        );
        assert.match(
            await failuresOf({ domain: running.name, targetDir, checkpointName: "c", deletion: "all" }),
            /deletion: must be 'checkpoint' .* or 'files'/,
        );
        assert.match(
            await failuresOf({ domain: running.name, targetDir, checkpointName: "c", timeoutSeconds: 0 }),
            /timeoutSeconds: must be at least 1/,
        );
        assert.equal(await failuresOf({ domain: running.name, targetDir, checkpointName: "fine" }), "");

        // A checkpoint name in use, and a backup file in the way, are refused: never a new backup under an old name.
        const s = await up("first", { domain: running.name, targetDir, checkpointName: "first" });
        assert.match(
            await failuresOf({ domain: running.name, targetDir: path.join(running.dir, "other"), checkpointName: "first" }),
            /checkpointName: domain '.*' already has a checkpoint 'first'\. A backup makes its own checkpoint, and the provider never takes a new backup under an existing checkpoint name/,
        );
        await virshOk(["checkpoint-delete", "--domain", running.name, "--checkpointname", "first"]);
        assert.match(
            await failuresOf({ domain: running.name, targetDir, checkpointName: "first" }),
            new RegExp(
                `targetDir: backup file ${re(path.join(targetDir, `${running.name}.first.vda.qcow2`))} already exists, and a backup never overwrites one`,
            ),
        );
        // A checkpoint that is already gone deletes fine; the files stay.
        await suite.engine.destroy(s);
        assert.equal(exists(path.join(targetDir, `${running.name}.first.vda.qcow2`)), true);
    });

    it("a broken bitmap chain: refresh reports it, and an incremental from it is refused at preview with what to do", async () => {
        const dom = await suite.newDomain({ running: true, writer: true });
        const targetDir = path.join(dom.dir, "backups");
        const full = await up("base", { domain: dom.name, targetDir, checkpointName: "base" });
        await guestWrites(dom, 1);
        assert.equal(await failuresOf({ domain: dom.name, targetDir, checkpointName: "next", incrementalFrom: "base" }), "");
        // The failure users of incremental backup meet most: the bitmap is lost behind libvirt's back (here through QMP).
        await removeBitmap(dom, "base");
        const r = (await suite.engine.refresh(full))!;
        assert.equal(r.outs.intact, true, "the files are fine");
        assert.match(r.outs.drift as string, /bitmap 'base' of checkpoint 'base' on disk vda is missing or broken/);
        assert.match(
            await failuresOf({ domain: dom.name, targetDir, checkpointName: "next", incrementalFrom: "base" }),
            /incrementalFrom: the chain from checkpoint 'base' is broken: bitmap 'base' of checkpoint 'base' on disk vda is missing or broken\. An incremental from it would be refused by libvirt \('checkpoint inconsistent'\) or could never be restored\. Take a full backup instead/,
        );
        await suite.engine.destroy(r);
    });

    it("DomainCheckpoint reports its bitmaps' health: a lost bitmap while running (--size), and in the image once shut off (qemu-img info -U)", async () => {
        const dom = await suite.newDomain({ running: true, writer: true });
        const s = await suite.up("health", DomainCheckpointProvider, { domain: dom.name, checkpointName: "health" });
        assert.equal(s.outs.bitmapsHealthy, true);
        assert.deepEqual(s.outs.bitmapProblems, []);
        await removeBitmap(dom, "health");
        const r1 = (await suite.engine.refresh(s))!;
        assert.equal(r1.outs.bitmapsHealthy, false);
        assert.deepEqual(r1.outs.bitmapProblems, ["bitmap 'health' of disk vda is missing or broken (libvirt can't measure it)"]);
        await virshOk(["destroy", "--domain", dom.name]);
        const r2 = (await suite.engine.refresh(r1))!;
        assert.equal(r2.outs.bitmapsHealthy, false);
        assert.match(
            (r2.outs.bitmapProblems as string[]).join("\n"),
            new RegExp(`^bitmap 'health' is not in disk vda \\(${re(dom.disk)}\\)$`),
        );
        await virshOk(["checkpoint-delete", "--domain", dom.name, "--checkpointname", "health", "--metadata"]);
    });

    it("a qemu killed while it held the bitmap: the image's bitmap is marked in-use, and DomainCheckpoint reports it as inconsistent", async () => {
        const dom = await suite.newDomain({ running: true, writer: true });
        const s = await suite.up("crashed", DomainCheckpointProvider, { domain: dom.name, checkpointName: "crashed" });
        assert.equal(s.outs.bitmapsHealthy, true);
        await guestWrites(dom, 2);
        // qemu writes a persistent bitmap into the image when it closes it (destroy lets it), and marks it
        // in-use when it opens the image again. Killed then, qemu never clears the mark.
        await virshOk(["destroy", "--domain", dom.name]);
        await virshOk(["start", "--domain", dom.name]);
        await guestWrites(dom, 2);
        const k = await hostRun("/usr/bin/pkill", ["-KILL", "-f", `guest=${dom.name},`]);
        assert.equal(k.code, 0, `pkill: ${k.stderr}`);
        for (let i = 0; i < 100 && (await domstate(dom.name)) !== "shut off"; i++) await sleep(100);
        const flags = (
            JSON.parse(await qemuImg(["info", "-U", "--output=json", dom.disk])) as {
                "format-specific": { data: { bitmaps?: Array<{ name: string; flags: string[] }> } };
            }
        )["format-specific"].data.bitmaps?.find((b) => b.name === "crashed")?.flags;
        assert.deepEqual(flags, ["in-use", "auto"], "qemu-img sees the bitmap left in use");
        const r = (await suite.engine.refresh(s))!;
        assert.equal(r.outs.bitmapsHealthy, false);
        assert.deepEqual(r.outs.bitmapProblems, [
            "bitmap 'crashed' of disk vda is marked in-use (inconsistent: qemu did not close it cleanly)",
        ]);
        await virshOk(["checkpoint-delete", "--domain", dom.name, "--checkpointname", "crashed", "--metadata"]);
    });

    describe("a disk with enough data that the backup lasts seconds", () => {
        let dom: TestDomain;
        before(async function () {
            this.timeout(300_000);
            dom = await suite.newDomain({ writer: true, sizeMB: 1024 });
            const r = await hostRun("/usr/bin/qemu-io", ["-f", "qcow2", "-c", `write -P 0x5a ${MiB} ${600 * MiB}`, dom.disk], {
                timeoutMs: 240_000,
            });
            assert.equal(r.code, 0, r.stderr);
            await virshOk(["start", "--domain", dom.name]);
        });

        it("a job that outlives timeoutSeconds is aborted, its partial files removed and its checkpoint deleted", async () => {
            const targetDir = path.join(dom.dir, "slow");
            const file = path.join(targetDir, `${dom.name}.slow.vda.qcow2`);
            await uncache(dom.disk);
            // The job must outlive the deadline wherever it runs: with KVM on a fast disk it copied the 600 MiB in under a
            // second. So the provider's backup-begin is stopped the moment its virsh starts, before it reaches libvirt, until
            // the deadline has passed; the job starts only then, and the provider aborts it at its first look.
            const stopped = stopWhenStartedInWorker(`backup-begin --domain ${dom.uuid}`, 60_000);
            const slow = up("slow", { domain: dom.name, targetDir, checkpointName: "slow", timeoutSeconds: 1 });
            void slow.catch(() => undefined); // awaited below; an early failure must not go unhandled meanwhile
            const virsh = await stopped;
            assert.ok(virsh, "the provider's backup-begin never started");
            await sleep(1500);
            process.kill(virsh, "SIGCONT");
            await expectCallError(
                slow,
                new RegExp(
                    `the backup of domain '${dom.name}' outlived timeoutSeconds \\(1 s\\).*: it was aborted \\(virsh domjobabort\\), its partial files were removed \\(${re(file)}\\) and checkpoint 'slow' was deleted\\. Raise timeoutSeconds`,
                ),
            );
            assert.equal(exists(file), false);
            assert.deepEqual(await checkpointNames(dom.name), []);
            assert.equal(await jobType(dom), "None");
        });

        it("a provider killed mid-backup leaves libvirt's job running: the next up waits for it and takes its result (also once it has finished); another's job is named", async () => {
            const targetDir = path.join(dom.dir, "adopt");
            fs.mkdirSync(targetDir, { recursive: true });
            const file = path.join(targetDir, `${dom.name}.adopted.vda.qcow2`);
            const begin = async (target: string, checkpoint: string) => {
                const dir = fs.mkdtempSync(path.join(dom.dir, "xml-"));
                const cp = path.join(dir, "cp.xml");
                const bx = path.join(dir, "b.xml");
                fs.writeFileSync(
                    cp,
                    `<domaincheckpoint><name>${checkpoint}</name><disks><disk name='vda' checkpoint='bitmap'/></disks></domaincheckpoint>`,
                );
                fs.writeFileSync(
                    bx,
                    `<domainbackup mode='push'><disks><disk name='vda' backup='yes' type='file'><driver type='qcow2'/><target file='${target}'/></disk></disks></domainbackup>`,
                );
                await virshOk(["backup-begin", "--domain", dom.name, "--backupxml", bx, "--checkpointxml", cp]);
            };
            // A provider killed in the middle of the backup: its own server process, stopped while it waits for the job.
            const killed = await EngineHarness.start({ cwd: PACKAGE_ROOT, ...stackConfigFor(lab) });
            const urn = killed.urn(DYNAMIC_TYPE, "adopted");
            const inputs = { domain: dom.name, targetDir, checkpointName: "adopted" };
            const checked = await killed.check(urn, {}, await killed.programInputs(DomainBackupProvider, inputs));
            assert.deepEqual(checked.failures, []);
            await uncache(dom.disk);
            const cut = killed.create(urn, checked.inputs).then(
                () => "completed",
                (err: Error) => err.message,
            );
            for (const until = Date.now() + 60_000; (await jobType(dom)) !== "Unbounded" && Date.now() < until;) await sleep(100);
            assert.equal(await jobType(dom), "Unbounded", "the provider started the job");
            await killed.close();
            assert.notEqual(await cut, "completed", "the create was cut off");
            // libvirt's job goes on without its provider: still running, or completed (never aborted) by now.
            const after = await jobType(dom);
            console.log(`      (after the provider was killed, its job was ${after === "Unbounded" ? "still running" : "complete"})`);
            if (after !== "Unbounded") {
                const done = await virshOk(["domjobinfo", "--domain", dom.name, "--completed", "--keep-completed"]);
                assert.match(
                    done,
                    /Job type:\s+Completed[\s\S]*Operation:\s+Backup/,
                    `the job was neither running nor completed: ${after}\n${done}`,
                );
            }
            // The next pulumi up (another provider process) finds the job, waits for it and takes its result.
            const e = suite.engine;
            const created = await e.create(urn, checked.inputs);
            const s: ResourceState = { urn, id: created.id, inputs: checked.inputs, outs: created.outs };
            assert.equal(s.outs.adopted, true);
            assert.equal(s.outs.kind, "full");
            assert.equal(await jobType(dom), "None");
            const f = (s.outs.files as FileOut[])[0]!;
            assert.equal(f.file, file);
            assert.equal(fs.statSync(file).size, f.size);
            assert.ok(f.bytesCopied >= 600 * MiB, `copied ${f.bytesCopied}`);

            // The same, when the job finished before the next up: its checkpoint and every file are there, so it is taken as it is.
            const file2 = path.join(targetDir, `${dom.name}.finished.vda.qcow2`);
            await begin(file2, "finished");
            for (const until = Date.now() + 120_000; (await jobType(dom)) !== "None" && Date.now() < until;)
                await new Promise((r) => setTimeout(r, 300));
            const size2 = fs.statSync(file2).size;
            const s2 = await up("finished", { domain: dom.name, targetDir, checkpointName: "finished", deletion: "files" });
            assert.equal(s2.outs.adopted, true);
            assert.equal((s2.outs.files as FileOut[])[0]!.size, size2);
            assert.deepEqual(await checkpointNames(dom.name), ["adopted", "finished"]);
            await suite.engine.destroy(s2);
            assert.equal(exists(file2), false);

            // Someone else's job: the error names it and what to do.
            const foreign = path.join(targetDir, "foreign.qcow2");
            await uncache(dom.disk);
            await begin(foreign, "foreign");
            const msg = await failuresOf({ domain: dom.name, targetDir, checkpointName: "mine", incrementalFrom: "adopted" });
            await virshOk(["domjobabort", "--domain", dom.name]).catch(() => undefined);
            assert.match(
                msg,
                new RegExp(
                    `domain: domain '${dom.name}' is running a backup job that writes ${re(foreign)}, which is not this backup's\\. Wait for it to finish \\(virsh domjobinfo ${dom.name}\\), or abort it \\(virsh domjobabort ${dom.name}\\)`,
                ),
            );
            for (const until = Date.now() + 60_000; (await jobType(dom)) !== "None" && Date.now() < until;)
                await new Promise((r) => setTimeout(r, 300));
            await virshOk(["checkpoint-delete", "--domain", dom.name, "--checkpointname", "foreign"]).catch(() => undefined);
            await suite.engine.destroy({ ...s, outs: { ...s.outs, deletion: "files" } });
            assert.equal(exists(file), false);
        });
    });

    describe("quiesce on the real guest (qemu-guest-agent)", () => {
        let dom: TestDomain;
        const freezeStatus = async () =>
            (JSON.parse(await virshOk(["qemu-agent-command", dom.name, '{"execute":"guest-fsfreeze-status"}'])) as { return: string })
                .return;
        before(async function () {
            this.timeout(240_000);
            dom = await makeGuestDomain({ prefix: "labtmp-bkup-" });
        });
        after(async () => {
            await dom?.dispose().catch(() => undefined);
        });

        it("the thaw guard on the host thaws a guest nobody thaws, and a cancelled guard leaves it alone", async () => {
            // The provider's own module, through the same runner and connection a resource uses.
            const virsh = new Virsh(sameHostConnection(lab) as ConstructorParameters<typeof Virsh>[0]);
            assert.equal(await freezeStatus(), "thawed");
            await startThawGuard(virsh, dom.uuid, 3);
            await virshOk(["domfsfreeze", "--domain", dom.name]);
            assert.equal(await freezeStatus(), "frozen");
            // Nothing here thaws it: the guard does, on the host, after its deadline.
            let status = "frozen";
            for (const until = Date.now() + 30_000; status === "frozen" && Date.now() < until; await sleep(500))
                status = await freezeStatus();
            assert.equal(status, "thawed", "the guard thawed the guest");

            const cancelled = await startThawGuard(virsh, dom.uuid, 2);
            await cancelled.cancel();
            await virshOk(["domfsfreeze", "--domain", dom.name]);
            try {
                await sleep(5_000);
                assert.equal(await freezeStatus(), "frozen", "a cancelled guard does not thaw a later freeze");
            } finally {
                await virshOk(["domfsthaw", "--domain", dom.name]);
            }
            assert.equal(await freezeStatus(), "thawed");
        });

        it("quiesce: true freezes the ext4 for the start of the job: the backup's filesystem is clean, the guest thawed after", async () => {
            const targetDir = path.join(dom.dir, "backups");
            const s = await up("quiesced", { domain: dom.name, targetDir, checkpointName: "quiesced", quiesce: true, deletion: "files" });
            assert.equal(await freezeStatus(), "thawed");
            assert.equal(typeof s.outs.frozenMilliseconds, "number");
            assert.ok((s.outs.frozenMilliseconds as number) > 0);
            const file = (s.outs.files as FileOut[])[0]!.file;
            assert.equal(guestDisk(file).clean, true, "the backup's ext4 needs no journal replay: it was frozen when the job started");
            await suite.engine.destroy(s);
            assert.equal(exists(file), false);
            // The control: the same backup of the writing guest without quiesce catches its ext4 mid-journal.
            const plain = await up("plain", { domain: dom.name, targetDir, checkpointName: "plain", deletion: "files" });
            assert.equal(plain.outs.frozenMilliseconds, null);
            assert.equal(guestDisk((plain.outs.files as FileOut[])[0]!.file).clean, false);
            await suite.engine.destroy(plain);
            assert.deepEqual(await checkpointNames(dom.name), []);
        });
    });
});
