// The clean-up after a snapshot that ran out of space, with a scripted host: the edge cases the lab's libvirt
// never produces (it removes its own partial files and resumes the domain itself, measured on 9.0 and 11.3;
// test/outOfSpace.test.ts proves that against the lab). Here libvirt "leaves" a memory file and a paused
// domain, so the provider's own removal and resume rules are what is checked.
import * as assert from "node:assert/strict";
import { LibvirtError } from "../../provider/errors";
import type { HostResult, Virsh } from "../../provider/host/virsh";
import { DomainSnapshotSchema } from "../../provider/resources/domainSnapshot";
import { planSnapshot } from "../../provider/snapshot/plan";
import { takeSnapshot } from "../../provider/snapshot/take";
import { fakeProbe } from "./fakeProbe";

const MEM = "/big/web1.s1.mem";
const OVERLAY = "/var/lib/libvirt/images/web1.s1";
const DOMAIN_XML = `<domain><name>web1</name><uuid>11111111-2222-3333-4444-555555555555</uuid><devices>
  <disk type='file' device='disk'><source file='/var/lib/libvirt/images/web1.qcow2'/><target dev='vda'/></disk></devices></domain>`;

interface Script {
    /** What exists before the snapshot runs; undefined: stat is refused (sudo). */
    before?: string[];
    /** What exists after libvirt failed. */
    after: string[];
    stderr: string;
    /** domstate --reason right after the failure. */
    state: string;
}

function scriptedHost(s: Script) {
    const calls: string[] = [];
    let created = false;
    let state = s.state;
    const result = (stdout: string, code = 0, stderr = ""): HostResult =>
        ({ stdout, stderr, code, signal: null, command: "" }) as HostResult;
    const virsh = {
        where: "fake",
        connection: {},
        async host(argv: readonly string[]): Promise<HostResult> {
            calls.push(argv.join(" "));
            if (argv[0] === "stat") {
                if (!created && !s.before) return result("", 1, "sudo: a password is required\n");
                const files = argv.slice(argv.indexOf("--") + 1);
                const exist = created ? s.after : s.before!;
                const missing = files.filter((f) => !exist.includes(f));
                return result(
                    files.filter((f) => exist.includes(f)).join("\n") + "\n",
                    missing.length ? 1 : 0,
                    missing.map((f) => `stat: cannot statx '${f}': No such file or directory`).join("\n"),
                );
            }
            if (argv[0] === "df") return result(`Avail Mounted on\n65536 /${argv[argv.length - 1]!.split("/")[1]}\n`);
            if (argv[0] === "rm") return result("");
            if (argv[0] === "qemu-img") return result("{}");
            throw new Error(`unexpected host command ${argv.join(" ")}`);
        },
        async run(args: readonly string[]): Promise<string> {
            calls.push(`virsh ${args.join(" ")}`);
            if (args[0] === "snapshot-create") {
                created = true;
                throw new LibvirtError("failed", `operation failed: ${s.stderr}`, {
                    command: "virsh snapshot-create",
                    exitCode: 1,
                    stderr: s.stderr,
                });
            }
            if (args[0] === "resume") {
                state = "running (unpaused)";
                return "";
            }
            return virsh.query(args);
        },
        async query(args: readonly string[]): Promise<string> {
            calls.push(`virsh ${args.join(" ")}`);
            if (args[0] === "snapshot-info")
                throw new LibvirtError("snapshot-not-found", "Domain snapshot not found: no domain snapshot with matching name 's1'");
            if (args[0] === "dumpxml") return DOMAIN_XML;
            if (args[0] === "domstate") return `${state}\n\n`;
            if (args[0] === "domblkerror") return "vda: no space\n";
            throw new Error(`unexpected virsh ${args.join(" ")}`);
        },
    };
    return { virsh: virsh as unknown as Virsh, calls };
}

async function failWith(s: Script, inputs: Record<string, unknown> = { kind: "external", memory: "external", memoryFile: MEM }) {
    const probe = fakeProbe();
    probe.info.memoryBytes = 64 * 1024 * 1024;
    const { plan } = planSnapshot(DomainSnapshotSchema.parse({ domain: "web1", snapshotName: "s1", ...inputs }), probe);
    assert.ok(plan);
    const host = scriptedHost(s);
    const error = await takeSnapshot(host.virsh, plan, { probe }).then(
        () => assert.fail("the snapshot should fail"),
        (e: unknown) => e as LibvirtError,
    );
    return { error, calls: host.calls };
}

describe("out of space: the provider's clean-up (scripted host)", () => {
    it("removes the memory file the snapshot made and libvirt left, and resumes the domain libvirt left paused by it", async () => {
        const { error, calls } = await failWith({
            before: [],
            after: [MEM],
            stderr: `Unable to write ${MEM}: No space left on device`,
            state: "paused (snapshot)",
        });
        assert.equal(error.kind, "no-space");
        assert.equal(error.name, "OutOfSpaceError");
        assert.match(error.message, new RegExp(`removed what the snapshot had made: ${MEM}`));
        assert.match(error.message, /domain state: running \(unpaused\) \(resumed: the snapshot had paused it\)/);
        assert.match(error.message, /64 KiB is free now on the filesystem mounted on \/big, where the snapshot needs about 64\.0 MiB/);
        assert.ok(calls.includes(`rm -f -- ${MEM}`));
        assert.ok(!calls.some((c) => c.startsWith("rm") && c.includes(OVERLAY)), "the overlay libvirt did not leave is not touched");
        assert.ok(calls.includes("virsh resume --domain 11111111-2222-3333-4444-555555555555"));
    });

    it("never removes a file that existed before, nor resumes a domain the user paused", async () => {
        const { error, calls } = await failWith({ before: [MEM], after: [MEM], stderr: "No space left on device", state: "paused (user)" });
        assert.equal(error.kind, "no-space");
        assert.ok(!calls.some((c) => c.startsWith("rm")), calls.join("\n"));
        assert.ok(!calls.some((c) => c.startsWith("virsh resume")));
        assert.match(error.message, /domain state: paused \(user\)$/m);
    });

    it("removes nothing when what existed before can't be read, and says so", async () => {
        const { error, calls } = await failWith({ after: [MEM], stderr: "No space left on device", state: "running (unpaused)" });
        assert.equal(error.kind, "no-space");
        assert.ok(!calls.some((c) => c.startsWith("rm")));
        assert.match(error.message, /could not be read \(stat\), so none was removed/);
    });

    it("a guest paused by its own I/O error is named and left paused", async () => {
        const { error, calls } = await failWith(
            { before: [], after: [], stderr: "Error while writing VM state: Input/output error", state: "paused (I/O error)" },
            {},
        );
        assert.equal(error.kind, "no-space");
        assert.match(error.message, /domain state: paused \(I\/O error\): the guest's own writes hit the full disk \(vda: no space\)/);
        assert.ok(!calls.some((c) => c.startsWith("virsh resume")));
    });

    it("an I/O error while there is room is not about space: the usual failure, nothing removed", async () => {
        const probe = fakeProbe();
        probe.info.memoryBytes = 1024; // less than the 64 KiB the scripted df reports free
        const { plan } = planSnapshot(DomainSnapshotSchema.parse({ domain: "web1", snapshotName: "s1" }), probe);
        const host = scriptedHost({
            before: [],
            after: [],
            stderr: "Error while writing VM state: Input/output error",
            state: "running (unpaused)",
        });
        const error = await takeSnapshot(host.virsh, plan!, { probe }).then(
            () => assert.fail("the snapshot should fail"),
            (e: unknown) => e as LibvirtError,
        );
        assert.equal(error.kind, "failed");
        assert.match(error.message, /no snapshot 's1' was left behind/);
        assert.ok(!host.calls.some((c) => c.startsWith("rm") || c.startsWith("virsh resume")));
    });
});
