// An interrupted `pulumi up` (issue #22): the real CLI is cut off while a snapshot is being taken (the
// `virsh snapshot-create` runs on the host), once by one SIGINT (Ctrl-C), once by two, once by SIGKILL of the
// job's process group. Then the test does what the CLI told the user, and checks that it converged: one snapshot
// of that name, in the image and in libvirt; the domain running; the snapshot in the state (a later
// `pulumi up --expect-no-changes` has nothing to do), taken over by the next `pulumi up` without `adopt` where
// the first run could not record it (the maker's mark: provider/moments/maker.ts); and no mark left in the domain.
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import { hostXmlFiles, qcow2Snapshots, qemuPid, snapshotNames, waitForXmlFile } from "./support/helpers";
import { loadLab, makeDomain, sleep, virshOk, type TestDomain } from "./support/lab";
import { CliStack, killGroup, pulumiCli, urnOf, type OpResult, type ProgramSpec } from "./support/pulumiCli";

const lab = loadLab();
const PREFIX = "labcut-";
const CUTS = ["one SIGINT", "two SIGINTs", "SIGKILL of the process group"] as const;
type Cut = (typeof CUTS)[number];

/** The CLI process of a job started by CliStack.start: the `pulumi` binary in that process group. */
function cliProcess(group: number, bin: string): number | undefined {
    for (const e of fs.readdirSync("/proc")) {
        if (!/^\d+$/.test(e)) continue;
        try {
            const stat = fs.readFileSync(`/proc/${e}/stat`, "utf8");
            const pgrp = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]);
            if (pgrp === group && fs.readlinkSync(`/proc/${e}/exe`) === fs.realpathSync(bin)) return Number(e);
        } catch {
            /* gone, or not ours to read */
        }
    }
    return undefined;
}

/** The dynamic-provider plugin processes running in a stack's work folder. */
function pluginProcesses(workDir: string): number[] {
    const out: number[] = [];
    for (const e of fs.readdirSync("/proc")) {
        if (!/^\d+$/.test(e)) continue;
        try {
            const cmd = fs.readFileSync(`/proc/${e}/cmdline`, "utf8");
            if (cmd.includes("cmd/dynamic-provider") && fs.readlinkSync(`/proc/${e}/cwd`).startsWith(workDir)) out.push(Number(e));
        } catch {
            /* gone */
        }
    }
    return out;
}

/** Until libvirt has no job on the domain and it runs: what the cut-off create left is over. */
async function settled(dom: TestDomain): Promise<void> {
    for (let i = 0; i < 600; i++) {
        const job = await virshOk(["domjobinfo", dom.name]);
        const state = (await virshOk(["domstate", dom.name])).trim();
        if (/^Job type:\s+None/m.test(job) && state === "running") return;
        await sleep(100);
    }
    throw new Error(`domain ${dom.name} still busy or not running after 60 s`);
}

async function creationTime(dom: TestDomain): Promise<string | undefined> {
    const xml = await virshOk(["snapshot-dumpxml", "--domain", dom.name, "--snapshotname", "before-upgrade"]);
    return /<creationTime>(\d+)<\/creationTime>/.exec(xml)?.[1];
}

function said(r: OpResult | Error): string {
    return r instanceof Error ? r.message : `${r.error ?? ""}\n${r.stdout}\n${r.stderr}`;
}

describe(`an interrupted pulumi up, by the real Pulumi CLI (${lab.name})`, function () {
    this.timeout(600_000);
    this.slow(120_000);
    const doms: TestDomain[] = [];
    const stacks: CliStack[] = [];
    const bin = () => pulumiCli(lab).bin;
    // Folders other runs on this host left are theirs.
    const before = new Set(hostXmlFiles(lab).folders);

    after(async function () {
        for (const d of doms) await d.dispose().catch(() => undefined);
        for (const s of stacks) if (!fs.existsSync(s.stateFile) || !/"urn"/.test(fs.readFileSync(s.stateFile, "utf8"))) s.dispose();
    });

    CUTS.forEach((cut: Cut, i) => {
        it(`${cut} while the snapshot is taken: doing what the CLI says converges, with no adopt and no duplicate`, async function () {
            const dom = await makeDomain({ prefix: PREFIX, running: true });
            doms.push(dom);
            const s = new CliStack(`cut-${i}`, lab.name);
            stacks.push(s);
            const program: ProgramSpec = {
                resources: [
                    {
                        kind: "DomainSnapshot",
                        name: "before-upgrade",
                        args: { domain: dom.name, description: "taken while the CLI is cut off" },
                        exports: ["snapshotName", "adopted", "creationTime"],
                    },
                ],
            };
            const qemu = qemuPid(dom.name);
            assert.ok(qemu, `no qemu process of ${dom.name}`);
            const since = Date.now();
            const job = s.start("up", program);
            let done = false;
            void job.result.then(
                () => (done = true),
                () => (done = true),
            );
            // The moment, as the faults suite picks it: the create's XML file is on the host, so the snapshot-create
            // is on its way to libvirt. qemu is frozen then, so the snapshot stays in progress while the CLI is cut.
            await waitForXmlFile(lab, since, 120_000, () => done);
            process.kill(qemu, "SIGSTOP");
            try {
                if (done)
                    assert.fail(
                        `the up ended before its snapshot-create reached libvirt:\n${said(await job.result.catch((e: Error) => e))}`,
                    );
                await sleep(500);
                const cli = cliProcess(job.group, bin());
                assert.ok(cli, "no pulumi process in the job's process group");
                if (cut === "SIGKILL of the process group") killGroup(job.group, "SIGKILL");
                else {
                    process.kill(cli, "SIGINT");
                    if (cut === "two SIGINTs") {
                        await sleep(300);
                        process.kill(cli, "SIGINT");
                    }
                }
                await sleep(2000);
            } finally {
                process.kill(qemu, "SIGCONT");
            }
            const first: OpResult | Error = await job.result.catch((e: Error) => e);
            // The CLI starts each plugin in a process group of its own: the dynamic-provider plugin outlives a SIGKILL
            // of the job's group (and keeps its SSH connection until it closes as idle). A user stops it by hand.
            let plugins = pluginProcesses(s.workDir);
            for (let i = 0; i < 50 && plugins.length; i++, plugins = pluginProcesses(s.workDir)) await sleep(100);
            if (cut === "SIGKILL of the process group") {
                assert.ok(plugins.length > 0, "the plugin did not outlive the CLI: the README says it does");
                console.log(`      the dynamic-provider plugin outlived the SIGKILL (pid ${plugins.join(", ")}): stopped by the test`);
                for (const pid of plugins) process.kill(pid, "SIGTERM");
            } else assert.deepEqual(plugins, [], "a plugin outlived the CLI");
            console.log(`      ${cut}: the first up ${first instanceof Error ? "was killed" : first.ok ? "succeeded" : "failed"}:`);
            console.log(
                said(first)
                    .trim()
                    .split("\n")
                    .slice(-6)
                    .map((l) => `        | ${l}`)
                    .join("\n"),
            );
            await settled(dom);

            // Where the first run left the snapshot: taken (libvirt finished it once qemu went on) or not.
            const taken = (await snapshotNames(dom.name)).includes("before-upgrade") ? await creationTime(dom) : undefined;
            console.log(`      after the cut, libvirt ${taken ? "has" : "has no"} snapshot 'before-upgrade'`);
            // qemu was frozen with the snapshot-create in libvirt's hands: libvirt finishes it whatever became of the CLI.
            assert.ok(taken, "the cut-off run left no snapshot: the takeover below would not be tested");

            // What the CLI tells the user, done: the same pulumi up again; before it, `pulumi cancel` where the lock
            // a killed CLI left says so; after it, `pulumi refresh` where the up's warning names pending operations.
            let next = await s.run("up", program);
            if (cut === "SIGKILL of the process group") {
                assert.equal(next.ok, false, "the up after SIGKILL found no lock");
                assert.match(said(next), /the stack is currently locked by 1 lock\(s\)\. .*delete the lock file with `pulumi cancel`/);
                const cancel = await s.cli(["cancel", "--yes", "--stack", lab.name]);
                assert.equal(cancel.code, 0, `pulumi cancel: ${cancel.stderr}`);
                next = await s.run("up", program);
            }
            console.log(`      the next up: ${next.ok ? "succeeded" : "failed"}; steps ${JSON.stringify(next.steps.map((x) => x.op))}`);
            assert.ok(next.ok, `the next pulumi up failed:\n${said(next)}`);
            const pending = /warning: Attempting to deploy or update resources with 1 pending operations/.test(said(next));
            assert.equal(pending, cut !== "one SIGINT", `pending operations (only where the CLI was cut off at once):\n${said(next)}`);
            if (pending) {
                console.log(
                    said(next)
                        .split("\n")
                        .filter((l) => /pending|refresh|unknown state/.test(l))
                        .map((l) => `        | ${l.trim()}`)
                        .join("\n"),
                );
                assert.match(said(next), /pulumi refresh/, "the warning names no command");
                // The first run recorded nothing: this up created it, taking over what the cut-off run had made.
                assert.deepEqual(
                    next.steps.filter((x) => x.name === "before-upgrade").map((x) => x.op),
                    ["create"],
                );
                // `pulumi refresh`, run interactively, asks what to do with the pending create: its "clear" choice.
                const refresh = await s.ok("refresh", program, { clearPendingCreates: true });
                assert.deepEqual(
                    refresh.steps.filter((x) => x.name === "before-upgrade").map((x) => x.op),
                    ["refresh"],
                );
            }
            if (taken) assert.equal(await creationTime(dom), taken, "the snapshot the cut-off run made was taken again, not taken over");

            assert.deepEqual(await snapshotNames(dom.name), ["before-upgrade"], "libvirt's snapshots");
            assert.deepEqual(await qcow2Snapshots(dom.disk), ["before-upgrade"], "the image's snapshots");
            assert.equal((await virshOk(["domstate", dom.name])).trim(), "running");
            const urn = urnOf(s, { kind: "DomainSnapshot", name: "before-upgrade" });
            const state = JSON.parse(fs.readFileSync(s.stateFile, "utf8")) as {
                checkpoint: {
                    latest: {
                        resources: Array<{ urn: string; id?: string; outputs?: Record<string, unknown> }>;
                        pending_operations?: unknown[];
                    };
                };
            };
            const res = state.checkpoint.latest.resources.find((r) => r.urn === urn);
            assert.ok(res?.id, "the snapshot is not in the state");
            assert.equal(res.outputs?.adopted, false, "taken over as adopted, not as its own");
            assert.equal(state.checkpoint.latest.pending_operations?.length ?? 0, 0, "pending operations left in the state");
            await s.ok("upExpectNoChanges", program);
            for (const flag of [[], ["--inactive"]])
                assert.doesNotMatch(
                    await virshOk(["dumpxml", ...flag, dom.name]),
                    /pulumi-libvirt-snapshots:maker/,
                    "a mark left in the domain",
                );
            await s.ok("destroy", program);
            assert.deepEqual(await snapshotNames(dom.name), []);
        });
    });

    it("no provider process, however it ended, left its XML folder in the host's /tmp", async function () {
        // The host's sh removes its folder when its connection drops; give the last ones time to notice.
        const left = () => hostXmlFiles(lab).folders.filter((f) => !before.has(f));
        for (let i = 0; i < 300 && left().length; i++) await sleep(100);
        assert.deepEqual(left(), []);
    });
});
