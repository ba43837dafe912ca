// Failures built in one place (provider/failures.ts), and what guard.ts makes of an init failure.
import * as assert from "node:assert/strict";
import { LibvirtError } from "../../provider/errors";
import { failureInsteadOf, hostFailure, initFailure, isInitFailure } from "../../provider/failures";
import { guarded } from "../../provider/guard";

describe("failures", () => {
    it("a host command's failure carries the command, its exit code and its stderr", () => {
        const e = hostFailure("failed", "cannot remove it", {
            command: "env LC_ALL=C rm -f -- /x",
            code: 1,
            stderr: "rm: denied\n",
        });
        assert.equal(e.kind, "failed");
        assert.equal(e.command, "env LC_ALL=C rm -f -- /x");
        assert.equal(e.exitCode, 1);
        assert.equal(e.message, "cannot remove it\n  command: env LC_ALL=C rm -f -- /x\n  exit code: 1\n  stderr: rm: denied");
    });

    it("an error standing in for a virsh failure keeps its command and stderr, and its exit code only when asked", () => {
        const virsh = new LibvirtError("already-exists", "x [on h]", { command: "virsh c", exitCode: 1, stderr: "already exists" });
        const without = failureInsteadOf("already-exists", "it exists", virsh, { exitCode: false });
        assert.equal(without.message, "it exists\n  command: virsh c\n  stderr: already exists");
        const withCode = failureInsteadOf("no-space", "full", virsh, { exitCode: true });
        assert.equal(withCode.message, "full\n  command: virsh c\n  exit code: 1\n  stderr: already exists");
        assert.equal(failureInsteadOf("no-space", "full", new LibvirtError("failed", "bare"), { exitCode: true }).message, "full");
    });

    it("an init failure is the same error with id, properties and reasons (its message unless given)", () => {
        const e = new LibvirtError("timeout", "cut off");
        const f = initFailure(e, { id: "u/s", properties: { a: 1 } });
        assert.equal(f, e);
        assert.deepEqual([f.id, f.properties, f.reasons], ["u/s", { a: 1 }, ["cut off"]]);
        assert.equal(isInitFailure(f), true);
        assert.equal(isInitFailure(initFailure("text", { id: "i", properties: {}, reasons: ["r"] })), true);
        assert.equal(isInitFailure(new Error("plain")), false);
        assert.equal(isInitFailure(Object.assign(new Error("no id"), { id: "", properties: {}, reasons: [] })), false);
        assert.equal(isInitFailure({ id: "i", properties: {}, reasons: [] }), false);
    });

    it("guarded passes an init failure on with its secrets stripped and the provider's text in its properties", async () => {
        const impl = guarded({
            async create(_inputs: unknown): Promise<unknown> {
                throw initFailure(new LibvirtError("failed", "made, but hunter2-secret leaked"), {
                    id: "u/s",
                    properties: { domain: "d" },
                });
            },
        });
        const inputs = { connection: { password: "hunter2-secret" }, __provider: "shim text" };
        await assert.rejects(impl.create(inputs as never), (e: unknown) => {
            assert.ok(isInitFailure(e));
            assert.equal(e.message, "made, but *** leaked");
            assert.equal(e.id, "u/s");
            assert.deepEqual(e.reasons, ["made, but *** leaked"]);
            assert.deepEqual(e.properties, { domain: "d", __provider: "shim text" });
            return true;
        });
    });
});
