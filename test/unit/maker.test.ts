// The maker's mark (provider/moments/maker.ts): its XML, read back from a snapshot's and a checkpoint's copy of the
// domain whatever prefix libvirt gives it, and the inputs it comes from. What libvirt does with it is in
// test/interrupted.test.ts, on the lab's hosts.
import * as assert from "node:assert/strict";
import { MAKER, makerMark, userInputs } from "../../provider/inputs";
import { madeBy } from "../../provider/moments/maker";
import { MAKER_NS, makerMarkXml, parseCheckpointXml, parseSnapshotXml } from "../../provider/host/xml";

const URN = `urn:pulumi:dev::proj::pulumi-nodejs:dynamic/libvirt-snapshots:DomainSnapshot::a"<&>'b`;

/** A domain copy as libvirt writes it into a snapshot or checkpoint: the mark set with key `prefix`. */
function domainWith(markXml: string, prefix: string): string {
    const el = markXml.replace("<maker", `<${prefix}:maker xmlns:${prefix}="${MAKER_NS}"`);
    return `<domain type="qemu"><name>d</name><uuid>u</uuid><metadata><other:x xmlns:other="urn:else"/>${el}</metadata></domain>`;
}

describe("the maker's mark", () => {
    it("round-trips a URN with XML's special characters through a snapshot's copy of the domain", () => {
        const xml = `<domainsnapshot><name>s</name><state>shutoff</state><creationTime>1</creationTime>${domainWith(
            makerMarkXml({ resource: URN, name: "before" }),
            "plvs",
        )}</domainsnapshot>`;
        assert.deepEqual(parseSnapshotXml(xml).domain?.makerMark, { resource: URN, name: "before" });
    });

    it("is found under any prefix in a checkpoint's copy, and only in its own namespace", () => {
        const mark = makerMarkXml({ resource: URN, name: "c" });
        const xml = `<domaincheckpoint><name>c</name><creationTime>1</creationTime>${domainWith(mark, "zz")}</domaincheckpoint>`;
        assert.deepEqual(parseCheckpointXml(xml).domain?.makerMark, { resource: URN, name: "c" });
        const foreign = xml.replace(MAKER_NS, "urn:someone-else");
        assert.equal(parseCheckpointXml(foreign).domain?.makerMark, undefined);
    });

    it("says a snapshot is this resource's own only for the same URN and the same name", () => {
        const mine = { resource: URN, name: "before" };
        assert.equal(madeBy(mine, { ...mine }), true);
        assert.equal(madeBy(mine, { ...mine, name: "other" }), false);
        assert.equal(madeBy(mine, { ...mine, resource: `${URN}2` }), false);
        assert.equal(madeBy(undefined, mine), false);
        assert.equal(madeBy(mine, undefined), false);
    });

    it("comes from the recorded URN, which is never a declared input", () => {
        const news = { domain: "d", [MAKER]: URN, __provider: "shim" };
        assert.deepEqual(makerMark(news, "before"), { resource: URN, name: "before" });
        assert.equal(makerMark({ domain: "d" }, "before"), undefined);
        assert.deepEqual(userInputs(news), { domain: "d" });
    });
});
