// SnapshotRevert's validation, flags and diff, without a host. The engine-path
// tests (snapshotRevert.test.ts) prove the same against the lab.
import * as assert from "node:assert/strict";
import { LibvirtError, knownBugOf } from "../../provider/errors";
import type { Virsh } from "../../provider/host/virsh";
import { parseInputs } from "../../provider/inputs";
import { SnapshotRevertSchema, revertArgv, revertNow, snapshotRevert } from "../../provider/resources/snapshotRevert";
import { expectCallError } from "../support/helpers";

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

// libvirt 11.2 and 11.3 upstream can't revert internal snapshots (fixed in 11.4). No lab host has the bug
// (Debian's 11.3 build carries the fix), so a scripted host plays it: the one case a fake virsh is for.
describe("SnapshotRevert: a revert that fails with a known libvirt bug", () => {
    const BUG =
        "internal error: unable to execute QEMU command 'snapshot-load': Device 'libvirt-1-format' is writable but does not support snapshots";
    const domainXml =
        "<domain type='kvm'><name>web1</name><uuid>11111111-2222-3333-4444-555555555555</uuid><devices>" +
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/var/lib/libvirt/images/web1.qcow2'/><target dev='vda'/></disk>" +
        "</devices></domain>";
    const snapshotXml =
        "<domainsnapshot><name>s1</name><state>running</state><creationTime>1700000000</creationTime><memory snapshot='internal'/>" +
        "<disks><disk name='vda' snapshot='internal'/></disks></domainsnapshot>";

    /** A host whose revert fails with `stderr`, leaving the domain in `after`; it records every command. */
    function scriptedHost(stderr: string, after: string) {
        let state = "running";
        const ran: string[] = [];
        const virsh = {
            where: "kvm1 (qemu:///system)",
            connection: {},
            version: async () => ({ libvirt: "11.3.0", number: 11_003_000, hypervisor: "QEMU 10.0.0" }),
            capabilities: async () => ({ externalSnapshot: true }),
            async query(args: string[]) {
                return this.run(args);
            },
            async run(args: string[]) {
                ran.push(args.join(" "));
                switch (args[0]) {
                    case "dumpxml":
                        return domainXml;
                    case "domstate":
                        return args.includes("--reason") ? `${state} (${state === "paused" ? "user" : "booted"})\n` : `${state}\n`;
                    case "domid":
                        return state === "shut off" ? "-\n" : "7\n";
                    case "snapshot-dumpxml":
                        return snapshotXml;
                    case "checkpoint-list":
                        return "\n";
                    case "snapshot-revert":
                        state = after;
                        throw new LibvirtError("failed", `${stderr} [on kvm1]`, {
                            command: "virsh snapshot-revert ...",
                            exitCode: 1,
                            stderr,
                        });
                    case "resume":
                        state = "running";
                        return "";
                }
                throw new Error(`unexpected virsh ${args.join(" ")}`);
            },
        };
        return { virsh: virsh as unknown as Virsh, ran, state: () => state };
    }
    const inputs = { domain: "web1", snapshot: "s1", afterRevert: "as-snapshotted" as const, force: false };

    it("classifies the message: which bug it is and the release that fixes it; other failures are no known bug", () => {
        assert.deepEqual(knownBugOf(BUG)?.fixedIn, "11.4");
        assert.match(knownBugOf(BUG)!.what, /^upstream libvirt 11\.2 and 11\.3 can't revert to internal snapshots/);
        assert.equal(knownBugOf("Device has active dirty bitmaps"), undefined);
        assert.equal(knownBugOf("revert to external snapshot not supported yet"), undefined);
    });
    it("the error says which bug and which version fixes it, and the domain it left paused runs again, as it was", async () => {
        const host = scriptedHost(BUG, "paused");
        const msg = await expectCallError(revertNow(host.virsh, inputs), /reverting domain 'web1' to snapshot 's1' failed: /);
        assert.match(msg, /this is a known libvirt bug: upstream libvirt 11\.2 and 11\.3 can't revert to internal snapshots/);
        assert.match(msg, /libvirt 11\.4 fixes it\. The host runs libvirt 11\.3\.0: upgrade it to 11\.4 or newer/);
        assert.match(msg, /the domain was running \(id 7\) before and is running \(booted\), resumed by the provider \(id 7\) now/);
        assert.equal(host.state(), "running");
        assert.ok(host.ran.includes("resume --domain 11111111-2222-3333-4444-555555555555"));
    });
    it("any other failure is reported as it is, and the domain is not touched", async () => {
        const host = scriptedHost("Device has active dirty bitmaps", "paused");
        const msg = await expectCallError(revertNow(host.virsh, inputs), /failed: Device has active dirty bitmaps/);
        assert.doesNotMatch(msg, /known libvirt bug/);
        assert.equal(host.state(), "paused");
        assert.ok(!host.ran.some((c) => c.startsWith("resume")));
    });
});
