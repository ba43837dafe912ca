// SnapshotRevert's validation, flags and diff, without a host. The engine-path
// tests (snapshotRevert.test.ts) prove the same against the lab.
import * as assert from "node:assert/strict";
import { parseInputs } from "../../provider/inputs";
import { SnapshotRevertSchema, revertArgv, snapshotRevert } from "../../provider/resources/snapshotRevert";

const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

describe("SnapshotRevert", () => {
    const ok = (over: Record<string, unknown>) =>
        parseInputs(SnapshotRevertSchema, { domain: "web1", snapshot: "s1", ...over }, { allowUnknowns: true });
    const reasons = (over: Record<string, unknown>) => {
        const r = ok(over);
        return r.ok ? "" : r.failures.map((f) => `${f.property}|${f.reason}`).join("\n");
    };
    const argv = (over: Record<string, unknown>) => {
        const r = ok(over);
        assert.ok(r.ok);
        return revertArgv("u-u-i-d", r.value);
    };

    it("validates its inputs, naming the property", () => {
        assert.match(reasons({ afterRevert: "stopped" }), /^afterRevert\|must be 'running', 'paused' or 'as-snapshotted'/);
        assert.match(reasons({ triggers: "x" }), /^triggers\|must be a list of values/);
        assert.match(reasons({ snapshot: "-x" }), /^snapshot\|must not start with '-'/);
        assert.match(reasons({ force: 1 }), /^force\|must be true or false/);
        assert.match(reasons({ snapshotName: "s1" }), /unknown property 'snapshotName'/);
        assert.equal(ok({ snapshot: "with space ✓", triggers: [1, "a", { b: [null] }] }).ok, true);
    });
    it("plans the whole virsh command: afterRevert and force as flags (--running and --paused never together)", () => {
        const base = ["snapshot-revert", "--domain", "u-u-i-d", "--snapshotname", "s1"];
        assert.deepEqual(argv({}), base);
        assert.deepEqual(argv({ afterRevert: "running" }), [...base, "--running"]);
        assert.deepEqual(argv({ afterRevert: "paused", force: true }), [...base, "--paused", "--force"]);
    });

    const olds = {
        domain: "web1",
        snapshot: "s1",
        domainName: "web1",
        domainUuid: "11111111-2222-3333-4444-555555555555",
        declared: { domain: "web1", snapshot: "s1", triggers: ["1"], afterRevert: "as-snapshotted", force: false },
    } as unknown as Parameters<typeof snapshotRevert.diff>[1];
    const diff = (news: Record<string, unknown>) =>
        snapshotRevert.diff("id", olds, { domain: "web1", snapshot: "s1", triggers: ["1"], ...news });

    it("diff: reverts again when triggers, snapshot, domain or afterRevert change, or a trigger is unknown", async () => {
        assert.deepEqual(await diff({}), { changes: false, replaces: [], deleteBeforeReplace: false });
        assert.deepEqual((await diff({ domain: "11111111-2222-3333-4444-555555555555" })).changes, false, "the same domain by UUID");
        assert.deepEqual((await diff({ triggers: ["2"] })).replaces, ["triggers"]);
        assert.deepEqual((await diff({ triggers: [UNKNOWN] })).replaces, ["triggers"]);
        assert.deepEqual((await diff({ snapshot: "s2" })).replaces, ["snapshot"]);
        assert.deepEqual((await diff({ afterRevert: "running" })).replaces, ["afterRevert"]);
        assert.deepEqual((await diff({ domain: "web2" })).replaces, ["domain"]);
        assert.deepEqual(
            (await diff({ snapshot: UNKNOWN })).replaces,
            ["snapshot"],
            "an unknown snapshot may be another one; defaults still apply to the rest",
        );
    });
    it("diff: force, timeoutSeconds or credentials alone are an update, never a revert", async () => {
        for (const news of [{ force: true }, { timeoutSeconds: 60 }, { connection: {} }]) {
            const d = await diff(news);
            assert.equal(d.changes, true, JSON.stringify(news));
            assert.deepEqual(d.replaces, [], JSON.stringify(news));
        }
    });
    it("delete does nothing, and read asks nothing", async () => {
        await snapshotRevert.delete("id", olds);
        assert.deepEqual(await snapshotRevert.read("id", olds), { id: "id", props: olds });
    });
});
