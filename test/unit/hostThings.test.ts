// One way to do each host thing: the runner a resource builds, and the checkpoint delete both resources share.
import * as assert from "node:assert/strict";
import { deleteCheckpoint } from "../../provider/checkpoint/delete";
import { LibvirtError } from "../../provider/errors";
import type { Virsh } from "../../provider/host/virsh";
import { virshFor } from "../../provider/resource";

/** A virsh whose checkpoint-delete without --metadata fails with `first`; records what ran. */
function deletingHost(first?: LibvirtError) {
    const ran: string[] = [];
    const virsh = {
        async run(args: string[]): Promise<string> {
            ran.push(args.join(" "));
            if (first && !args.includes("--metadata")) throw first;
            return "";
        },
    };
    return { virsh: virsh as unknown as Virsh, ran };
}

describe("one way to do each host thing", () => {
    it("virshFor: the resource's timeoutSeconds bounds each command, unless it bounds the whole job", () => {
        const limit = (v: Virsh) => (v as unknown as { defaultTimeoutMs: number }).defaultTimeoutMs;
        assert.equal(limit(virshFor({ connection: {}, timeoutSeconds: 7 })), 7_000);
        assert.equal(limit(virshFor({ connection: {}, declared: { timeoutSeconds: 9 } })), 9_000);
        assert.equal(limit(virshFor({ connection: {}, timeoutSeconds: 3600 }, { wholeJob: true })), 300_000);
        assert.equal(limit(virshFor({ connection: {} })), 300_000);
    });

    it("deleteCheckpoint: one command when it works; a checkpoint already gone is deleted", async () => {
        const ok = deletingHost();
        await deleteCheckpoint(ok.virsh, "u", "c");
        assert.deepEqual(ok.ran, ["checkpoint-delete --domain u --checkpointname c"]);
        const gone = deletingHost(new LibvirtError("checkpoint-not-found", "Domain checkpoint not found"));
        await deleteCheckpoint(gone.virsh, "u", "c");
        assert.deepEqual(gone.ran, ["checkpoint-delete --domain u --checkpointname c"]);
    });

    it("deleteCheckpoint: a bitmap gone behind libvirt's back leaves only the record to drop; other failures are thrown", async () => {
        const lost = deletingHost(new LibvirtError("failed", "bitmap 'c' not found in backing chain of 'vda'"));
        await deleteCheckpoint(lost.virsh, "u", "c");
        assert.deepEqual(lost.ran, [
            "checkpoint-delete --domain u --checkpointname c",
            "checkpoint-delete --domain u --checkpointname c --metadata",
        ]);
        const busy = deletingHost(new LibvirtError("domain-busy", "cannot acquire state change lock"));
        await assert.rejects(deleteCheckpoint(busy.virsh, "u", "c"), /cannot acquire state change lock/);
        assert.equal(busy.ran.length, 1);
    });
});
