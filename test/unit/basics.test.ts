// Unit tests: pure functions that need no host. The lab tests prove the rest.
import * as assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, createHmac, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { classifyStderr, redact } from "../../provider/errors";
import { fingerprint, verifyHostKey } from "../../provider/host/hostkeys";
import { connectionFromConfig, ConnectionSchema } from "../../provider/connection";
import { commandLine, shellQuote } from "../../provider/host/transport";
import { buildSnapshotXml, parseSnapshotXml, withDescription } from "../../provider/host/xml";
import { parseVersion } from "../../provider/host/virsh";
import { findLeaks } from "../support/secrets-hook";

describe("shellQuote", () => {
    const hostile = [
        "plain",
        "with space",
        "it's",
        `"dq"`,
        "$(touch /tmp/x)",
        "`id`",
        "a;b",
        "a|b",
        "a&b",
        ">f",
        "<f",
        "new\nline",
        "\\back\\slash",
        "--opt",
        "-",
        "",
        "'",
        "''",
        "unicode ✓ \u202e rtl",
        "*",
        "~root",
        "#hash",
        "!bang",
    ];
    it("round-trips every argument through a real POSIX shell", () => {
        const line = commandLine(["printf", "%s\\0", ...hostile]);
        const out = execFileSync("/bin/sh", ["-c", line]).toString("utf8");
        assert.deepEqual(out.split("\0").slice(0, -1), hostile);
    });
    it("refuses NUL, which no command line can carry", () => {
        assert.throws(() => shellQuote("a\u0000b"), /NUL/);
    });
});

describe("errors", () => {
    it("classifies libvirt 9.0's messages", () => {
        assert.equal(classifyStderr("error: operation failed: domain moment s1 already exists"), "already-exists");
        assert.equal(classifyStderr("error: failed to get domain 'x'"), "domain-not-found");
        // What virsh (its shell too) prints on its own when libvirtd goes away under it.
        assert.equal(classifyStderr("error: Disconnected from qemu:///system due to end of file"), "connection-failed");
        // Measured with a virsh shell whose connection was cut mid-call: the lookup it was doing fails too. Unknown, not gone.
        assert.equal(
            classifyStderr("error: Disconnected from qemu:///system due to end of file\nerror: failed to get domain 'd'"),
            "connection-failed",
        );
        assert.equal(classifyStderr("error: Domain snapshot not found: no domain snapshot with matching name 'x'"), "snapshot-not-found");
        assert.equal(
            classifyStderr("error: Domain checkpoint not found: no domain checkpoint with matching name 'c'"),
            "checkpoint-not-found",
        );
        assert.equal(
            classifyStderr(
                "error: Timed out during operation: cannot acquire state change lock (held by monitor=remoteDispatchDomainSnapshotCreateXML)",
            ),
            "domain-busy",
        );
        assert.equal(
            classifyStderr("error: Operation not supported: cannot delete external snapshots when there is another active block job"),
            "domain-busy",
        );
        assert.equal(
            classifyStderr("error: Operation not supported: internal snapshot for disk vda unsupported for storage type raw"),
            "unsupported",
        );
        assert.equal(classifyStderr("error: failed to connect to the hypervisor"), "connection-failed");
        assert.equal(classifyStderr("error: something else"), "failed");
    });
    it("redacts a secret and each line of a multi-line key", () => {
        const key = "-----BEGIN KEY-----\nAAAAB3NzaC1yc2EAAAADAQABAAABAQ\nCCCCCCCCCCCCCCCCCC\n-----END KEY-----";
        const text = `failed with hunter22 and ${key} and a line alone: CCCCCCCCCCCCCCCCCC`;
        const out = redact(text, ["hunter22", key]);
        assert.ok(!out.includes("hunter22"));
        assert.ok(!out.includes("CCCCCCCCCCCCCCCCCC"));
        assert.ok(!out.includes("AAAAB3NzaC1yc2EAAAADAQABAAABAQ"));
    });
});

describe("host key trust", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "hk-"));
    const keyFile = path.join(dir, "k");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", keyFile]);
    const line = fs.readFileSync(keyFile + ".pub", "utf8").trim();
    const blob = Buffer.from(line.split(" ")[1]!, "base64");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", keyFile + "2"]);
    const other = Buffer.from(fs.readFileSync(keyFile + "2.pub", "utf8").split(" ")[1]!, "base64");

    it("accepts a pinned key line or fingerprint, refuses another key and shows its fingerprint", () => {
        assert.deepEqual(verifyHostKey({ host: "h", port: 22, hostKey: line }, blob), { ok: true });
        assert.deepEqual(verifyHostKey({ host: "h", port: 22, hostKey: fingerprint(blob) }, blob), { ok: true });
        const v = verifyHostKey({ host: "h", port: 22, hostKey: line }, other);
        assert.equal(v.ok, false);
        assert.ok(!v.ok && v.message.includes(fingerprint(other)), "the presented fingerprint is shown");
        assert.ok(!v.ok && /update connection\.hostKey/.test(v.message));
    });
    it("matches known_hosts by [host]:port, hashed names and globs; unknown and changed keys fail closed", () => {
        const kh = path.join(dir, "known_hosts");
        const salt = randomBytes(20);
        const hashed = `|1|${salt.toString("base64")}|${createHmac("sha1", salt).update("[hashed.example]:2200").digest("base64")}`;
        fs.writeFileSync(
            kh,
            [`[plain.example]:2200 ${line}`, `${hashed} ${line}`, `*.glob.example ${line}`, `changed.example ${line}`].join("\n"),
        );
        const t = (host: string, port: number, key = blob) => verifyHostKey({ host, port, knownHostsPath: kh }, key);
        assert.equal(t("plain.example", 2200).ok, true);
        assert.equal(t("hashed.example", 2200).ok, true);
        assert.equal(t("a.glob.example", 22).ok, true);
        const unknown = t("plain.example", 22);
        assert.ok(!unknown.ok && unknown.reason === "unknown" && /is not in .*known_hosts/.test(unknown.message));
        const changed = t("changed.example", 22, other);
        assert.ok(!changed.ok && changed.reason === "mismatch" && /host key has changed/.test(changed.message));
        assert.equal(verifyHostKey({ host: "nowhere", port: 22, knownHostsPath: kh, insecureIgnoreHostKey: true }, other).ok, true);
    });
    it("computes OpenSSH's SHA256 fingerprint", () => {
        const expected = execFileSync("ssh-keygen", ["-lf", keyFile + ".pub"])
            .toString()
            .split(" ")[1];
        assert.equal(fingerprint(blob), expected);
        assert.equal(fingerprint(blob), "SHA256:" + createHash("sha256").update(blob).digest("base64").replace(/=+$/, ""));
    });
});

describe("connection input and stack config", () => {
    it("validates fields with messages that name them", () => {
        const r = ConnectionSchema.safeParse({ host: "-oProxyCommand=x", port: 70000, user: "a b", hostKey: "nonsense", extra: 1 });
        assert.equal(r.success, false);
        const msgs = r.error!.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("\n");
        assert.match(msgs, /host: must not start with '-'/);
        assert.match(msgs, /port: must be between 1 and 65535/);
        assert.match(msgs, /user: must be a POSIX user name/);
        assert.match(msgs, /hostKey: must be the server's public key line/);
        assert.match(r.error!.issues.map((i) => i.message).join(), /Unrecognized key/);
    });
    it("refuses unpaired surrogates, which have no UTF-8 form, in the host, the URI, paths and secrets", () => {
        for (const field of ["host", "libvirtUri", "knownHostsPath", "password"] as const) {
            const value = field === "libvirtUri" ? "qemu:///sys\udc00tem" : field === "knownHostsPath" ? "/tmp/k\ud800" : "kvm\ud83d1";
            const r = ConnectionSchema.safeParse({ host: "kvm1", [field]: value });
            assert.equal(r.success, false, field);
            assert.deepEqual(
                r.error!.issues.map((i) => `${i.path.join(".")}: ${i.message}`),
                [
                    `${field}: must be valid Unicode: it holds an unpaired surrogate (U+D800 to U+DFFF), which has no UTF-8 form, so it would reach the host as U+FFFD`,
                ],
            );
        }
        assert.equal(
            ConnectionSchema.safeParse({ host: "kvm1", libvirtUri: "qemu+ssh://h\u00f6st/system", password: "p\ud83d\ude00" }).success,
            true,
        );
    });
    it("reads the default connection from stack config, converting strings", () => {
        const cfg: Record<string, string> = {
            "libvirt-snapshots:host": "kvm1",
            "libvirt-snapshots:port": "2222",
            "libvirt-snapshots:sudo": "true",
            "libvirt-snapshots:proxy": `{"host":"jump"}`,
        };
        const r = connectionFromConfig((k) => cfg[k]);
        assert.deepEqual(r.errors, []);
        assert.deepEqual(r.connection, { host: "kvm1", port: 2222, sudo: true, proxy: { host: "jump" } });
        const bad = connectionFromConfig((k) => (({ "libvirt-snapshots:port": "many" }) as Record<string, string>)[k]);
        assert.match(bad.errors.join(), /libvirt-snapshots:port/);
    });
});

describe("libvirt XML", () => {
    it("escapes every name and description, so nothing is injected", () => {
        const xml = buildSnapshotXml({
            name: "a</name><memory snapshot='external' file='/etc/passwd'/><name>",
            description: "]]> <!-- & -->",
            memory: { snapshot: "no" },
            disks: [],
        });
        const back = parseSnapshotXml(xml);
        assert.equal(back.name, "a</name><memory snapshot='external' file='/etc/passwd'/><name>");
        assert.equal(back.description, "]]> <!-- & -->");
        assert.equal(back.memory.snapshot, "no");
        assert.equal(back.memory.file, undefined);
    });
    it("parses a snapshot of a domain with exactly one channel (the usual guest agent)", () => {
        const xml =
            `<domainsnapshot><name>s</name><state>running</state><creationTime>1764100000</creationTime><memory snapshot='internal'/>` +
            `<disks><disk name='vda' snapshot='internal'/></disks><domain type='kvm'><name>d</name><uuid>11111111-2222-3333-4444-555555555555</uuid>` +
            `<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/v/d.qcow2'/><target dev='vda'/></disk>` +
            `<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0' state='connected'/></channel></devices></domain></domainsnapshot>`;
        const p = parseSnapshotXml(xml);
        assert.equal(p.name, "s");
        assert.deepEqual(
            p.disks.map((d) => [d.name, d.snapshot]),
            [["vda", "internal"]],
        );
    });
    it("replaces only the top-level description, leaving the domain's own alone", () => {
        const xml = `<domainsnapshot>\n  <name>s</name>\n  <description>old</description>\n  <state>running</state>\n  <domain type='kvm'>\n    <name>d</name>\n    <description>domain's own</description>\n  </domain>\n</domainsnapshot>\n`;
        const out = withDescription(xml, "domainsnapshot", "new <&> text");
        const p = parseSnapshotXml(out);
        assert.equal(p.description, "new <&> text");
        assert.match(out, /<description>domain(&apos;|')s own<\/description>/);
        assert.match(out, /<domain type="kvm">/);
        const added = parseSnapshotXml(
            withDescription(`<domainsnapshot><name>s</name><state>x</state></domainsnapshot>`, "domainsnapshot", "added"),
        );
        assert.equal(added.description, "added");
    });
    it("parses virsh version output", () => {
        const v = parseVersion(
            "Compiled against library: libvirt 9.0.0\nUsing library: libvirt 9.0.0\nUsing API: QEMU 9.0.0\nRunning hypervisor: QEMU 7.2.0\nRunning against daemon: 9.0.0\n",
        );
        assert.deepEqual(v, { libvirt: "9.0.0", number: 9_000_000, hypervisor: "QEMU 7.2.0" });
    });
});

describe("secrets check (the root hook that searches every provider reply)", () => {
    it("finds a planted secret and passes clean text", () => {
        const secrets: Array<[string, string]> = [
            ["the key", "AAAAC3NzaC1lZDI1NTE5AAAAIPlanted"],
            ["the password", "hunter2-planted"],
            ["empty", ""],
        ];
        assert.deepEqual(findLeaks("nothing to see", secrets), []);
        assert.deepEqual(findLeaks("error: ... hunter2-planted ...", secrets), ["the password"]);
        assert.deepEqual(findLeaks("AAAAC3NzaC1lZDI1NTE5AAAAIPlanted and hunter2-planted", secrets), ["the key", "the password"]);
    });
});
