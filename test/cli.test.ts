// The real Pulumi engine (issue #22, item 3): the Pulumi CLI the lab found or built runs our resources.
// Each operation is an inline Automation API program in a child process (test/support/cli-program.ts):
// the CLI's engine plans, diffs, starts the dynamic-provider plugin, encrypts secrets and writes the
// state file; nothing of test/harness/engine.ts is involved. Every step is checked on the host with
// virsh and qemu-img.
//
// Not here, because the Go module proxy refuses the Node.js language host (scripts/lab/pulumi-cli/
// MEASURED.md, .lab/lab.json's pulumi.languageHostReason): `pulumi up` of a project directory (the
// examples, the quickstart, the top-level Pulumi.yaml).
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import * as ts from "typescript";
import { checkpointNames, hostXmlFiles, qcow2Snapshots, snapshotNames } from "./support/helpers";
import { loadLab, makeDomain, repoRoot, virshLocal, virshOk, type TestDomain } from "./support/lab";
import { CliStack, pulumiCli, urnOf, type OpResult, type ProgramSpec, type ResourceSpec } from "./support/pulumiCli";

const lab = loadLab();
const PREFIX = "labcli-";
const KINDS = ["DomainSnapshot", "DomainCheckpoint", "DomainBackup", "RestorePoint", "SnapshotRevert"] as const;

/**
 * Every output each class declares (`readonly X: pulumi.Output<T>` in dist/index.d.ts), and whether T admits
 * undefined, as TypeScript's checker resolves it (`RestorePointOutputs["targets"]` is optional there).
 */
function declaredOutputs(): Record<ResourceSpec["kind"], Array<{ name: string; optional: boolean }>> {
    const file = path.join(repoRoot(), "dist", "index.d.ts");
    const program = ts.createProgram([file], { strict: true, noEmit: true, skipLibCheck: true, module: ts.ModuleKind.CommonJS });
    const checker = program.getTypeChecker();
    const out = {} as Record<ResourceSpec["kind"], Array<{ name: string; optional: boolean }>>;
    const hasUndefined = (t: ts.Type): boolean =>
        t.isUnion() ? t.types.some(hasUndefined) : (t.flags & (ts.TypeFlags.Undefined | ts.TypeFlags.Any | ts.TypeFlags.Unknown)) !== 0;
    for (const st of program.getSourceFile(file)!.statements) {
        if (!ts.isClassDeclaration(st) || !st.name || !KINDS.includes(st.name.text as ResourceSpec["kind"])) continue;
        const list: Array<{ name: string; optional: boolean }> = [];
        for (const m of st.members) {
            if (!ts.isPropertyDeclaration(m) || !m.type || !ts.isTypeReferenceNode(m.type)) continue;
            if (m.type.typeName.getText() !== "pulumi.Output" || !m.type.typeArguments?.[0]) continue;
            list.push({ name: m.name.getText(), optional: hasUndefined(checker.getTypeFromTypeNode(m.type.typeArguments[0])) });
        }
        out[st.name.text as ResourceSpec["kind"]] = list;
    }
    for (const k of KINDS) assert.ok((out[k]?.length ?? 0) > 3, `found only ${out[k]?.length ?? 0} outputs of ${k} in ${file}`);
    return out;
}

/** Everything preview must leave as it was: libvirt's lists, metadata and domain XML, and the files beside the disks. */
async function fingerprint(doms: TestDomain[], opts: { writers?: TestDomain[] } = {}): Promise<Record<string, unknown>> {
    const fp: Record<string, unknown> = {};
    for (const d of doms) {
        const snaps = await snapshotNames(d.name);
        const ckpts = await checkpointNames(d.name);
        fp[`${d.name} snapshots`] = snaps;
        fp[`${d.name} checkpoints`] = ckpts;
        for (const s of snaps) fp[`${d.name} snapshot ${s}`] = await virshOk(["snapshot-dumpxml", "--domain", d.name, "--snapshotname", s]);
        for (const c of ckpts)
            fp[`${d.name} checkpoint ${c}`] = await virshOk(["checkpoint-dumpxml", "--domain", d.name, "--checkpointname", c]);
        fp[`${d.name} current`] = (await virshLocal(["snapshot-current", "--name", d.name])).stdout;
        fp[`${d.name} dumpxml`] = await virshOk(["dumpxml", d.name]);
        fp[`${d.name} dumpxml --inactive`] = await virshOk(["dumpxml", "--inactive", d.name]);
        fp[`${d.name} domstate`] = (await virshOk(["domstate", d.name])).trim();
        fp[`${d.name} image snapshots`] = await qcow2Snapshots(d.disk);
        // The files beside the disk (overlays, memory files, backups): names, sizes, modes and times; a writing
        // guest's own disk changes by itself, so only its name counts.
        const files: string[] = [];
        const walk = (dir: string) => {
            for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
                const p = path.join(dir, e.name);
                if (e.isDirectory()) {
                    files.push(`${p}/`);
                    walk(p);
                } else if (opts.writers?.some((w) => w.disk === p)) files.push(p);
                else {
                    const st = fs.statSync(p);
                    files.push(`${p} ${st.size} ${(st.mode & 0o7777).toString(8)} ${st.mtimeMs}`);
                }
            }
        };
        walk(d.dir);
        fp[`${d.name} files`] = files;
    }
    return fp;
}

const opsOf = (r: OpResult) => Object.fromEntries(r.steps.map((s) => [s.name, s.op]));
const stepsOf = (r: OpResult, name: string) => r.steps.filter((s) => s.name === name).map((s) => s.op);

/** The stack output NAME.OUT as the program exported it: { value } or { undefined: true }. */
function output(r: OpResult, key: string): { value?: unknown; undefined?: true } {
    const o = r.outputs?.[key];
    assert.ok(o, `the stack outputs have no ${key} (they have: ${Object.keys(r.outputs ?? {}).join(", ")})`);
    return o.value as { value?: unknown; undefined?: true };
}

async function descriptionOf(domain: string, snapshot: string): Promise<string | undefined> {
    const xml = await virshOk(["snapshot-dumpxml", "--domain", domain, "--snapshotname", snapshot]);
    return /<description>([^<]*)<\/description>/.exec(xml)?.[1];
}

describe(`the real Pulumi engine: inline Automation API programs run by the Pulumi CLI (${lab.name})`, function () {
    this.timeout(300_000);
    this.slow(60_000);
    const stacks: CliStack[] = [];
    const doms: TestDomain[] = [];
    const t0 = Date.now();
    const newDomain = async (o: Parameters<typeof makeDomain>[0] = {}) => {
        const d = await makeDomain({ prefix: PREFIX, ...o });
        doms.push(d);
        return d;
    };
    const newStack = (project: string) => {
        const s = new CliStack(project, lab.name);
        stacks.push(s);
        return s;
    };

    before(function () {
        // No CLI is a failure with the lab's reason, never a skip.
        const cli = pulumiCli(lab);
        console.log(`      the CLI: ${cli.bin} ${cli.version} (${cli.source}); the Node.js language host: ${cli.languageHost ?? "none"}`);
    });

    after(async function () {
        for (const s of stacks) {
            console.log(`      ${s.project}: ${s.timings.map((t) => `${t.op} ${(t.ms / 1000).toFixed(1)} s`).join(", ")}`);
        }
        console.log(`      the CLI suite on ${lab.name}: ${((Date.now() - t0) / 1000).toFixed(0)} s`);
        for (const d of doms) await d.dispose().catch(() => undefined);
        // A stack whose test failed part-way keeps its state dir for a look; a passing run leaves nothing.
        for (const s of stacks) if (!fs.existsSync(s.stateFile) || !/"urn"/.test(fs.readFileSync(s.stateFile, "utf8"))) s.dispose();
    });

    describe("every resource kind in one stack: preview, up, up --expect-no-changes, refresh, destroy", function () {
        let s: CliStack;
        let writer: TestDomain, snapDom: TestDomain, rp1: TestDomain, rp2: TestDomain;
        let program: ProgramSpec;
        let backupDir: string;
        let up: OpResult;
        const declared = declaredOutputs();

        before(async function () {
            s = newStack("cli-kinds");
            [writer, snapDom, rp1, rp2] = await Promise.all([
                newDomain({ running: true, writer: true }),
                newDomain({ running: true }),
                newDomain({ running: true }),
                newDomain({ running: false }),
            ]);
            backupDir = path.join(writer.dir, "backups");
            const all = (kind: ResourceSpec["kind"]) => declared[kind].map((o) => o.name);
            program = {
                resources: [
                    {
                        kind: "DomainCheckpoint",
                        name: "cli-ckpt",
                        args: { domain: writer.name, description: "the CLI suite's checkpoint" },
                        exports: all("DomainCheckpoint"),
                    },
                    {
                        kind: "DomainBackup",
                        name: "cli-backup",
                        args: { domain: writer.name, targetDir: backupDir, deletion: "files" },
                        opts: { dependsOn: ["cli-ckpt"] },
                        exports: all("DomainBackup"),
                    },
                    {
                        kind: "DomainBackup",
                        name: "cli-backup-inc",
                        args: {
                            domain: writer.name,
                            targetDir: backupDir,
                            deletion: "files",
                            incrementalFrom: "$ref:cli-backup.checkpointName",
                        },
                        exports: all("DomainBackup"),
                    },
                    {
                        kind: "DomainSnapshot",
                        name: "cli-snap",
                        // An explicit connection (the key a secret), so `connection` is in the state.
                        args: { domain: snapDom.name, description: "the CLI suite's snapshot", connection: "$connection" },
                        exports: all("DomainSnapshot"),
                    },
                    {
                        kind: "SnapshotRevert",
                        name: "cli-revert",
                        args: { domain: snapDom.name, snapshot: "$ref:cli-snap.snapshotName", afterRevert: "running", triggers: ["1"] },
                        exports: all("SnapshotRevert"),
                    },
                    {
                        kind: "RestorePoint",
                        name: "cli-rp",
                        args: { domains: [rp1.name, rp2.name], description: "the CLI suite's restore point" },
                        exports: all("RestorePoint"),
                    },
                ],
            };
        });

        // The resources that take another's output (the revert, the incremental backup) are in the next test.
        const CHAINED = ["cli-revert", "cli-backup-inc"];

        it("preview plans a create of each and changes nothing on the host", async function () {
            const before = await fingerprint([writer, snapDom, rp1, rp2], { writers: [writer] });
            const r = await s.ok("preview", { resources: program.resources.filter((x) => !CHAINED.includes(x.name)) });
            assert.deepEqual(opsOf(r), { "cli-ckpt": "create", "cli-backup": "create", "cli-snap": "create", "cli-rp": "create" });
            assert.deepEqual(await fingerprint([writer, snapDom, rp1, rp2], { writers: [writer] }), before);
            assert.equal(fs.existsSync(backupDir), false, "preview made the backup folder");
        });

        // As the README and the examples write them: a SnapshotRevert's `snapshot` is the DomainSnapshot's snapshotName
        // output, an incremental DomainBackup's `incrementalFrom` the full one's checkpointName output. At preview the
        // engine gives a resource it is about to create its inputs as outputs, so both names are already KNOWN, and the
        // second resource's check looks for a snapshot or checkpoint that doesn't exist yet: it failed, and `pulumi up`,
        // which previews first, with it. The constructors now record such inputs (__fromResources) and check lets their
        // absence be. (test/harness/engine.ts never previews a program: it hid this.)
        it("preview of resources that take another's output (a revert of the snapshot, an incremental of the full backup) plans a create of each", async function () {
            const before = await fingerprint([writer, snapDom], { writers: [writer] });
            const r = await s.run("preview", program);
            const errors = [...(r.stdout + r.stderr).matchAll(/^\s+error: (.*)$/gm)].map((m) => m[1]);
            assert.deepEqual([...new Set(errors)], [], "preview failed");
            assert.equal(r.ok, true, r.error);
            assert.deepEqual(new Set(Object.values(opsOf(r))), new Set(["create"]));
            assert.deepEqual(await fingerprint([writer, snapDom], { writers: [writer] }), before);
        });

        it("up creates each, as virsh and qemu-img show", async function () {
            up = await s.ok("up", program);
            assert.deepEqual(Object.values(opsOf(up)), ["create", "create", "create", "create", "create", "create"]);
            assert.deepEqual(await checkpointNames(writer.name), ["cli-backup", "cli-backup-inc", "cli-ckpt"].sort());
            assert.deepEqual(await snapshotNames(snapDom.name), ["cli-snap"]);
            assert.deepEqual(await qcow2Snapshots(snapDom.disk), ["cli-snap"]);
            assert.equal((await virshOk(["domstate", snapDom.name])).trim(), "running");
            for (const d of [rp1, rp2]) {
                assert.deepEqual(await snapshotNames(d.name), ["cli-rp"]);
                assert.deepEqual(await qcow2Snapshots(d.disk), ["cli-rp"]);
            }
            const files = fs.readdirSync(backupDir).sort();
            assert.deepEqual(files, [`${writer.name}.cli-backup-inc.vda.qcow2`, `${writer.name}.cli-backup.vda.qcow2`].sort());
            // The revert happened: its time is after the snapshot's.
            const revertedAt = output(up, "cli-revert.revertedAt").value as string;
            const taken = output(up, "cli-snap.creationTime").value as string;
            assert.ok(Date.parse(revertedAt) >= Date.parse(taken), `revertedAt ${revertedAt}, snapshot taken ${taken}`);
        });

        it("every output each class declares resolves in the stack outputs", async function () {
            const problems: string[] = [];
            for (const res of program.resources) {
                for (const o of declared[res.kind]) {
                    const got = up.outputs?.[`${res.name}.${o.name}`];
                    if (!got) problems.push(`${res.name}.${o.name}: not in the stack outputs`);
                    else if ((got.value as { undefined?: true }).undefined && !o.optional)
                        problems.push(`${res.name}.${o.name}: undefined, though ${res.kind} declares it always set`);
                }
            }
            // Given inputs come back as outputs.
            for (const key of [
                "cli-snap.description",
                "cli-snap.connection",
                "cli-ckpt.description",
                "cli-backup-inc.incrementalFrom",
                "cli-rp.domains",
            ]) {
                if (output(up, key).undefined) problems.push(`${key}: undefined, though the program gave it`);
            }
            assert.deepEqual(problems, []);
            // The connection holds the private key: a secret output. The others are not.
            assert.equal(up.outputs!["cli-snap.connection"]!.secret, true);
            assert.equal(up.outputs!["cli-snap.snapshotName"]!.secret, false);
            assert.equal(output(up, "cli-backup-inc.kind").value, "incremental");
            assert.equal(output(up, "cli-backup.kind").value, "full");
            assert.equal(output(up, "cli-snap.deletion").value, "delete");
            assert.equal(output(up, "cli-ckpt.deletion").value, "delete");
        });

        it("up --expect-no-changes finds nothing to do", async function () {
            const r = await s.ok("upExpectNoChanges", program);
            assert.deepEqual(new Set(Object.values(opsOf(r))), new Set(["same"]));
        });

        it("refresh changes only what is measured again by design", async function () {
            const r = await s.ok("refresh", program);
            const changed = Object.fromEntries(r.steps.filter((x) => x.op === "refresh").map((x) => [x.name, x.changedOutputs ?? []]));
            console.log(`      refresh changed: ${JSON.stringify(changed)}`);
            // By design: a checkpoint's changedBytes (per disk too) and when it was measured; a backup's check time.
            const allowed: Record<string, string[]> = {
                "cli-ckpt": ["changedBytes", "changedBytesAt", "disks"],
                "cli-backup": ["checkedAt"],
                "cli-backup-inc": ["checkedAt"],
                "cli-snap": [],
                "cli-revert": [],
                "cli-rp": [],
            };
            for (const [name, keys] of Object.entries(changed)) {
                const extra = keys.filter((k) => !allowed[name]!.includes(k));
                assert.deepEqual(extra, [], `refresh changed ${name}'s ${extra.join(", ")}`);
            }
            assert.deepEqual(Object.keys(changed).sort(), Object.keys(allowed).sort());
            assert.ok(changed["cli-ckpt"]!.includes("changedBytesAt"), "the checkpoint was not measured again");
            assert.ok(changed["cli-backup"]!.includes("checkedAt"), "the backup was not checked again");
            assert.deepEqual(await checkpointNames(writer.name), ["cli-backup", "cli-backup-inc", "cli-ckpt"].sort());
        });

        it("preview and preview --refresh change nothing on the host", async function () {
            const doms4 = [writer, snapDom, rp1, rp2];
            const before = await fingerprint(doms4, { writers: [writer] });
            const p = await s.ok("preview", program);
            assert.deepEqual(new Set(Object.values(opsOf(p))), new Set(["same"]));
            assert.deepEqual(await fingerprint(doms4, { writers: [writer] }), before, "preview changed the host");
            await s.ok("previewRefresh", program);
            assert.deepEqual(await fingerprint(doms4, { writers: [writer] }), before, "preview --refresh changed the host");
        });

        it("libvirt lost a snapshot's and a checkpoint's record: preview and preview --refresh change nothing, up gives them back", async function () {
            await virshOk(["snapshot-delete", "--domain", snapDom.name, "--snapshotname", "cli-snap", "--metadata"]);
            await virshOk(["checkpoint-delete", "--domain", writer.name, "--checkpointname", "cli-ckpt", "--metadata"]);
            const doms4 = [writer, snapDom, rp1, rp2];
            const lost = await fingerprint(doms4, { writers: [writer] });
            assert.deepEqual(lost[`${snapDom.name} snapshots`], []);
            assert.deepEqual(lost[`${snapDom.name} image snapshots`], ["cli-snap"], "the data is still in the image");
            const p = await s.ok("preview", program);
            assert.deepEqual(await fingerprint(doms4, { writers: [writer] }), lost, "preview changed the host");
            assert.equal(opsOf(p)["cli-snap"], "update", "preview plans the update that gives the snapshot's record back");
            assert.equal(opsOf(p)["cli-ckpt"], "update", "preview plans the update that gives the checkpoint's record back");
            await s.ok("previewRefresh", program);
            const after = await fingerprint(doms4, { writers: [writer] });
            const differs = [...new Set([...Object.keys(lost), ...Object.keys(after)])].filter(
                (k) => JSON.stringify(lost[k]) !== JSON.stringify(after[k]),
            );
            assert.deepEqual(
                differs,
                [],
                `preview --refresh changed the host: ${differs.map((k) => `${k}: ${JSON.stringify(after[k])}`).join("; ")}`,
            );
        });

        it("up gives the lost records back", async function () {
            const r = await s.ok("up", program);
            assert.equal(opsOf(r)["cli-snap"], "update");
            assert.deepEqual(await snapshotNames(snapDom.name), ["cli-snap"]);
            assert.ok((await checkpointNames(writer.name)).includes("cli-ckpt"), "the checkpoint's record is not back");
            assert.deepEqual(await qcow2Snapshots(snapDom.disk), ["cli-snap"], "one snapshot in the image, no duplicate");
        });

        it("the state (pulumi stack export, the file on disk, the stack config) holds no secret in plain text", async function () {
            const exported = await s.cli(["stack", "export", "--stack", s.stack]);
            assert.equal(exported.code, 0, exported.stderr);
            const stateFile = fs.readFileSync(s.stateFile, "utf8");
            const stackConfig = fs.readFileSync(path.join(s.workDir, `Pulumi.${s.stack}.yaml`), "utf8");
            const key = fs.readFileSync(lab.privateKeyPath, "utf8");
            // Every line of the key's body (the base64), the passphrase, and the lab's other secrets.
            const secrets = [
                ...key
                    .split("\n")
                    .filter((l) => l.length > 20 && !l.startsWith("-----"))
                    .map((l) => ({ what: "a line of the private key", text: l })),
                { what: "the stack's passphrase", text: s.passphrase },
                { what: "the encrypted key's passphrase", text: lab.keyPassphrase },
                { what: "labuser's password", text: lab.sudoUser.password },
            ];
            for (const [where, text] of [
                ["pulumi stack export", exported.stdout],
                ["the state file", stateFile],
                ["Pulumi.<stack>.yaml", stackConfig],
            ] as const) {
                for (const x of secrets) assert.ok(!text.includes(x.text), `${where} holds ${x.what} in plain text`);
                assert.ok(!/PRIVATE KEY/.test(text), `${where} holds a PEM header`);
            }
            assert.match(stackConfig, /libvirt-snapshots:privateKey:\s*\n\s*secure: /);
            const deployment = JSON.parse(exported.stdout) as {
                deployment: { resources: Array<{ urn: string; inputs?: Record<string, unknown>; outputs?: Record<string, unknown> }> };
            };
            const snap = deployment.deployment.resources.find((r) => r.urn === urnOf(s, { kind: "DomainSnapshot", name: "cli-snap" }));
            assert.ok(snap, "cli-snap is not in the exported state");
            const SECRET_SIG = "4dabf18193072939515e22adb298388d";
            for (const side of ["inputs", "outputs"] as const) {
                const c = snap[side]?.connection as Record<string, unknown> | undefined;
                assert.ok(
                    c && c[SECRET_SIG] === "1b47061264138c4ac30d75fd1eb44270" && typeof c.ciphertext === "string",
                    `cli-snap's ${side}.connection is not ciphertext: ${JSON.stringify(c)?.slice(0, 200)}`,
                );
            }
        });

        it("destroy removes each, as virsh and qemu-img show, and the backup files", async function () {
            const r = await s.ok("destroy", program);
            assert.deepEqual(new Set(Object.values(opsOf(r))), new Set(["delete"]));
            assert.deepEqual(await checkpointNames(writer.name), []);
            for (const d of [snapDom, rp1, rp2]) {
                assert.deepEqual(await snapshotNames(d.name), [], d.name);
                assert.deepEqual(await qcow2Snapshots(d.disk), [], d.name);
            }
            assert.deepEqual(fs.existsSync(backupDir) ? fs.readdirSync(backupDir) : [], [], "deletion: files left backup files");
            assert.equal((await virshOk(["domstate", writer.name])).trim(), "running");
        });
    });

    describe("what the engine decides", function () {
        let s: CliStack;
        let dom: TestDomain;
        const snap = (name: string, args: Record<string, unknown> = {}, opts: ResourceSpec["opts"] = {}): ResourceSpec => ({
            kind: "DomainSnapshot",
            name,
            args: { domain: dom.name, ...args },
            opts,
        });

        const chain = () => [
            snap("chain-a", { description: "a, updated" }),
            snap("chain-b", {}, { dependsOn: ["chain-a"] }),
            snap("chain-c", {}, { dependsOn: ["chain-b"] }),
        ];

        before(async function () {
            s = newStack("cli-decisions");
            dom = await newDomain({ running: false });
        });

        it("a dependsOn chain is created in order: each snapshot's parent is the one before", async function () {
            const r = await s.ok("up", {
                resources: [
                    snap("chain-a", { description: "a" }),
                    snap("chain-b", {}, { dependsOn: ["chain-a"] }),
                    snap("chain-c", {}, { dependsOn: ["chain-b"] }),
                ],
            });
            assert.deepEqual(stepsOf(r, "chain-a").concat(stepsOf(r, "chain-b"), stepsOf(r, "chain-c")), ["create", "create", "create"]);
            const parent = async (x: string) =>
                (await virshLocal(["snapshot-parent", "--domain", dom.name, "--snapshotname", x])).stdout.trim();
            assert.equal(await parent("chain-b"), "chain-a");
            assert.equal(await parent("chain-c"), "chain-b");
        });

        it("--target updates only the target; the description is updated in place (the same snapshot)", async function () {
            const created = await virshOk(["snapshot-info", "--domain", dom.name, "--snapshotname", "chain-a"]);
            const r = await s.ok(
                "up",
                {
                    resources: [
                        snap("chain-a", { description: "a, updated" }),
                        snap("chain-b", { description: "b, not targeted" }, { dependsOn: ["chain-a"] }),
                        snap("chain-c", {}, { dependsOn: ["chain-b"] }),
                    ],
                },
                { target: [urnOf(s, { kind: "DomainSnapshot", name: "chain-a" })] },
            );
            assert.deepEqual(stepsOf(r, "chain-a"), ["update"]);
            assert.deepEqual(stepsOf(r, "chain-b"), ["same"], "an untargeted resource was changed");
            assert.equal(await descriptionOf(dom.name, "chain-a"), "a, updated");
            assert.equal(await descriptionOf(dom.name, "chain-b"), undefined);
            assert.equal(
                (await virshOk(["snapshot-info", "--domain", dom.name, "--snapshotname", "chain-a"])).match(/Creation Time:.*/)?.[0],
                created.match(/Creation Time:.*/)?.[0],
                "an update in place made a new snapshot",
            );
            assert.deepEqual((await snapshotNames(dom.name)).sort(), ["chain-a", "chain-b", "chain-c"]);
        });

        it("ignoreChanges keeps a changed description from being applied", async function () {
            const r = await s.ok("up", {
                resources: [
                    snap("chain-a", { description: "a, updated" }),
                    snap("chain-b", { description: "b, ignored" }, { dependsOn: ["chain-a"], ignoreChanges: ["description"] }),
                    snap("chain-c", {}, { dependsOn: ["chain-b"] }),
                ],
            });
            assert.deepEqual(new Set(Object.values(opsOf(r))), new Set(["same"]));
            assert.equal(await descriptionOf(dom.name, "chain-b"), undefined);
        });

        it("a replacement of the same name deletes first (deleteBeforeReplace), leaving one snapshot of that name", async function () {
            const base = [
                snap("chain-a", { description: "a, updated" }),
                snap("chain-b", {}, { dependsOn: ["chain-a"] }),
                snap("chain-c", {}, { dependsOn: ["chain-b"] }),
            ];
            await s.ok("up", { resources: [...base, snap("rep", { description: "one" })] });
            const before = await virshOk(["snapshot-dumpxml", "--domain", dom.name, "--snapshotname", "rep"]);
            await new Promise((r) => setTimeout(r, 1100)); // creation times have a resolution of a second
            const r = await s.ok("up", { resources: [...base, snap("rep", { description: "one", atomic: false })] });
            assert.deepEqual(stepsOf(r, "rep"), ["delete-replaced", "replace", "create-replacement"], JSON.stringify(r.steps));
            const after = await virshOk(["snapshot-dumpxml", "--domain", dom.name, "--snapshotname", "rep"]);
            const time = (x: string) => /<creationTime>(\d+)<\/creationTime>/.exec(x)?.[1];
            assert.notEqual(time(after), time(before), "the snapshot was not taken again");
            assert.deepEqual(
                (await qcow2Snapshots(dom.disk)).filter((n) => n === "rep"),
                ["rep"],
                "a duplicate in the image",
            );
        });

        it("drift: a snapshot deleted out of band is dropped by refresh and taken again by up", async function () {
            const program = {
                resources: [
                    snap("chain-a", { description: "a, updated" }),
                    snap("chain-b", {}, { dependsOn: ["chain-a"] }),
                    snap("chain-c", {}, { dependsOn: ["chain-b"] }),
                    snap("rep", { description: "one", atomic: false }),
                ],
            };
            await virshOk(["snapshot-delete", "--domain", dom.name, "--snapshotname", "rep"]);
            const r = await s.ok("refresh", program);
            assert.deepEqual(stepsOf(r, "rep"), ["refresh"]);
            const exported = await s.ok("export", program);
            const urns = (exported.deployment as { deployment: { resources: Array<{ urn: string }> } }).deployment.resources.map(
                (x) => x.urn,
            );
            assert.ok(!urns.includes(urnOf(s, { kind: "DomainSnapshot", name: "rep" })), "refresh kept the snapshot deleted out of band");
            const u = await s.ok("up", program);
            assert.deepEqual(stepsOf(u, "rep"), ["create"]);
            assert.ok((await snapshotNames(dom.name)).includes("rep"));
        });

        it("protect: removing a protected snapshot from the program fails and leaves it; retainOnDelete: removing it keeps the snapshot", async function () {
            const base = [
                snap("chain-a", { description: "a, updated" }),
                snap("chain-b", {}, { dependsOn: ["chain-a"] }),
                snap("chain-c", {}, { dependsOn: ["chain-b"] }),
            ];
            await s.ok("up", { resources: [...base, snap("kept", {}, { protect: true })] });
            const gone = await s.run("up", { resources: base });
            assert.equal(gone.ok, false, "up deleted a protected resource");
            assert.match(gone.stdout + gone.stderr + gone.error, /protect/i);
            assert.ok((await snapshotNames(dom.name)).includes("kept"));
            await s.ok("up", { resources: [...base, snap("kept", {}, { retainOnDelete: true })] });
            const r = await s.ok("up", { resources: base });
            assert.ok(["delete", "discard"].includes(stepsOf(r, "kept")[0] ?? ""), JSON.stringify(r.steps));
            assert.ok((await snapshotNames(dom.name)).includes("kept"), "retainOnDelete: the snapshot was deleted");
            await virshOk(["snapshot-delete", "--domain", dom.name, "--snapshotname", "kept"]);
        });

        it("aliases: a snapshot renamed in the program with an alias of its old name stays the same resource", async function () {
            await s.ok("up", { resources: [...chain(), snap("old-name", { snapshotName: "aliased" })] });
            const before = await virshOk(["snapshot-dumpxml", "--domain", dom.name, "--snapshotname", "aliased"]);
            const r = await s.ok("up", {
                resources: [...chain(), snap("new-name", { snapshotName: "aliased" }, { aliases: ["old-name"] })],
            });
            assert.deepEqual(stepsOf(r, "new-name"), ["same"], JSON.stringify(r.steps));
            assert.deepEqual(stepsOf(r, "old-name"), []);
            assert.equal(await virshOk(["snapshot-dumpxml", "--domain", dom.name, "--snapshotname", "aliased"]), before);
            await s.ok("up", { resources: chain() });
            assert.ok(!(await snapshotNames(dom.name)).includes("aliased"));
        });

        // The dynamic-provider server returns no per-property diff (only changes, replaces, deleteBeforeReplace), so the
        // engine can't see that `description` changed: it updates in place (README, Limits). If a later SDK honours
        // replaceOnChanges, this fails, and the README's Limits must change with it.
        it("replaceOnChanges is ignored for a dynamic resource: a description change is still an update in place; up --replace replaces", async function () {
            const roc = (description: string) =>
                snap("roc", { description }, { replaceOnChanges: ["description"], deleteBeforeReplace: true });
            await s.ok("up", { resources: [...chain(), roc("one")] });
            const before = await virshOk(["snapshot-dumpxml", "--domain", dom.name, "--snapshotname", "roc"]);
            await new Promise((r) => setTimeout(r, 1100));
            const r = await s.ok("up", { resources: [...chain(), roc("two")] });
            const after = await virshOk(["snapshot-dumpxml", "--domain", dom.name, "--snapshotname", "roc"]);
            const time = (x: string) => /<creationTime>(\d+)<\/creationTime>/.exec(x)?.[1];
            assert.deepEqual(stepsOf(r, "roc"), ["update"]);
            assert.equal(time(after), time(before), "the snapshot was taken again");
            assert.equal(await descriptionOf(dom.name, "roc"), "two");
            // What does replace it: pulumi up --replace URN.
            await new Promise((r) => setTimeout(r, 1100));
            const forced = await s.ok(
                "up",
                { resources: [...chain(), roc("two")] },
                { replace: [urnOf(s, { kind: "DomainSnapshot", name: "roc" })] },
            );
            assert.deepEqual(stepsOf(forced, "roc"), ["delete-replaced", "replace", "create-replacement"]);
            const again = await virshOk(["snapshot-dumpxml", "--domain", dom.name, "--snapshotname", "roc"]);
            assert.notEqual(time(again), time(after), "--replace did not take the snapshot again");
            assert.deepEqual(
                (await qcow2Snapshots(dom.disk)).filter((n) => n === "roc"),
                ["roc"],
            );
            await s.ok("up", { resources: chain() });
        });

        it("the import option: the engine's real error for a dynamic resource; adopt takes over the snapshot instead", async function () {
            await virshOk(["snapshot-create-as", "--domain", dom.name, "--name", "outside", "--description", "made outside Pulumi"]);
            const imp = await s.run("up", { resources: [...chain(), snap("outside", {}, { import: "outside" })] });
            assert.equal(imp.ok, false, "import of a dynamic resource succeeded");
            // The engine reads a resource to import with no state; the dynamic-provider server then has no provider
            // code to load (NOTES §5 saw `code must be a string, not undefined` with an earlier SDK).
            const why = /error: (.*)/.exec(imp.stdout + imp.stderr)?.[1] ?? imp.error ?? "";
            assert.match(why, /Cannot read properties of undefined \(reading 'toJavaScript'\)|code must be a string/);
            assert.deepEqual(await snapshotNames(dom.name).then((l) => l.filter((n) => n === "outside")), ["outside"]);
            const r = await s.ok("up", {
                resources: [...chain(), { ...snap("outside", { adopt: true, description: "made outside Pulumi" }), exports: ["adopted"] }],
            });
            assert.deepEqual(stepsOf(r, "outside"), ["create"]);
            assert.equal(output(r, "outside.adopted").value, true);
            assert.deepEqual(
                (await qcow2Snapshots(dom.disk)).filter((n) => n === "outside"),
                ["outside"],
                "adopt made a second snapshot",
            );
            await s.ok("up", { resources: chain() });
            assert.ok(!(await snapshotNames(dom.name)).includes("outside"), "destroying the adopted snapshot left it");
        });

        it("destroy deletes the rest, leaf first as the chain needs", async function () {
            const r = await s.ok("destroy", { resources: [] });
            assert.deepEqual(new Set(Object.values(opsOf(r))), new Set(["delete"]));
            assert.deepEqual(await snapshotNames(dom.name), []);
            assert.deepEqual(await qcow2Snapshots(dom.disk), []);
        });
    });

    describe("at the end", function () {
        it("no provider process left its XML folder in the host's /tmp", function () {
            assert.deepEqual(hostXmlFiles(lab).folders, []);
        });
    });
});
