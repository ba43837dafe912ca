// State written by an earlier release must keep working: users' stacks hold
// that release's shim text (__provider), which loads "pulumi-libvirt-snapshots/impl"
// by package name, so it runs today's code. Each recorded state
// (test/fixtures/state/VERSION.json, made by test/upgrade/record.ts) is replayed
// through the engine path, as `pulumi refresh`, `pulumi up` and `pulumi destroy`
// would run it after the user upgraded the package.
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import type * as pulumi from "@pulumi/pulumi";
import * as pkg from "pulumi-libvirt-snapshots";
import { PACKAGE_ROOT, PROVIDER_KEY, type ResourceState } from "./harness/engine";
import { engineSuite } from "./support/fixture";
import { DEFAULT_HOST, currentHostName, loadLab, virshOk, type TestDomain } from "./support/lab";
import type { RecordedResource, RecordedState } from "./upgrade/record";
import { UPGRADE_RESOURCES, recreateHostObjects, upgradeDomains } from "./upgrade/scenario";

const STATE_DIR = path.join(PACKAGE_ROOT, "test", "fixtures", "state");
const HOST = currentHostName();
// A recording names its host's objects and its connection (RestorePoint keeps each
// member's host), so each host replays the recordings made on it.
const recordings = fs
    .readdirSync(STATE_DIR)
    .filter((f) => f.endsWith(".json"))
    .sort()
    .map((f) => JSON.parse(fs.readFileSync(path.join(STATE_DIR, f), "utf8")) as RecordedState)
    .filter((rec) => (rec.host ?? DEFAULT_HOST) === HOST);

const providerOf = (type: string) => (pkg as unknown as Record<string, pulumi.dynamic.ResourceProvider>)[`${type}Provider`]!;
const programInputs = (r: RecordedResource) => UPGRADE_RESOURCES.find((x) => x.name === r.name)!.inputs;
const lines = async (args: string[]) =>
    (await virshOk(args))
        .split("\n")
        .map((l) => l.trim())
        .filter(Boolean);

/** The libvirt objects a recorded resource stands for, as virsh lists them now. */
async function hostObjects(r: RecordedResource): Promise<string[]> {
    const outs = r.outs as Record<string, unknown>;
    if (r.type === "DomainSnapshot")
        return (await lines(["snapshot-list", "--domain", String(outs.domainUuid), "--name"])).filter((n) => n === outs.snapshotName);
    if (r.type === "DomainCheckpoint")
        return (await lines(["checkpoint-list", "--domain", String(outs.domainUuid), "--name"])).filter((n) => n === outs.checkpointName);
    if (r.type === "RestorePoint") {
        const found: string[] = [];
        for (const m of outs.snapshots as Array<{ domainUuid: string; snapshotName: string }>) {
            if ((await lines(["snapshot-list", "--domain", m.domainUuid, "--name"])).includes(m.snapshotName))
                found.push(`${m.domainUuid}/${m.snapshotName}`);
        }
        return found;
    }
    return []; // SnapshotRevert: an event in the past, nothing to list
}

describe("recorded state of earlier releases (engine path, real lab)", function () {
    this.timeout(180_000);
    const suite = engineSuite("labtmp-upgrade-");
    // The recorded ids name fixed domains, so each test redefines them rather than making fresh ones.
    let domains: TestDomain[] = [];
    after(async () => {
        for (const d of domains) await d.dispose().catch(() => undefined);
    });

    it(`has a recording of 0.1.0 made on this host (${HOST}), with each resource's inputs and outputs and the shim text of that release`, () => {
        const rec = recordings.find((r) => r.version === "0.1.0");
        assert.ok(rec, `recordings for ${HOST}: ${recordings.map((r) => r.version).join(", ") || "none"}`);
        assert.equal(rec.libvirtVersion, loadLab().libvirtVersion, "recorded against this host's libvirt");
        assert.deepEqual(
            rec.resources.map((r) => r.type),
            ["DomainSnapshot", "DomainCheckpoint", "SnapshotRevert", "RestorePoint"],
        );
        for (const r of rec.resources) {
            assert.match(String(r.outs[PROVIDER_KEY]), /require\("pulumi-libvirt-snapshots\/impl"\)/, r.name);
            assert.equal(r.outs[PROVIDER_KEY], r.inputs[PROVIDER_KEY], `${r.name}: outputs and inputs carry the same shim`);
        }
    });

    for (const rec of recordings) {
        describe(`state recorded with ${rec.version} on ${HOST}`, () => {
            beforeEach(async () => {
                for (const d of domains) await d.dispose().catch(() => undefined);
                domains = await upgradeDomains();
                await recreateHostObjects();
            });

            it("refresh keeps every resource, then destroy with the recorded shim removes what it made", async () => {
                for (const r of rec.resources) {
                    const refreshed = await suite.engine.refresh(r);
                    assert.ok(refreshed, `${r.name}: refresh kept it`);
                    assert.equal(refreshed.id, r.id, r.name);
                    assert.equal(refreshed.outs[PROVIDER_KEY], r.outs[PROVIDER_KEY], `${r.name}: refresh keeps the stored shim`);
                    for (const k of Object.keys(r.outs))
                        assert.ok(k in refreshed.outs, `${r.name}: output '${k}' of ${rec.version} is still there`);
                }
                for (const r of [...rec.resources].reverse()) {
                    const before = await hostObjects(r);
                    await suite.engine.destroy(r);
                    assert.deepEqual(
                        await hostObjects(r),
                        [],
                        `${r.name}: destroy removed ${before.join(", ") || "nothing (none listed)"}`,
                    );
                }
                assert.deepEqual(await lines(["snapshot-list", "--domain", "labtmp-upgrade-off", "--name"]), []);
                assert.deepEqual(await lines(["snapshot-list", "--domain", "labtmp-upgrade-idle", "--name"]), []);
                assert.deepEqual(await lines(["checkpoint-list", "--domain", "labtmp-upgrade-run", "--name"]), []);
            });

            it("pulumi up with today's program: no change for the same inputs, an in-place update for a new description, then destroy", async () => {
                for (const r of rec.resources) {
                    const inputs = programInputs(r);
                    const same = await suite.engine.change(r, providerOf(r.type), inputs);
                    assert.equal(same.op, "same", `${r.name}: the same inputs are no change (diff: ${JSON.stringify(same.diff)})`);
                    let state: ResourceState = same.state;
                    if ("description" in inputs) {
                        const updated = await suite.engine.change(state, providerOf(r.type), {
                            ...inputs,
                            description: `${String(inputs.description)}, upgraded`,
                        });
                        assert.equal(
                            updated.op,
                            "update",
                            `${r.name}: a new description updates in place (diff: ${JSON.stringify(updated.diff)})`,
                        );
                        assert.equal(updated.state.id, r.id, r.name);
                        state = updated.state;
                        assert.equal(
                            await descriptionOnHost(r),
                            `${String(inputs.description)}, upgraded`,
                            `${r.name}: libvirt has the new description`,
                        );
                    } else {
                        const again = await suite.engine.change(state, providerOf(r.type), { ...inputs, triggers: ["second"] });
                        assert.equal(again.op, "replace", `${r.name}: a new trigger reverts again`);
                        state = again.state;
                    }
                    (r as ResourceState).outs = state.outs;
                    (r as ResourceState).inputs = state.inputs;
                    (r as ResourceState).id = state.id;
                }
                for (const r of [...rec.resources].reverse()) {
                    await suite.engine.destroy(r);
                    assert.deepEqual(await hostObjects(r), [], `${r.name}: destroyed`);
                }
            });
        });
    }
});

async function descriptionOnHost(r: RecordedResource): Promise<string | undefined> {
    const outs = r.outs as Record<string, unknown>;
    const xml =
        r.type === "DomainCheckpoint"
            ? await virshOk(["checkpoint-dumpxml", "--domain", String(outs.domainUuid), "--checkpointname", String(outs.checkpointName)])
            : r.type === "RestorePoint"
              ? await virshOk([
                    "snapshot-dumpxml",
                    "--domain",
                    (outs.snapshots as Array<{ domainUuid: string }>)[0]!.domainUuid,
                    "--snapshotname",
                    String(outs.snapshotName),
                ])
              : await virshOk(["snapshot-dumpxml", "--domain", String(outs.domainUuid), "--snapshotname", String(outs.snapshotName)]);
    const m = /<description>([^<]*)<\/description>/.exec(xml);
    return m
        ? m[1]!
              .replace(/&apos;/g, "'")
              .replace(/&quot;/g, '"')
              .replace(/&lt;/g, "<")
              .replace(/&gt;/g, ">")
              .replace(/&amp;/g, "&")
        : undefined;
}
