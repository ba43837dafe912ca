// Every example program runs in CI without the Pulumi CLI: its own code under
// setMocks, each dynamic resource forwarded (with the SDK-serialized provider)
// to the real dynamic-provider server and the real lab, then deleted in reverse
// order (test/support/run-example.ts). So the examples can't rot.
import * as assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { PACKAGE_ROOT } from "./harness/engine";
import { hostRun, virshOk } from "./support/lab";
import { extraTranscripts } from "./support/secrets-hook";

interface Result {
    project: string;
    created: Array<{ type: string; name: string; id: string; outs: Record<string, unknown>; ran: boolean }>;
}

function runExample(dir: string, args: string[] = []): Promise<Result> {
    const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "example-")), "result.json");
    return new Promise((resolve, reject) => {
        execFile(
            process.execPath,
            [path.join(PACKAGE_ROOT, ".build/test/support/run-example.js"), dir, out, ...args],
            { timeout: 240_000 },
            (err, _stdout, stderr) => {
                if (fs.existsSync(`${out}.transcript`))
                    extraTranscripts.push(...(JSON.parse(fs.readFileSync(`${out}.transcript`, "utf8")) as string[]));
                extraTranscripts.push(stderr);
                if (err) return reject(new Error(`${dir} failed: ${stderr || err.message}`));
                resolve(JSON.parse(fs.readFileSync(out, "utf8")) as Result);
            },
        );
    });
}

const snapshotsOf = async (d: string) => (await virshOk(["snapshot-list", "--domain", d, "--name"])).split("\n").filter(Boolean);
const checkpointsOf = async (d: string) => (await virshOk(["checkpoint-list", "--domain", d, "--name"])).split("\n").filter(Boolean);

describe("examples (run under mocks against the real provider and lab)", function () {
    this.timeout(300_000);
    const examples = fs
        .readdirSync(path.join(PACKAGE_ROOT, "examples"))
        .filter((d) => fs.existsSync(path.join(PACKAGE_ROOT, "examples", d, "Pulumi.yaml")));

    it("has the four documented examples, each with its own Pulumi.yaml, and the root Pulumi.yaml runs the quickstart", () => {
        for (const e of ["quickstart", "pre-upgrade", "checkpoint-and-backup", "backup-before-upgrade"])
            assert.ok(examples.includes(e), `examples/${e}`);
        const root = fs.readFileSync(path.join(PACKAGE_ROOT, "Pulumi.yaml"), "utf8");
        assert.match(root, /^main: examples\/quickstart\/index\.ts$/m);
    });

    it("quickstart: one DomainSnapshot on the lab, removed again", async () => {
        const r = await runExample("examples/quickstart");
        assert.equal(r.created.length, 1);
        const s = r.created[0]!;
        assert.equal(s.type, "pulumi-nodejs:dynamic/libvirt-snapshots:DomainSnapshot");
        assert.equal(s.outs.snapshotName, "before-upgrade");
        assert.equal(s.outs.domainName, "lab-idle");
        assert.equal(s.outs.memory, "internal");
        assert.match(String(s.outs.__provider), /require\("pulumi-libvirt-snapshots\/impl"\)/);
        assert.deepEqual(await snapshotsOf("lab-idle"), []);
    });

    /** `npm run quickstart` as a user runs it, with `env` over this process's; its exit code and what it printed. */
    function quickstart(env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
        return new Promise((resolve) => {
            execFile(
                "bash",
                [path.join(PACKAGE_ROOT, "scripts/quickstart.sh")],
                { cwd: PACKAGE_ROOT, timeout: 280_000, maxBuffer: 16 << 20, env: { ...process.env, ...env } },
                (err, out, errOut) => {
                    extraTranscripts.push(out, errOut);
                    resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout: out, stderr: errOut });
                },
            );
        });
    }

    it("npm run quickstart with the lab's CLI and no language host: says pulumi up of the directory is blocked, then runs the program through the real engine inline", async () => {
        const { code, stdout, stderr } = await quickstart({});
        assert.equal(code, 0, stderr);
        assert.match(
            stdout,
            /^BLOCKED: 'pulumi up' of the quickstart project \(examples\/quickstart, or the top-level Pulumi\.yaml\) needs$/m,
        );
        assert.match(stdout, /^as an INLINE Automation API program: /m);
        assert.match(stdout, /DomainSnapshot before-upgrade created/);
        assert.match(stdout, /DomainSnapshot before-upgrade deleted/);
        assert.match(stdout, /^That was an inline program through the real engine, not 'pulumi up' of the directory/m);
        assert.deepEqual(await snapshotsOf("lab-idle"), []);
    });

    it("npm run quickstart without the Pulumi CLI (none on PATH, no Go, nothing built): says how to install it, then runs the quickstart through the dynamic-provider server", async () => {
        // A machine without the CLI: no `pulumi` and no `go` on PATH, and an empty folder for the lab's builds.
        const bare = (process.env.PATH ?? "")
            .split(":")
            .filter((d) => d && !fs.existsSync(path.join(d, "pulumi")) && !fs.existsSync(path.join(d, "go")))
            .join(":");
        const builds = fs.mkdtempSync(path.join(os.tmpdir(), "no-pulumi-"));
        try {
            const { code, stdout, stderr } = await quickstart({ PATH: bare, PULUMI_LAB_DIR: builds });
            assert.equal(code, 0, stderr);
            assert.match(stdout, /^No Pulumi CLI: .+$/m);
            assert.match(stdout, /^Install it with: curl -fsSL https:\/\/get\.pulumi\.com \| sh /m);
            assert.match(stdout, /^server \(what 'pulumi up' runs for each of our resources\), created and deleted again:$/m);
            const line = /^ {2}DomainSnapshot before-upgrade: (\{.*\})$/m.exec(stdout);
            assert.ok(line, stdout);
            const shown = JSON.parse(line[1]!) as Record<string, unknown>;
            assert.deepEqual(
                { ...shown, creationTime: undefined },
                { snapshotName: "before-upgrade", domain: "lab-idle", state: "running", memory: "internal", creationTime: undefined },
            );
            assert.ok(Date.parse(String(shown.creationTime)) > 0);
            assert.deepEqual(await snapshotsOf("lab-idle"), []);
        } finally {
            // The lab as the other suites expect it: with its CLI again.
            await new Promise<void>((resolve, reject) =>
                execFile("bash", [path.join(PACKAGE_ROOT, "scripts/lab.sh"), "up"], { cwd: PACKAGE_ROOT, timeout: 280_000 }, (err) =>
                    err ? reject(err) : resolve(),
                ),
            );
            fs.rmSync(builds, { recursive: true, force: true });
        }
        const lab = JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, ".lab/lab.json"), "utf8")) as { pulumi?: { bin?: string } };
        assert.ok(lab.pulumi?.bin, "lab.json names the CLI again");
    });

    it("pre-upgrade with rollback: a RestorePoint, the upgrade step after it, then a SnapshotRevert", async () => {
        const r = await runExample("examples/pre-upgrade", ["--config", "rollback=true"]);
        assert.deepEqual(
            r.created.map((c) => c.type),
            [
                "pulumi-nodejs:dynamic/libvirt-snapshots:RestorePoint",
                "command:remote:Command",
                "pulumi-nodejs:dynamic/libvirt-snapshots:SnapshotRevert",
            ],
        );
        const [rp, cmd, revert] = r.created;
        assert.deepEqual(
            (rp!.outs.snapshots as Array<Record<string, unknown>>).map((s) => s.domainName),
            ["lab-idle"],
        );
        assert.equal(cmd!.ran, false, "the remote command is @pulumi/command's, echoed by the mock");
        assert.equal(revert!.outs.domainState, "running");
        assert.ok(Date.parse(String(revert!.outs.revertedAt)) > 0);
        assert.deepEqual(await snapshotsOf("lab-idle"), []);
        assert.equal((await virshOk(["domstate", "--domain", "lab-idle"])).trim(), "running");
    });

    it("backup-before-upgrade: a checkpoint, a full backup, the upgrade, an incremental backup based on the full one; all removed again", async () => {
        const r = await runExample("examples/backup-before-upgrade", ["--config", "deletion=files"]);
        assert.deepEqual(
            r.created.map((c) => c.type),
            [
                "pulumi-nodejs:dynamic/libvirt-snapshots:DomainCheckpoint",
                "pulumi-nodejs:dynamic/libvirt-snapshots:DomainBackup",
                "command:remote:Command",
                "pulumi-nodejs:dynamic/libvirt-snapshots:DomainBackup",
            ],
        );
        const [cp, full, cmd, inc] = r.created;
        assert.equal(typeof cp!.outs.changedBytes, "number");
        assert.equal(full!.outs.kind, "full");
        assert.equal(cmd!.ran, false, "the remote command is @pulumi/command's, echoed by the mock");
        assert.equal(inc!.outs.kind, "incremental");
        assert.equal(inc!.outs.incrementalFrom, "full-before-upgrade");
        const fullFile = (full!.outs.files as Array<{ file: string }>)[0]!.file;
        assert.deepEqual(inc!.outs.basedOn, { vda: fullFile });
        assert.deepEqual(await checkpointsOf(String(cp!.outs.domainName)), []);
        const files = [fullFile, (inc!.outs.files as Array<{ file: string }>)[0]!.file];
        const left = await hostRun("/usr/bin/stat", ["-c", "%n", ...files]);
        assert.equal(left.stdout, "", "deletion: files removed both backups");
    });

    it("checkpoint-and-backup: a checkpoint whose changedBytes is reported, removed again", async () => {
        const r = await runExample("examples/checkpoint-and-backup");
        const cp = r.created.find((c) => c.type === "pulumi-nodejs:dynamic/libvirt-snapshots:DomainCheckpoint");
        assert.ok(cp, JSON.stringify(r.created.map((c) => c.type)));
        assert.equal(typeof cp.outs.changedBytes, "number");
        assert.deepEqual(await checkpointsOf(String(cp.outs.domainName)), []);
    });
});
